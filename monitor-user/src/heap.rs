//! Handing freed heap back to the kernel after the daemon's two big one-off allocations: loading
//! the DFD (YAML text, the parse with positions, lint findings) and the Kubernetes watch's first
//! list. glibc keeps freed memory in its arenas; after a 10,000-node DFD that was a third of the
//! daemon's resident size (BENCHMARKS.md, "Memory").

/// Releases free heap memory to the kernel (glibc's `malloc_trim`; a no-op elsewhere).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
