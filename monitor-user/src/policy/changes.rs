//! Every applied DFD change is reported: the reloader tells [`ChangeReporter`] of each revision
//! applied, and it hands the fan-out a [`DfdChange`], what the change does to the boundaries
//! ([`dfdwatch_dfd::diff`]), which the fan-out writes as a change record to the events and alert
//! files and counts by severity for the shipped rule.

use std::sync::{Arc, Mutex};

use dfdwatch_dfd::compile::Compiled;
use dfdwatch_dfd::diff::Change;
use tokio::sync::mpsc::WeakSender;

use super::reload::ReloadObserver;
use super::{DfdRef, Policy};
use crate::escape::escape_bytes;
use crate::flows::FlowOutput;

/// One applied change of the approved DFD.
#[derive(Clone, Debug)]
pub struct DfdChange {
    /// The revision replaced.
    pub old: Arc<DfdRef>,
    /// The revision applied.
    pub new: Arc<DfdRef>,
    /// What changed, most severe first.
    pub changes: Vec<Change>,
}

/// Compares each applied revision with the one before it.
pub struct ChangeReporter {
    running: Mutex<(Arc<DfdRef>, Arc<Compiled>)>,
    out: WeakSender<FlowOutput>,
}

impl ChangeReporter {
    /// Starts from the revision in force; reports to the fan-out through `out`.
    pub fn new(policy: &Policy, out: WeakSender<FlowOutput>) -> Self {
        Self { running: Mutex::new((policy.revision.clone(), policy.compiled.clone())), out }
    }
}

impl ReloadObserver for ChangeReporter {
    fn applied(&self, policy: &Policy) {
        let Ok(mut running) = self.running.lock() else { return };
        let changes = dfdwatch_dfd::diff::changes(&running.1.dfd, &policy.compiled.dfd);
        for c in &changes {
            // Ids come from the DFD files: escaped before they reach the log.
            tracing::warn!(
                kind = c.kind,
                severity = c.severity.as_str(),
                subject = %escape_bytes(c.subject.as_bytes()),
                detail = %escape_bytes(c.detail.as_bytes()),
                "approved DFD changed"
            );
        }
        let change = DfdChange { old: running.0.clone(), new: policy.revision.clone(), changes };
        *running = (policy.revision.clone(), policy.compiled.clone());
        let Some(tx) = self.out.upgrade() else { return };
        if tx.try_send(FlowOutput::DfdChange(Box::new(change))).is_err() {
            tracing::error!("the pipeline is full or gone: a DFD change record could not be written");
        }
    }

    fn refused(&self) {}
}
