//! The approved data-flow diagram (DFD): its format, strict parsing, lints, rendering and the
//! compiled matcher that resolves a runtime endpoint to its DFD node.
