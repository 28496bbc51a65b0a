//! Pipeline throughput on synthetic kernel records, for approved DFDs of 10, 1,000 and 10,000
//! nodes: (a) the whole per-event path (decode, identity, verdict with the same-node pairing,
//! the JSON event line), (b) the verdict alone (placement of both ends and the judgement), over
//! flows spread across the whole DFD, and (c) the verdict over flows among 16 source nodes.
//! Half the flows are approved, half on a wrong port. One thread, as in the daemon's stages.

#![expect(clippy::unwrap_used, reason = "benchmark set-up: a panic is a failed run")]

use std::io::Write;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dfdwatch_bench::synth;
use monitor_user::clock::WallClock;
use monitor_user::identity::{Resolver, StaticNames};
use monitor_user::policy::judged::judge;
use monitor_user::policy::stage::Pairs;
use monitor_user::policy::{Judged, Policy};
use monitor_user::sinks::record::ConnectionRecord;
use monitor_user::source::decode::decode;
use monitor_user::telemetry::counters::Counters;

const BATCH: usize = 4096;

/// Records spread over up to `spread` source nodes (with their next node as destination).
fn records(nodes: usize, spread: usize) -> Vec<Vec<u8>> {
    let me = std::process::id();
    (0..BATCH)
        .map(|k| {
            let mut from = (k * 7919) % nodes.saturating_sub(1).max(1).min(spread);
            if !synth::approved_from(from) {
                from -= 1;
            }
            let port = if k % 2 == 0 { 8080 } else { 9090 };
            synth::record(from, from + 1, port, me, k as u64)
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("dfdwatch-bench-{}", std::process::id()));
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    for nodes in [10usize, 1_000, 10_000] {
        let path = synth::write_dfd(&dir, nodes).unwrap();
        let policy = Arc::new(Policy::load(&[path], None).unwrap());
        let counters = Arc::new(Counters::default());
        let mut resolver = Resolver::new(None, Arc::new(StaticNames::default()), counters.clone());
        let recs = records(nodes, usize::MAX);
        let clock = WallClock::new();
        let mut pairs = Pairs::default();
        let mut sink = std::io::sink();
        group.bench_with_input(BenchmarkId::new("decode+identity+verdict+json", nodes), &recs, |b, recs| {
            b.iter(|| {
                for r in recs {
                    let flow = resolver.identify(decode(r).unwrap());
                    let mut judgement = judge(&policy, &flow);
                    judgement.other_end_seen = pairs.pair(&flow, &judgement.dst, &counters).is_some();
                    let j = Judged { flow, judgement };
                    let record = ConnectionRecord::new(&j.flow, Some(&j.judgement), &clock, "bench");
                    serde_json::to_writer(&mut sink, &record).unwrap();
                    sink.write_all(b"\n").unwrap();
                }
            })
        });
        let identified: Vec<_> = recs.iter().map(|r| resolver.identify(decode(r).unwrap())).collect();
        // The judgements are collected into a vector made, and dropped, outside the timing.
        let judge_all = |b: &mut criterion::Bencher<'_>, flows: &Vec<_>| {
            b.iter_batched_ref(
                || Vec::with_capacity(flows.len()),
                |out| out.extend(flows.iter().map(|flow| judge(&policy, flow))),
                criterion::BatchSize::LargeInput,
            )
        };
        group.bench_with_input(BenchmarkId::new("verdict", nodes), &identified, judge_all);
        // The same, with the flows among 16 source nodes only: what a node sees in practice (a
        // working set that stays in the CPU caches whatever the DFD's size).
        let hot: Vec<_> = records(nodes, 16).iter().map(|r| resolver.identify(decode(r).unwrap())).collect();
        group.bench_with_input(BenchmarkId::new("verdict-16-sources", nodes), &hot, judge_all);
        // Every flow was judged as intended: half approved, half on the wrong port.
        let approved =
            identified.iter().filter(|flow| judge(&policy, flow).verdict.kind.as_str() == "approved").count();
        assert_eq!(approved, BATCH / 2, "synthetic flows judged as designed at {nodes} nodes");
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
