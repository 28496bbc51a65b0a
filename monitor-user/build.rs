//! Builds the eBPF programs (monitor-ebpf) for bpfel-unknown-none with the pinned nightly, so
//! `cargo build` of the daemon always embeds probes that match its sources.

use std::path::Path;

/// The nightly the eBPF crate builds with; keep in step with xtask/src/toolchain.rs.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest_dir).join("..");
    let ebpf_dir = root.join("monitor-ebpf");
    let common_dir = root.join("monitor-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "monitor-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
