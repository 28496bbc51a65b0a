//! Real-kernel test harness for dfdwatch: a lab of "pods" (network namespaces on a bridge, each
//! with its own cgroup), real servers started inside them, and the real daemon watching it all.
//! Used by the integration tests in `tests/tests/` and by `cargo xtask demo`.
//!
//! Everything a lab creates is removed when it is dropped, also when a test fails, and only the
//! processes it started are ended, by pid.

pub mod chart;
pub mod clickhouse;
pub mod daemon;
pub mod lab;
pub mod servers;
pub mod sys;

pub use daemon::{Daemon, DaemonOptions};
pub use lab::{Lab, Pod};
