//! The flow stage, on its own thread between the verdict stage and the sinks: the daemon's side of
//! the flow table. It gives each new flow key an id, writes the key's verdict into the kernel,
//! decides which connections are recorded one by one, adds each interval's kernel counters to the
//! key they belong to, and hands one [`FlowSummary`] per active key and interval to the sinks.
//! A key idle for [`IDLE_TALLIES`] intervals is retired: its kernel verdict is withdrawn first,
//! and its id is freed only after two more reads of the counters, so no count is ever read under
//! an id that meanwhile names another key.

use std::collections::HashMap;
use std::sync::Arc;

use monitor_common::EventKind;
use monitor_common::flow::{FLOW_UNJUDGED, FlowCounts, FlowKey};
use tokio::sync::mpsc;

use super::kernel::{Action, KernelFlows, RecordError};
use super::{FlowInput, FlowOutput, FlowSummary, Interval, Observation, Role, Tally};
use crate::telemetry::counters::Counters;

/// Intervals without a connection after which a key is retired.
pub const IDLE_TALLIES: u32 = 300;
/// Counter reads between withdrawing a key's verdict and freeing its id.
const RETIRE_TALLIES: u8 = 2;

/// One tracked flow key.
struct Entry {
    key: FlowKey,
    first: Arc<Observation>,
    action: Action,
    counted_elsewhere: bool,
    interval: Interval,
    idle: u32,
    retiring: Option<u8>,
}

/// What a key's verdict depends on, to tell when a connection is judged differently from the
/// key's first (a reload, an identity change). Whether the other end of this one connection was
/// seen is left out: it is a property of the sighting, not of the flow (a rate-limited connect
/// leaves its accept unpaired), and the key keeps what its first sighting said.
#[derive(PartialEq, Eq)]
struct JudgedAs<'a> {
    revision: &'a str,
    verdict: &'static str,
    alert: bool,
    src_node: Option<&'a str>,
    dst_node: Option<&'a str>,
}

fn judged_as(o: &Observation) -> Option<JudgedAs<'_>> {
    o.judgement().map(|j| JudgedAs {
        revision: j.dfd.sha256.as_str(),
        verdict: j.verdict.kind.as_str(),
        alert: j.verdict.alert,
        src_node: j.src.node.as_deref(),
        dst_node: j.dst.node.as_deref(),
    })
}

/// The daemon's flow keys, by id and by key.
pub struct FlowTable {
    slots: Vec<Option<Entry>>,
    by_key: HashMap<FlowKey, u32>,
    free: Vec<u32>,
    capacity: usize,
}

impl FlowTable {
    /// A table of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self { slots: Vec::new(), by_key: HashMap::new(), free: Vec::new(), capacity }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn insert(&mut self, entry: Entry) -> Option<u32> {
        let key = entry.key;
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(entry);
                id
            }
            None if self.slots.len() < self.capacity => {
                self.slots.push(Some(entry));
                u32::try_from(self.slots.len() - 1).ok()?
            }
            None => return None,
        };
        self.by_key.insert(key, id);
        Some(id)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.slots.get_mut(id as usize).and_then(Option::as_mut)
    }
}

/// The flow stage.
pub struct FlowStage {
    table: FlowTable,
    kernel: Option<Arc<KernelFlows>>,
    identity_generation: Option<Box<dyn Fn() -> u64 + Send>>,
    last_generation: u64,
    input: mpsc::Receiver<FlowInput>,
    output: mpsc::Sender<FlowOutput>,
    counters: Arc<Counters>,
}

impl FlowStage {
    /// A stage writing verdicts to `kernel` (none in tests and synthetic benchmarks: every
    /// connection then keeps coming, and is counted in the table all the same).
    pub fn new(
        kernel: Option<Arc<KernelFlows>>,
        capacity: usize,
        input: mpsc::Receiver<FlowInput>,
        output: mpsc::Sender<FlowOutput>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            table: FlowTable::new(capacity),
            kernel,
            identity_generation: None,
            last_generation: 0,
            input,
            output,
            counters,
        }
    }

    /// Withdraws every kernel verdict when `generation` (the Kubernetes identity cache's change
    /// count) moved since the last interval: an identity change may change any key's verdict.
    pub fn with_identity_generation(mut self, generation: Box<dyn Fn() -> u64 + Send>) -> Self {
        self.last_generation = generation();
        self.identity_generation = Some(generation);
        self
    }

    /// Runs until every input closes, then hands on what the last interval holds.
    pub fn run(mut self) {
        while let Some(input) = self.input.blocking_recv() {
            let ok = match input {
                FlowInput::Observed(o) => self.observe(o),
                FlowInput::Tally(t) => self.tally(t),
            };
            if !ok {
                tracing::error!("the sinks stopped; flow stage ends");
                return;
            }
        }
        self.tally(Tally { counts: Vec::new(), final_read: true });
    }

    fn send(&self, out: FlowOutput) -> bool {
        self.output.blocking_send(out).is_ok()
    }

    /// One connection the kernel sent.
    fn observe(&mut self, o: Observation) -> bool {
        let conn = &o.flow().conn;
        let route = conn.route;
        let mut one = Interval {
            conns: 1,
            failed: u64::from(conn.kind == EventKind::ConnectFailed),
            first_ns: conn.monotonic_ns,
            last_ns: conn.monotonic_ns,
            ..Interval::default()
        };
        let (action, counted_elsewhere) = match o.judgement() {
            Some(j) if j.verdict.alert && !j.other_end_seen => (Action::Report, false),
            Some(j) => (Action::Count, j.other_end_seen),
            None => (Action::Count, false),
        };
        let o = Arc::new(o);
        let Some(&id) = self.table.by_key.get(&route.key) else {
            let entry = Entry {
                key: route.key,
                first: o.clone(),
                action,
                counted_elsewhere,
                interval: Interval { recorded: 1, ..one },
                idle: 0,
                retiring: None,
            };
            return match self.table.insert(entry) {
                Some(id) => {
                    self.record_verdict(id, &o, route.key_mask);
                    self.send(FlowOutput::Connection { observation: o, role: Role::First })
                }
                None => {
                    let n = self.counters.record_flow_table_full();
                    if n.is_power_of_two() {
                        tracing::warn!(total = n, "flow table full: connections of new flows are recorded one by one");
                    }
                    self.send(FlowOutput::Connection { observation: o, role: Role::Untracked })
                }
            };
        };
        let mut flushed = None;
        let Some(entry) = self.table.get_mut(id) else { return true };
        let changed = judged_as(&entry.first) != judged_as(&o);
        if changed {
            flushed = Self::summary(id, entry);
            entry.first = o.clone();
            entry.action = action;
            entry.counted_elsewhere = counted_elsewhere;
        }
        entry.idle = 0;
        let unretired = entry.retiring.take().is_some();
        let record = changed || action == Action::Report;
        one.recorded = u64::from(record);
        entry.interval.add(&one);
        if changed || unretired || route.bits & FLOW_UNJUDGED != 0 {
            self.record_verdict(id, &o, route.key_mask);
        }
        if let Some(summary) = flushed
            && !self.send(FlowOutput::Flow(summary))
        {
            return false;
        }
        if !record {
            return true;
        }
        let role = if changed { Role::First } else { Role::Reported };
        self.send(FlowOutput::Connection { observation: o, role })
    }

    /// Writes the key's verdict into the kernel (a stale one is not written: the key's next
    /// connection comes again and is judged under what is in force now).
    fn record_verdict(&mut self, id: u32, o: &Observation, key_mask: u8) {
        let Some(kernel) = &self.kernel else { return };
        let Some(entry) = self.table.get_mut(id) else { return };
        let revision = o.judgement().map(|j| &j.dfd);
        match kernel.record(&entry.key, id, entry.action, revision, key_mask) {
            Ok(()) | Err(RecordError::Stale) => {}
            Err(e) => {
                let n = self.counters.record_flow_table_full();
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, total = n, "flow verdict not kept in the kernel: the flow is sent connection by connection");
                }
            }
        }
    }

    /// The entry's interval as a summary (if it had connections), and the interval reset.
    fn summary(id: u32, entry: &mut Entry) -> Option<FlowSummary> {
        if entry.interval.conns == 0 {
            return None;
        }
        let interval = std::mem::take(&mut entry.interval);
        Some(FlowSummary { id, first: entry.first.clone(), interval, counted_elsewhere: entry.counted_elsewhere })
    }

    /// One interval's kernel counters: add them, hand on a summary per active key, retire idle keys.
    fn tally(&mut self, tally: Tally) -> bool {
        self.check_identity_generation();
        for (id, c) in &tally.counts {
            self.add_counts(*id, c);
        }
        let mut out = Vec::new();
        let mut freed = Vec::new();
        for (id, slot) in self.table.slots.iter_mut().enumerate() {
            let Some(entry) = slot else { continue };
            let id = id as u32;
            match Self::summary(id, entry) {
                Some(s) => {
                    out.push(s);
                    entry.idle = 0;
                }
                None => entry.idle = entry.idle.saturating_add(1),
            }
            match entry.retiring {
                Some(n) if n + 1 >= RETIRE_TALLIES || tally.final_read => freed.push(id),
                Some(n) => entry.retiring = Some(n + 1),
                None if entry.idle >= IDLE_TALLIES => {
                    if let Some(kernel) = &self.kernel {
                        kernel.forget(&entry.key);
                    }
                    entry.retiring = Some(0);
                }
                None => {}
            }
        }
        for id in freed {
            if let Some(entry) = self.table.slots.get_mut(id as usize).and_then(Option::take) {
                self.table.by_key.remove(&entry.key);
                self.table.free.push(id);
            }
        }
        self.counters.set_flows_tracked(self.table.len() as u64);
        for summary in out {
            if !self.send(FlowOutput::Flow(summary)) {
                return false;
            }
        }
        true
    }

    fn add_counts(&mut self, id: u32, c: &FlowCounts) {
        self.counters.record_unreported(c.unreported);
        let Some(entry) = self.table.get_mut(id) else {
            // Cannot happen by the retire protocol; said loudly if it ever does.
            tracing::error!(id, connections = c.conns, "kernel counters for an unknown flow id dropped");
            return;
        };
        let counted = Interval {
            conns: c.conns,
            failed: c.failed,
            recorded: 0,
            unreported: c.unreported,
            first_ns: c.first_ns,
            last_ns: c.last_ns,
        };
        entry.interval.add(&counted);
    }

    fn check_identity_generation(&mut self) {
        let Some(generation) = &self.identity_generation else { return };
        let now = generation();
        if now == self.last_generation {
            return;
        }
        self.last_generation = now;
        if let Some(kernel) = &self.kernel {
            let n = kernel.withdraw_all_in_force();
            tracing::debug!(withdrawn = n, "workload identities changed: flow verdicts withdrawn");
        }
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::flow::FLOW_UNJUDGED;

    use super::*;
    use crate::sinks::fixture;

    /// A judged connect to `port` (its own flow key), alerting or approved.
    fn observed(port: u16, alert: bool, n: u64) -> FlowInput {
        let mut j = fixture::judged(port, n);
        j.judgement.verdict.alert = alert;
        j.flow.conn.route.key.server_port = port;
        j.flow.conn.route.bits = FLOW_UNJUDGED;
        FlowInput::from(j)
    }

    fn counts(conns: u64) -> FlowCounts {
        FlowCounts { conns, failed: 0, unreported: 0, first_ns: 5, last_ns: 9 }
    }

    /// Runs a stage of `capacity` over `inputs`; returns what it handed on.
    fn run(capacity: usize, inputs: Vec<FlowInput>) -> Vec<FlowOutput> {
        let (in_tx, in_rx) = mpsc::channel(inputs.len() + 1);
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        for i in inputs {
            in_tx.try_send(i).unwrap();
        }
        drop(in_tx);
        FlowStage::new(None, capacity, in_rx, out_tx, Arc::new(Counters::default())).run();
        std::iter::from_fn(|| out_rx.try_recv().ok()).collect()
    }

    fn roles(out: &[FlowOutput]) -> Vec<Role> {
        out.iter()
            .filter_map(|o| if let FlowOutput::Connection { role, .. } = o { Some(*role) } else { None })
            .collect()
    }

    fn flows(out: &[FlowOutput]) -> Vec<(u32, Interval)> {
        out.iter().filter_map(|o| if let FlowOutput::Flow(s) = o { Some((s.id, s.interval)) } else { None }).collect()
    }

    #[test]
    fn an_approved_flow_is_recorded_once_and_counted_with_the_kernels_counts() {
        let out = run(
            8,
            vec![
                observed(80, false, 1),
                observed(80, false, 2),
                FlowInput::Tally(Tally { counts: vec![(0, counts(40))], final_read: false }),
            ],
        );
        assert_eq!(roles(&out), [Role::First]);
        let f = flows(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].1.conns, f[0].1.recorded), (42, 1));
    }

    #[test]
    fn every_connection_of_an_alerting_flow_is_recorded() {
        let out = run(8, (0..5).map(|n| observed(22, true, n)).collect());
        assert_eq!(roles(&out), [Role::First, Role::Reported, Role::Reported, Role::Reported, Role::Reported]);
        let f = flows(&out);
        assert_eq!((f[0].1.conns, f[0].1.recorded), (5, 5), "the final flush counts them all");
    }

    #[test]
    fn a_sighting_paired_or_not_is_the_same_flow() {
        let sighting = |n: u64, paired: bool| {
            let FlowInput::Observed(Observation::Judged(mut j)) = observed(22, true, n) else { unreachable!() };
            j.judgement.other_end_seen = paired;
            FlowInput::from(j)
        };
        let out = run(8, (0..6).map(|n| sighting(n, n % 2 == 1)).collect());
        assert_eq!(roles(&out).iter().filter(|r| **r == Role::First).count(), 1, "{:?}", roles(&out));
        assert_eq!(flows(&out).len(), 1, "one flow, one interval");
    }

    #[test]
    fn a_full_table_records_new_flows_one_by_one() {
        let out = run(1, vec![observed(80, false, 1), observed(81, false, 2), observed(81, false, 3)]);
        assert_eq!(roles(&out), [Role::First, Role::Untracked, Role::Untracked]);
        assert_eq!(flows(&out).iter().map(|f| f.1.conns).sum::<u64>(), 1, "untracked ones are counted by the sinks");
    }

    #[test]
    fn an_idle_flow_is_retired_then_its_id_reused() {
        let tally = || FlowInput::Tally(Tally::default());
        let mut inputs = vec![observed(80, false, 1)];
        // One interval with its connection, IDLE_TALLIES idle ones, then RETIRE_TALLIES more.
        inputs.extend((0..1 + IDLE_TALLIES + u32::from(RETIRE_TALLIES)).map(|_| tally()));
        inputs.push(observed(81, false, 2));
        inputs.push(FlowInput::Tally(Tally { counts: vec![(0, counts(3))], final_read: false }));
        let out = run(1, inputs);
        assert_eq!(roles(&out), [Role::First, Role::First], "the second flow found room");
        let f = flows(&out);
        assert_eq!(f.last().map(|(id, i)| (*id, i.conns)), Some((0, 4)), "id 0 names the new flow: {f:?}");
    }
}
