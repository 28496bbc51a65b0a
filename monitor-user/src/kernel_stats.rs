//! Reads the probes' per-CPU loss and anomaly counters, logs every increase of a loss counter
//! with its count, and reports totals at shutdown.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray};
use monitor_common::Stat;

/// Sums the per-CPU counters the probes keep.
pub struct KernelStats {
    map: PerCpuArray<MapData, u64>,
    last: [u64; Stat::ALL.len()],
}

impl KernelStats {
    /// Wraps the probes' stats map.
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map, last: [0; Stat::ALL.len()] }
    }

    /// Current totals by counter name.
    pub fn totals(&self) -> BTreeMap<&'static str, u64> {
        Stat::ALL
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
            .collect()
    }

    /// Logs the counters that grew since the last call (losses as warnings, the rest at debug)
    /// and adds the growth to the metrics.
    pub fn report_increases(&mut self, metrics: &crate::metrics::Metrics) {
        let totals = self.totals();
        for (i, s) in Stat::ALL.iter().enumerate() {
            let now = totals.get(s.name()).copied().unwrap_or(0);
            let delta = now.saturating_sub(self.last[i]);
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
    }
}
