//! The approved data-flow diagram (DFD): its format, strict parsing, lints, rendering and the
//! compiled matcher that resolves a runtime endpoint to its DFD node.

#![warn(missing_docs)]

pub mod cli;
pub mod compile;
pub mod date;
pub mod decode;
pub mod diag;
pub mod diff;
pub mod escape;
pub mod lint;
pub mod load;
pub mod model;
pub mod render;
pub mod report;
pub mod rules;
pub mod selector;
pub mod sign;
pub mod yaml;
