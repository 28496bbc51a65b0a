//! Measurement, not a gate (ignored by default): heap per indexed pod and the cost of a lookup,
//! with 10 000 pods listed through the real kube client. Run with
//! `cargo test -p dfdwatch-kube --test cost -- --ignored --nocapture` (add `--release` for real
//! timings).

use dfdwatch_kube_standin as support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use support::{Harness, Kind, pod};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PODS: u32 = 10_000;

fn pod_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
async fn heap_per_pod_and_lookup_cost() {
    let empty = Harness::start(|_| {}).await;
    let base = LIVE.load(Ordering::Relaxed);
    empty.shutdown().await;
    let base_after = LIVE.load(Ordering::Relaxed);

    let before = LIVE.load(Ordering::Relaxed);
    let h = Harness::start(|api| {
        for i in 0..PODS {
            let node = if i % 50 == 0 { "node-a" } else { "node-b" };
            api.apply(
                Kind::Pods,
                pod(
                    "shop",
                    &format!("p{i}"),
                    &format!("uid-{i}"),
                    node,
                    Some(&pod_ip(i).to_string()),
                    "Running",
                    "2026-11-23T10:00:00Z",
                ),
            );
        }
    })
    .await;
    let seeded_server_and_index = LIVE.load(Ordering::Relaxed) - before;
    // The stand-in server keeps its own JSON copy; measure it by itself and subtract.
    let server_only = {
        let mark = LIVE.load(Ordering::Relaxed);
        let api = support::FakeApiServer::start().await;
        for i in 0..PODS {
            api.apply(
                Kind::Pods,
                pod(
                    "shop",
                    &format!("p{i}"),
                    &format!("uid-{i}"),
                    "node-b",
                    Some(&pod_ip(i).to_string()),
                    "Running",
                    "2026-11-23T10:00:00Z",
                ),
            );
        }
        let used = LIVE.load(Ordering::Relaxed) - mark;
        drop(api);
        used
    };
    let index_bytes = seeded_server_and_index - server_only;
    println!(
        "baseline (client, empty service) ~{} B; index for {PODS} pods ~{} B = ~{} B per pod",
        base - base_after.min(base),
        index_bytes,
        index_bytes / PODS as isize
    );

    let id = &h.identity;
    assert!(id.pod_by_ip(pod_ip(1)).is_some());
    let n = 1_000_000u32;
    let t = Instant::now();
    let mut hits = 0u32;
    for i in 0..n {
        if id.pod_by_ip(pod_ip(i % (PODS * 2))).is_some() {
            hits += 1;
        }
    }
    let per = t.elapsed().as_nanos() / u128::from(n);
    assert_eq!(hits, n / 2);
    let t = Instant::now();
    for i in 0..n {
        let _ = id.pod_by_uid(&format!("uid-{}", i % PODS));
    }
    let per_uid = t.elapsed().as_nanos() / u128::from(n);
    println!("pod_by_ip: {per} ns per lookup (half hits); pod_by_uid: {per_uid} ns incl. formatting the key");
    h.shutdown().await;
}
