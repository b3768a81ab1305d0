//! Requests held while a shard's primary is unreachable, so a failover costs clients only the
//! commands that were really in flight.
//!
//! When a shared connection to a shard's primary cannot connect, the requests it would have
//! failed at once are parked here instead: nothing of them has reached any node, so sending
//! them elsewhere is safe. The shard's monitor then either re-sends them (to the promoted
//! replica after a failover, or to the same primary when it comes back) or, past the deadline,
//! fails them with the reason.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::BackendRequest;
use crate::resp::Proto;

/// A request waiting for its shard to have a primary again.
pub struct Parked {
    pub request: BackendRequest,
    pub proto: Proto,
    /// Which connection of a node's set it came from (the client's, by id).
    pub index: usize,
    pub since: Instant,
}

/// One shard's parked requests.
#[derive(Default)]
pub struct Parking {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("parked", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// Only connections to this node park; `None` disables parking (a shard with nothing to
    /// fail over to).
    primary: Option<Arc<str>>,
    queue: VecDeque<Parked>,
}

impl Parking {
    /// Which node's connections may park from now on (`None`: none).
    pub fn accept_from(&self, primary: Option<Arc<str>>) {
        self.lock().primary = primary;
    }

    /// Parks `request` if `node` is the node parking is on for; else hands it back.
    pub fn park(
        &self,
        node: &str,
        request: BackendRequest,
        proto: Proto,
        index: usize,
    ) -> Option<BackendRequest> {
        let mut inner = self.lock();
        if inner.primary.as_deref() != Some(node) {
            return Some(request);
        }
        inner.queue.push_back(Parked {
            request,
            proto,
            index,
            since: Instant::now(),
        });
        None
    }

    /// Takes the requests one connection parked (it is back), oldest first.
    pub fn take_for(&self, node: &str, proto: Proto, index: usize) -> Vec<BackendRequest> {
        let mut inner = self.lock();
        if inner.primary.as_deref() != Some(node) {
            return Vec::new();
        }
        let (mine, rest): (VecDeque<Parked>, VecDeque<Parked>) = std::mem::take(&mut inner.queue)
            .into_iter()
            .partition(|p| p.proto == proto && p.index == index);
        inner.queue = rest;
        mine.into_iter().map(|p| p.request).collect()
    }

    /// Takes every parked request, oldest first.
    pub fn take(&self) -> VecDeque<Parked> {
        std::mem::take(&mut self.lock().queue)
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The time the oldest parked request has waited.
    pub fn oldest(&self) -> Option<Instant> {
        self.lock().queue.front().map(|p| p.since)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
