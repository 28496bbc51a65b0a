//! dfdwatch's daemon and CLI as a library, used by the `dfdwatch` binary and by tests and
//! benchmarks. The pipeline's stages each have a folder, and imports run one way, in the order a
//! connection travels: [`source`] (ring buffer, decode) -> [`identity`] -> [`policy`] (placement
//! and verdict) -> [`flows`] (the flow table, kernel verdicts and counters) -> [`sinks`] (events,
//! alerts, Alertmanager, metrics). [`telemetry`] (counters,
//! metrics, health) sits beside them; [`probes`] loads the eBPF programs; [`daemon`] wires it all.

pub mod cgroupfs;
pub mod clock;
pub mod daemon;
pub mod drift;
pub use dfdwatch_dfd::escape;
pub mod flows;
pub mod heap;
pub mod identity;
pub mod investigate;
pub mod learn;
pub mod policy;
pub mod probes;
pub mod procnet;
pub mod shutdown;
pub mod sinks;
pub mod source;
pub mod store;
pub mod telemetry;
