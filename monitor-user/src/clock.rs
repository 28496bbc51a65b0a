//! Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now(clock: libc::clockid_t) -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of the kernel's event timestamps).
pub fn monotonic_ns() -> u64 {
    u64::try_from(now(libc::CLOCK_MONOTONIC)).unwrap_or(u64::MAX)
}

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, taken once.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: u128,
}

impl WallClock {
    /// Measures the offset now.
    pub fn new() -> Self {
        let mono = now(libc::CLOCK_MONOTONIC);
        let real = now(libc::CLOCK_REALTIME);
        WallClock { offset_ns: real.saturating_sub(mono) }
    }

    /// The wall-clock time of a monotonic timestamp.
    pub fn system_time(&self, monotonic_ns: u64) -> SystemTime {
        let ns = self.offset_ns + u128::from(monotonic_ns);
        let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
        UNIX_EPOCH + Duration::new(secs, (ns % 1_000_000_000) as u32)
    }

    /// The Unix time (ns) of a monotonic timestamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> i64 {
        i64::try_from(self.offset_ns + u128::from(monotonic_ns)).unwrap_or(i64::MAX)
    }

    /// RFC 3339 UTC with nanoseconds.
    pub fn rfc3339(&self, monotonic_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.system_time(monotonic_ns)).to_string()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_now() {
        let clock = WallClock::new();
        let mono = now(libc::CLOCK_MONOTONIC) as u64;
        let wall = clock.system_time(mono);
        let diff = SystemTime::now().duration_since(wall).unwrap_or_default();
        assert!(diff < Duration::from_secs(1), "{diff:?}");
        assert!(clock.rfc3339(mono).ends_with('Z'));
    }
}
