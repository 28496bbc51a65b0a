//! The approved DFD as the daemon holds it: read once, admitted ([`admission`]), compiled into a
//! [`Policy`], and used to place each end of a flow on a DFD node, zone and tier. The verdict on a
//! flow builds on these placements; the verdict stage judges each flow against one whole policy,
//! which the reloader swaps atomically.

pub mod admission;
pub mod changes;
pub mod judged;
pub mod placement;
pub mod reload;
pub mod stage;
pub mod verdict;

pub use admission::{ApprovalExpiry, ApprovalState, DfdRef, Policy, PolicyError};
pub use judged::{Judged, Judgement};
pub use placement::{Placement, place};
