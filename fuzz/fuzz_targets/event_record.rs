//! A ring-buffer record as the daemon reads it: any bytes decode to a checked event or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor_common::{ConnEvent, EventKind};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = ConnEvent::from_record(data) {
        assert!(EventKind::from_tag(ev.kind).is_some());
        assert!(ev.ip_version == 4 || ev.ip_version == 6);
    }
});
