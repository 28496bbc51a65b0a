//! dfdwatch's daemon and CLI as a library: the stages of the pipeline and the probes' loader,
//! used by the `dfdwatch` binary and by tests and benchmarks.

pub mod alertmanager;
pub mod alerts;
pub mod cgroupfs;
pub mod clock;
pub mod counters;
pub mod decode;
pub mod escape;
pub mod event;
pub mod heap;
pub mod http;
pub mod identity;
pub mod kernel_stats;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod reader;
pub mod rotate;
pub mod run;
pub mod sink;
