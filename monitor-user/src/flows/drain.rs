//! Reads the kernel's flow counters every interval, on its own thread: it switches the counting
//! epoch, waits until no probe can still be counting into the old one (an RCU grace period: the
//! probes run inside RCU read-side sections, and `membarrier(MEMBARRIER_CMD_GLOBAL)` returns only
//! after one), then reads and deletes the old epoch's counters, which nobody writes any more. So
//! every connection the probes counted is read exactly once. On shutdown, after the probes were
//! detached, it reads whatever is left of every epoch.

use std::sync::Arc;
use std::time::Duration;

use aya::maps::{HashMap, MapData, MapError};
use monitor_common::flow::{CountsKey, FlowCounts};
use tokio::sync::mpsc;

use super::kernel::KernelFlows;
use super::{FlowInput, Tally};
use crate::shutdown::ShutdownSignal;

/// `membarrier(2)` command that waits for an RCU grace period on every CPU.
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
/// How long to wait instead when membarrier is refused (nohz_full kernels): far longer than a
/// probe runs (microseconds, not preemptible).
const GRACE_FALLBACK: Duration = Duration::from_millis(20);

/// The counters reader.
pub struct CountsDrain {
    counts: HashMap<MapData, CountsKey, FlowCounts>,
    kernel: Arc<KernelFlows>,
    out: mpsc::Sender<FlowInput>,
    interval: Duration,
}

impl CountsDrain {
    /// A reader of `counts`, sending each interval's tally to `out`.
    pub fn new(
        counts: HashMap<MapData, CountsKey, FlowCounts>,
        kernel: Arc<KernelFlows>,
        out: mpsc::Sender<FlowInput>,
        interval: Duration,
    ) -> Self {
        Self { counts, kernel, out, interval }
    }

    /// Runs until `stop` fires (after the probes were detached), then reads what is left.
    pub fn run(mut self, stop: ShutdownSignal) {
        loop {
            let stopped = stop.wait_blocking(self.interval);
            let ended = if stopped {
                // The links are gone, but a probe that started before may still be adding.
                wait_for_grace_period();
                None
            } else {
                match self.kernel.next_epoch() {
                    Ok(epoch) => {
                        wait_for_grace_period();
                        Some(epoch)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot switch the flow counting epoch; counters read at shutdown");
                        continue;
                    }
                }
            };
            let tally = self.read(ended);
            if self.out.blocking_send(FlowInput::Tally(tally)).is_err() || stopped {
                return;
            }
        }
    }

    /// Reads and deletes the counters of `epoch`, or of every epoch when `None`.
    fn read(&mut self, epoch: Option<u32>) -> Tally {
        let keys: Vec<CountsKey> = self
            .counts
            .keys()
            .filter_map(|k| match k {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the flow counters");
                    None
                }
            })
            .filter(|k| epoch.is_none_or(|e| k.epoch == e))
            .collect();
        let mut tally =
            Tally { counts: Vec::with_capacity(keys.len()), epoch: epoch.unwrap_or(0), final_read: epoch.is_none() };
        for key in keys {
            match self.counts.get(&key, 0) {
                Ok(c) => tally.counts.push((key.id, c)),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => tracing::error!(error = %e, id = key.id, "cannot read flow counters"),
            }
            if let Err(e) = self.counts.remove(&key)
                && !matches!(e, MapError::KeyNotFound)
            {
                tracing::error!(error = %e, id = key.id, "cannot clear flow counters");
            }
        }
        tally
    }
}

/// Returns once every probe that may have read the old epoch has finished.
fn wait_for_grace_period() {
    // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) };
    if rc != 0 {
        std::thread::sleep(GRACE_FALLBACK);
    }
}
