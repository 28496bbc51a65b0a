//! The source stage: records from the kernel's ring buffer ([`reader`]), decoded defensively
//! into [`decode::Connection`]s, and at start-up the connections established before the probes
//! were attached ([`snapshot`]).

pub mod decode;
pub mod reader;
pub mod snapshot;
