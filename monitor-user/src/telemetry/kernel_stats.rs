//! Reads the probes' per-CPU loss and anomaly counters, and the kernel's own count of probe runs
//! it skipped (`skipped_recursion`, see [`crate::probes::prog_info`]); logs every increase of a
//! loss counter with its count, and reports totals at shutdown. Totals are kept in user space: a
//! counter that goes backwards was written from outside (`bpftool map update` zeroing the losses)
//! and is reported as tampering, and what it had counted is kept.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use monitor_common::Stat;

use crate::probes::prog_info::ProgInfo;
use crate::telemetry::counters::Tampering;

/// Name of the kernel's count of state changes the probe never ran for. Most are transitions the
/// probe would have ignored (closes, FIN states); some may be connects or accepts, so it is an
/// upper bound on events lost that way, not a count of them.
pub const SKIPPED_RECURSION: &str = "skipped_recursion";

/// Sums the per-CPU counters the probes keep.
pub struct KernelStats {
    map: PerCpuArray<MapData, u64>,
    prog: ProgInfo,
    last: [u64; Stat::ALL.len()],
    /// What each counter had counted before it was found reset.
    before_reset: [u64; Stat::ALL.len()],
    last_recursion: u64,
}

impl KernelStats {
    /// Wraps the probes' stats map and the attached program.
    pub fn new(map: PerCpuArray<MapData, u64>, prog: ProgInfo) -> Self {
        Self { map, prog, last: [0; Stat::ALL.len()], before_reset: [0; Stat::ALL.len()], last_recursion: 0 }
    }

    fn recursion_misses(&self) -> u64 {
        self.prog.recursion_misses().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the probe's recursion_misses failed");
            self.last_recursion
        })
    }

    /// Current totals by counter name, including what counters found reset had counted.
    pub fn totals(&self) -> BTreeMap<&'static str, u64> {
        let mut totals = self.kernel_values();
        for (i, s) in Stat::ALL.iter().enumerate() {
            if let Some(v) = totals.get_mut(s.name()) {
                *v += self.before_reset[i];
            }
        }
        totals
    }

    /// The counters as the kernel holds them now.
    fn kernel_values(&self) -> BTreeMap<&'static str, u64> {
        let mut totals: BTreeMap<&'static str, u64> = Stat::ALL
            .iter()
            .map(|&s| {
                let total = match self.map.get(&(s as u32), 0) {
                    Ok(per_cpu) => per_cpu.iter().sum(),
                    Err(e) => {
                        tracing::warn!(counter = s.name(), error = %e, "reading a kernel counter failed");
                        0
                    }
                };
                (s.name(), total)
            })
            .collect();
        totals.insert(SKIPPED_RECURSION, self.recursion_misses());
        totals
    }

    /// Logs the counters that grew since the last call (losses as warnings, the rest at debug)
    /// and adds the growth to the metrics.
    pub fn report_increases(&mut self, metrics: &crate::telemetry::metrics::Metrics) {
        let totals = self.kernel_values();
        for (i, s) in Stat::ALL.iter().enumerate() {
            let now = totals.get(s.name()).copied().unwrap_or(0);
            if now < self.last[i] {
                // Only the daemon reads these counters and nothing in the kernel lowers them.
                metrics.record_tampering(Tampering::KernelCounterReset);
                tracing::error!(
                    counter = s.name(),
                    was = self.last[i],
                    now,
                    "a kernel counter went backwards: the probes' stats map was written from outside (tampering); its count is kept"
                );
                self.before_reset[i] += self.last[i];
                self.last[i] = 0;
            }
            let delta = now - self.last[i];
            if delta == 0 {
                continue;
            }
            self.last[i] = now;
            metrics.add_kernel(s.name(), delta);
            match s {
                Stat::LostConnect | Stat::LostConnectFailed | Stat::LostAccept => tracing::warn!(
                    counter = s.name(),
                    lost = delta,
                    total = now,
                    "events lost in the kernel: ring buffer full (raise --ring-buffer-mib)"
                ),
                Stat::ConnectingMapFull | Stat::ListenerMapFull | Stat::ReadFailed => {
                    tracing::warn!(counter = s.name(), delta, total = now, "kernel-side anomaly")
                }
                _ => tracing::debug!(counter = s.name(), delta, total = now, "kernel counter"),
            }
        }
        let now = totals.get(SKIPPED_RECURSION).copied().unwrap_or(0);
        let delta = now.saturating_sub(self.last_recursion);
        if delta > 0 {
            self.last_recursion = now;
            metrics.add_kernel(SKIPPED_RECURSION, delta);
            tracing::warn!(
                counter = SKIPPED_RECURSION,
                lost = delta,
                total = now,
                "the kernel skipped the probe for state changes while it was already running on that CPU (a softirq interrupting it); some may have been connects or accepts"
            );
        }
    }
}
