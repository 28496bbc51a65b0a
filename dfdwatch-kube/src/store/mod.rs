//! The identity index: every kind's records, written only by the watcher task, read by handles.

mod pods;
mod services;

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) use pods::PodIndex;
pub(crate) use services::{ServiceIndex, SliceIndex};

use crate::model::Labels;

/// Everything the lookups answer from.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) pods: PodIndex,
    pub(crate) namespaces: HashMap<String, Arc<Labels>>,
    pub(crate) services: ServiceIndex,
    pub(crate) slices: SliceIndex,
}

impl Index {
    /// Object counts in [`crate::ResourceKind::ALL`] order.
    pub(crate) fn counts(&self) -> [usize; 4] {
        [self.pods.len(), self.namespaces.len(), self.services.len(), self.slices.len()]
    }
}
