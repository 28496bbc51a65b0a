//! The daemon's own telemetry, beside the pipeline: pipeline [`counters`], kernel loss counters
//! ([`kernel_stats`]), Prometheus [`metrics`], the heartbeat that proves the probes still see
//! connections ([`liveness`]), and the [`http`] endpoint that serves them with /healthz and
//! /readyz.

pub mod collector;
pub mod counters;
pub mod http;
pub mod kernel_stats;
pub mod last_seen;
pub mod liveness;
pub mod metrics;
pub mod web_config;
