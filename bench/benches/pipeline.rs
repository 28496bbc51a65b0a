//! Pipeline throughput on synthetic kernel records, for approved DFDs of 10, 1,000 and 10,000
//! nodes: (a) the whole per-event path (decode, identity, verdict with the same-node pairing,
//! the JSON event line), (b) the verdict alone (placement of both ends and the judgement), over
//! flows spread across the whole DFD, and (c) the verdict over flows among 16 source nodes.
//! Half the flows are approved, half on a wrong port. One thread, as in the daemon's stages.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up: a panic is a failed run")]

use std::io::Write;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dfdwatch::clock::WallClock;
use dfdwatch::counters::Counters;
use dfdwatch::decode::decode;
use dfdwatch::event::ConnectionRecord;
use dfdwatch::identity::{Resolver, StaticNames};
use dfdwatch::policy::Policy;
use dfdwatch::policy::stage::{Pairs, judge};
use dfdwatch_bench::synth;

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
        let policy = Arc::new(Policy::load(&[path]).unwrap());
        let counters = Arc::new(Counters::default());
        let mut resolver = Resolver::new(None, Arc::new(StaticNames::default()), counters.clone());
        let recs = records(nodes, usize::MAX);
        let clock = WallClock::new();
        let mut pairs = Pairs::default();
        let mut sink = std::io::sink();
        group.bench_with_input(BenchmarkId::new("decode+identity+verdict+json", nodes), &recs, |b, recs| {
            b.iter(|| {
                for r in recs {
                    let conn = decode(r).unwrap();
                    let mut e = resolver.enrich(conn);
                    judge(&policy, &mut e);
                    e.other_end_seen = pairs.other_end_seen(&e, &counters);
                    serde_json::to_writer(&mut sink, &ConnectionRecord::new(&e, &clock, "bench")).unwrap();
                    sink.write_all(b"\n").unwrap();
                }
            })
        });
        let enriched: Vec<_> = recs.iter().map(|r| resolver.enrich(decode(r).unwrap())).collect();
        group.bench_with_input(BenchmarkId::new("verdict", nodes), &enriched, |b, enriched| {
            b.iter_batched_ref(
                || enriched.clone(),
                |batch| {
                    for e in batch.iter_mut() {
                        judge(&policy, e);
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
        // The same, with the flows among 16 source nodes only: what a node sees in practice (a
        // working set that stays in the CPU caches whatever the DFD's size).
        let hot: Vec<_> = records(nodes, 16).iter().map(|r| resolver.enrich(decode(r).unwrap())).collect();
        group.bench_with_input(BenchmarkId::new("verdict-16-sources", nodes), &hot, |b, hot| {
            b.iter_batched_ref(
                || hot.clone(),
                |batch| {
                    for e in batch.iter_mut() {
                        judge(&policy, e);
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
        // Every flow was judged as intended: half approved, half on the wrong port.
        let mut check = enriched.clone();
        let approved = check
            .iter_mut()
            .map(|e| {
                judge(&policy, e);
                e.verdict.as_ref().map(|v| v.kind.as_str())
            })
            .filter(|k| *k == Some("approved"))
            .count();
        assert_eq!(approved, BATCH / 2, "synthetic flows judged as designed at {nodes} nodes");
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
