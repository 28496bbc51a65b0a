//! dfdwatch's benchmarks as a library: synthetic DFDs and kernel records shared by the criterion
//! pipeline benchmark and the `dfdwatch-bench` runner (overhead, latency, memory).

pub mod synth;
