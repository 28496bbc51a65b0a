//! The pinned versions of everything the build needs. Keep EBPF_NIGHTLY in step with
//! monitor-user/build.rs and STABLE with rust-toolchain.toml.

/// The stable toolchain for user space (rust-toolchain.toml).
pub const STABLE: &str = "1.98.0";
/// The nightly that builds the eBPF crate (`-Z build-std=core` needs its rust-src). Its LLVM
/// (22) must match the LLVM bpf-linker is built against: a nightly on LLVM 23 produces bitcode
/// that bpf-linker on LLVM 22 rejects with "Invalid record".
pub const EBPF_NIGHTLY: &str = "nightly-2026-07-01";
/// bpf-linker, built against Debian's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz, for the libFuzzer targets in fuzz/.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Where Debian's LLVM 22 lives.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages: LLVM for bpf-linker, then what the tests and the demo run.
pub const DEBIAN_PACKAGES: &[&str] = &[
    // bpf-linker's build
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "build-essential",
    // tests and demo: namespaces, real servers and clients
    "iproute2",
    "util-linux",
    "nginx-light",
    "redis-server",
    "redis-tools",
    "postgresql",
    "curl",
    "bpftool",
    // a Service's ClusterIP in the tests: destination NAT in a pod's namespace, as kube-proxy does
    "nftables",
    // tamper tests: close the daemon's probe link from outside, as an attacker with ptrace would
    "gdb",
    // signed DFDs: the approvers' tool, whose keys and signatures dfdwatch reads and writes
    "minisign",
    // the metrics endpoint's TLS and basic auth: a certificate and a bcrypt hash for the tests
    "openssl",
    "apache2-utils",
    // DFD rendering tests, and investigate's SVG pictures
    "graphviz",
    // the cluster flow store: a real ClickHouse (18.16) started on loopback by the tests
    "clickhouse-server",
    // metrics: promtool checks the exposition format and the alerting rules
    "prometheus",
    "prometheus-alertmanager",
    // benchmarks: the peer monitor in the overhead benchmark
    "bpftrace",
];
