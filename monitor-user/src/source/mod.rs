//! The source stage: records from the kernel's ring buffer ([`reader`]), decoded defensively
//! into [`decode::Connection`]s.

pub mod decode;
pub mod reader;
