//! The ring-buffer reader stage: woken on readiness (tokio AsyncFd) when the probes force a
//! wakeup, and by a short flush tick for records the probes left unannounced (batched wakeups).
//! Each record is decoded here, once; undecodable records are counted and logged, never fatal.
//! The daemon's own heartbeat is taken out of the stream here and marked seen
//! ([`crate::telemetry::liveness`]).
//! When the next stage is slow the reader waits instead of dropping: the kernel ring absorbs the
//! backlog and counts its own losses.

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::decode::{self, Connection};
use crate::shutdown::ShutdownSignal;
use crate::telemetry::counters::Counters;
use crate::telemetry::liveness::Liveness;

/// Records decoded per batch before they are handed on.
const BATCH: usize = 1024;

/// Reads connection events from the kernel and sends them downstream.
pub struct RingReader {
    ring: AsyncFd<RingBuf<MapData>>,
    out: mpsc::Sender<Connection>,
    flush_every: Duration,
    counters: Arc<Counters>,
    liveness: Arc<Liveness>,
}

impl RingReader {
    /// A reader over `ring` that sends to `out`.
    pub fn new(
        ring: RingBuf<MapData>,
        out: mpsc::Sender<Connection>,
        flush_every: Duration,
        counters: Arc<Counters>,
        liveness: Arc<Liveness>,
    ) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd for its whole life and always returns that fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { ring, out, flush_every, counters, liveness })
    }

    /// Sends `found_at_start` on, then runs until `stop` fires, drains what is left and returns.
    pub async fn run(mut self, found_at_start: Vec<Connection>, stop: ShutdownSignal) {
        for c in found_at_start {
            if self.out.send(c).await.is_err() {
                return;
            }
        }
        let stop = stop.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                ready = self.ring.readable_mut() => {
                    match ready {
                        Ok(mut guard) => {
                            guard.clear_ready();
                            drop(guard);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "ring buffer readiness failed; reading by tick only");
                        }
                    }
                }
                _ = tick.tick() => {}
                () = &mut stop => break,
            }
            if !self.drain(&mut batch).await {
                return;
            }
        }
        // Final drain after the probes were detached: nothing recorded is left behind.
        let _ = self.drain(&mut batch).await;
    }

    /// Reads every available record; false when downstream is gone.
    async fn drain(&mut self, batch: &mut Vec<Connection>) -> bool {
        loop {
            self.fill(batch);
            if batch.is_empty() {
                return true;
            }
            for c in batch.drain(..) {
                if self.out.send(c).await.is_err() {
                    return false;
                }
            }
        }
    }

    /// Decodes up to [`BATCH`] records into `batch`.
    fn fill(&mut self, batch: &mut Vec<Connection>) {
        let ring = self.ring.get_mut();
        while batch.len() < BATCH {
            let Some(item) = ring.next() else { break };
            self.counters.record_read();
            match decode::decode(&item) {
                Ok(c) if self.liveness.is_heartbeat(&c) => {
                    self.counters.record_heartbeat();
                    self.liveness.seen();
                }
                Ok(c) => batch.push(c),
                Err(e) => {
                    let n = self.counters.record_decode_error(decode::failure(&e));
                    if n.is_power_of_two() {
                        tracing::warn!(error = %e, total = n, "undecodable ring-buffer record dropped");
                    }
                }
            }
        }
    }
}
