//! The flow stage, on its own thread between the verdict stage and the sinks: the daemon's side of
//! the flow table. It gives each new flow key an id, writes the key's verdict into the kernel,
//! decides which connections are recorded one by one, adds each interval's kernel counters to the
//! id they were counted under, and hands one [`FlowSummary`] per active id and interval to the
//! sinks.
//!
//! An id names one key under one judgement. When a key is judged differently (a reload, an
//! identity change), it gets a new id, and the old one keeps the old judgement for the counts
//! the kernel made under it. An id is retired (its key idle for [`IDLE_TALLIES`] intervals, or
//! judged anew) with the counting epoch in force then: the kernel counted under it in that epoch
//! or earlier, so the id is freed only once the tally of that epoch was added, and no count is
//! ever read under an id that meanwhile names another key.

use std::collections::HashMap;
use std::sync::Arc;

use monitor_common::EventKind;
use monitor_common::flow::{FLOW_UNJUDGED, FlowCounts, FlowKey};
use tokio::sync::mpsc;

use super::kernel::{Action, JudgedUnder, KernelFlows, RecordError};
use super::{FlowInput, FlowOutput, FlowSummary, Interval, Observation, Role, Tally};
use crate::source::decode::Origin;
use crate::telemetry::counters::Counters;

/// Intervals without a connection after which a key is retired.
pub const IDLE_TALLIES: u32 = 300;

/// One tracked flow id.
struct Entry {
    key: FlowKey,
    first: Arc<Observation>,
    action: Action,
    counted_elsewhere: bool,
    interval: Interval,
    idle: u32,
    /// Retired in this counting epoch: freed once its tally was added.
    retiring: Option<u32>,
}

/// Whether the tally of epoch `tally` covers counts made in epoch `retired` (epochs count up and
/// wrap).
fn covers(tally: u32, retired: u32) -> bool {
    tally.wrapping_sub(retired) as i32 >= 0
}

/// What a key's verdict depends on, to tell when a connection is judged differently from the
/// key's first (a reload, an identity change). Whether the other end of this one connection was
/// seen is left out: it is a property of the sighting, not of the flow (a rate-limited connect
/// leaves its accept unpaired).
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

/// The daemon's flow ids, and the id each key goes by now.
pub struct FlowTable {
    slots: Vec<Option<Entry>>,
    by_key: HashMap<FlowKey, u32>,
    free: Vec<u32>,
    capacity: usize,
}

impl FlowTable {
    /// A table of at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self { slots: Vec::new(), by_key: HashMap::new(), free: Vec::new(), capacity }
    }

    /// Ids in use now (current and retiring).
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no id is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes an id for `entry`, which its key goes by from now on; `None` when full.
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

    fn id_of(&self, key: &FlowKey) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.slots.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Frees `id`; its key no longer goes by it.
    fn free(&mut self, id: u32) {
        if let Some(entry) = self.slots.get_mut(id as usize).and_then(Option::take) {
            if self.by_key.get(&entry.key) == Some(&id) {
                self.by_key.remove(&entry.key);
            }
            self.free.push(id);
        }
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
    /// A stage of at most `capacity` flow ids writing verdicts to `kernel` (none in tests and
    /// synthetic benchmarks: every connection then keeps coming, and is counted all the same).
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
        self.tally(Tally { counts: Vec::new(), epoch: 0, final_read: true });
    }

    fn send(&self, out: FlowOutput) -> bool {
        self.output.blocking_send(out).is_ok()
    }

    /// The counting epoch in force (0 without a kernel).
    fn epoch(&self) -> u32 {
        self.kernel.as_ref().map_or(0, |k| k.epoch())
    }

    /// One connection the kernel sent.
    fn observe(&mut self, o: Observation) -> bool {
        let conn = &o.flow().conn;
        if conn.origin == Origin::FoundAtStart {
            return self.send(FlowOutput::Connection { observation: Arc::new(o), role: Role::FoundAtStart });
        }
        let route = conn.route;
        let mut one = Interval {
            conns: 1,
            failed: u64::from(conn.kind == EventKind::ConnectFailed),
            first_ns: conn.monotonic_ns,
            last_ns: conn.monotonic_ns,
            ..Interval::default()
        };
        let (action, paired_accept) = match o.judgement() {
            Some(j) if j.verdict.alert && !j.other_end_seen => (Action::Report, j.paired_accept),
            Some(j) => (Action::Count, j.paired_accept),
            None => (Action::Count, None),
        };
        // A pair's accept is counted under its connect: latch it, whichever was seen first.
        let counted_elsewhere = paired_accept == Some(route.key);
        if let Some(accept) = paired_accept.filter(|k| *k != route.key)
            && let Some(id) = self.table.id_of(&accept)
            && let Some(entry) = self.table.get_mut(id)
        {
            entry.counted_elsewhere = true;
        }
        let o = Arc::new(o);
        if let Some(id) = self.table.id_of(&route.key) {
            // The counting epoch (a lock on the kernel handle) only when the key is judged anew.
            let Some(same) = self.table.get_mut(id).map(|e| judged_as(&e.first) == judged_as(&o)) else {
                return true;
            };
            let epoch = if same { 0 } else { self.epoch() };
            let Some(entry) = self.table.get_mut(id) else { return true };
            entry.counted_elsewhere |= counted_elsewhere;
            if same {
                entry.idle = 0;
                let unretired = entry.retiring.take().is_some();
                let record = entry.action == Action::Report;
                one.recorded = u64::from(record);
                entry.interval.add(&one);
                if unretired || route.bits & FLOW_UNJUDGED != 0 {
                    self.record_verdict(id, &o);
                }
                if !record {
                    return true;
                }
                return self.send(FlowOutput::Connection { observation: o, role: Role::Reported });
            }
            // Judged differently: the old id keeps the old judgement for what the kernel counted
            // under it; the key goes by a new id from now on.
            let flushed = Self::summary(id, entry);
            let elsewhere = entry.counted_elsewhere;
            entry.retiring = Some(epoch);
            self.table.by_key.remove(&route.key);
            return self.open(route.key, o, action, elsewhere, one, flushed);
        }
        self.open(route.key, o, action, counted_elsewhere, one, None)
    }

    /// Gives `key` a new id under the judgement of `o`, its first connection, and records that
    /// connection; when the table is full, records it as untracked.
    fn open(
        &mut self,
        key: FlowKey,
        o: Arc<Observation>,
        action: Action,
        counted_elsewhere: bool,
        one: Interval,
        flushed: Option<FlowSummary>,
    ) -> bool {
        if let Some(summary) = flushed
            && !self.send(FlowOutput::Flow(summary))
        {
            return false;
        }
        let entry = Entry {
            key,
            first: o.clone(),
            action,
            counted_elsewhere,
            interval: Interval { recorded: 1, ..one },
            idle: 0,
            retiring: None,
        };
        match self.table.insert(entry) {
            Some(id) => {
                self.record_verdict(id, &o);
                self.send(FlowOutput::Connection { observation: o, role: Role::First })
            }
            None => {
                let n = self.counters.record_flow_table_full();
                if n.is_power_of_two() {
                    tracing::warn!(total = n, "flow table full: connections of new flows are recorded one by one");
                }
                self.send(FlowOutput::Connection { observation: o, role: Role::Untracked })
            }
        }
    }

    /// Writes the verdict of `id` into the kernel, if `o` was judged under what is in force (a
    /// stale one is not written: the key's next connection comes again and is judged anew).
    fn record_verdict(&mut self, id: u32, o: &Observation) {
        let Some(kernel) = &self.kernel else { return };
        let Some(entry) = self.table.get_mut(id) else { return };
        let judged = JudgedUnder {
            revision: o.judgement().map(|j| &j.dfd),
            key_mask: o.flow().conn.route.key_mask,
            identity_generation: o.flow().identity_generation,
        };
        match kernel.record(&entry.key, id, entry.action, &judged) {
            Ok(()) | Err(RecordError::Stale) => {}
            Err(e) => {
                let n = self.counters.record_verdict_refused();
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, total = n, "flow verdict not kept in the kernel: the flow's connections keep coming one by one (counted in its flow records)");
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

    /// One interval's kernel counters: add them, hand on a summary per active id, retire idle
    /// keys, free the ids whose last counts are in.
    fn tally(&mut self, tally: Tally) -> bool {
        self.check_identity_generation();
        for (id, c) in &tally.counts {
            self.add_counts(*id, c);
        }
        let summaries = self.close_interval(&tally);
        self.counters.set_flows_tracked(self.table.len() as u64);
        summaries.into_iter().all(|s| self.send(FlowOutput::Flow(s)))
    }

    /// The summaries of the interval that ended; retires idle keys and frees covered ids.
    fn close_interval(&mut self, tally: &Tally) -> Vec<FlowSummary> {
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
                Some(epoch) if tally.final_read || covers(tally.epoch, epoch) => freed.push(id),
                Some(_) => {}
                None if entry.idle >= IDLE_TALLIES => {
                    entry.retiring = Some(self.kernel.as_ref().map_or(tally.epoch, |k| k.forget(&entry.key)));
                }
                None => {}
            }
        }
        for id in freed {
            self.table.free(id);
        }
        out
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
            kernel.withdraw_for_identities(now);
            tracing::debug!(generation = now, "workload identities changed: flow verdicts withdrawn");
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
                FlowInput::Tally(Tally { counts: vec![(0, counts(40))], epoch: 0, final_read: false }),
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
    fn a_flow_judged_anew_gets_a_new_id_and_the_old_one_keeps_its_counts() {
        let rejudged = {
            let FlowInput::Observed(Observation::Judged(mut j)) = observed(80, true, 2) else { unreachable!() };
            j.judgement.verdict.kind = crate::policy::verdict::VerdictKind::WrongPort;
            FlowInput::from(j)
        };
        let inputs = vec![
            observed(80, false, 1),
            rejudged,
            FlowInput::Tally(Tally { counts: vec![(0, counts(5))], epoch: 0, final_read: false }),
        ];
        let summaries: Vec<(u32, u64, &str)> = run(8, inputs)
            .iter()
            .filter_map(|o| match o {
                FlowOutput::Flow(s) => {
                    Some((s.id, s.interval.conns, s.first.judgement().map_or("", |j| j.verdict.kind.as_str())))
                }
                FlowOutput::Connection { .. } | FlowOutput::Gap(_) | FlowOutput::DfdChange(_) => None,
            })
            .collect();
        assert_eq!(
            summaries,
            [(0, 1, "lateral_movement"), (0, 5, "lateral_movement"), (1, 1, "wrong_port")],
            "the kernel's counts under id 0 stay with the judgement they were counted under"
        );
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
        // One interval with its connection, IDLE_TALLIES idle ones (retired at the last), then
        // the tally that covers its epoch (freed).
        inputs.extend((0..2 + IDLE_TALLIES).map(|_| tally()));
        inputs.push(observed(81, false, 2));
        inputs.push(FlowInput::Tally(Tally { counts: vec![(0, counts(3))], epoch: 0, final_read: false }));
        let out = run(1, inputs);
        assert_eq!(roles(&out), [Role::First, Role::First], "the second flow found room");
        let f = flows(&out);
        assert_eq!(f.last().map(|(id, i)| (*id, i.conns)), Some((0, 4)), "id 0 names the new flow: {f:?}");
    }
}
