//! The shard's epoch: kept equal to the record on the primary, and moved only upwards.
//!
//! The record on the primary (`__shardis__:epoch`) is what lock grants check, and it is
//! replicated with the data. So the epoch follows a higher record found there (another proxy
//! failed over, or this one lost its state file), and a new epoch starts when the record may
//! have gone back with the data (the primary restarted or lost it). A record that no fencing
//! token can carry was not written by shardis: it is refused, logged and replaced, never
//! adopted.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::state::ShardState;
use super::super::View;
use super::{judge, Monitor, Probe};

impl Monitor {
    /// The epoch a new primary starts: above the shard's, the state file's and every credible
    /// record a node of the shard showed; `None` when a token could not carry it: the shard
    /// then keeps its epoch and its primary, since a new primary under an old epoch could
    /// repeat tokens.
    pub(super) fn next_epoch(&self, view: &View) -> Option<u64> {
        let stored = self.state.get(&self.shard.name).map_or(0, |s| s.epoch);
        let seen = self
            .tracks
            .values()
            .filter_map(|t| t.answer.as_ref()?.epoch)
            .filter(|e| judge::credible(*e, view.epoch))
            .max()
            .unwrap_or(0);
        let next = view.epoch.max(stored).max(seen) + 1;
        (next <= crate::command::lock::MAX_EPOCH).then_some(next)
    }

    /// Compares the epoch the primary records with the shard's:
    /// - a record no token can carry: refused, and a new epoch written over it;
    /// - higher: another proxy moved it, or our state file was lost: take it (and freeze
    ///   grants), so epochs never go back;
    /// - lower, or missing where this monitor's own write of it failed: write it (again);
    /// - missing on a fresh fleet (epoch 0, never seen): write it;
    /// - missing after it was seen or with a recorded epoch, or the primary restarted (a new
    ///   `run_id`, so it may have loaded older data): the lock counters may have gone back
    ///   with its data. A new epoch keeps tokens growing (redis and mirror modes). In Sentinel
    ///   mode the epoch is Sentinel's: it is only reported.
    pub(super) async fn check_epoch(&mut self, view: &View, probe: &Probe) {
        let name = self.shard.name.clone();
        let sentinel = self.sentinel();
        let restarted = match (&self.primary_run, &probe.run_id) {
            (Some((addr, before)), Some(now)) => *addr == view.primary.addr && before != now,
            _ => false,
        };
        if let Some(run) = &probe.run_id {
            self.primary_run = Some((view.primary.addr.clone(), run.clone()));
        }
        if probe.epoch_unread {
            self.report(
                &view.primary.addr,
                "the primary's epoch record cannot be read: left as it is",
            );
            return;
        }
        let lost = restarted || (probe.epoch.is_none() && self.epoch_seen);
        let floor = self.shard.epoch_floor.load(Ordering::Relaxed);
        // A record no token can carry, or far above anything this shard followed: not one
        // shardis wrote.
        let forged = probe.bad_epoch.clone().or_else(|| {
            probe
                .epoch
                .filter(|e| !judge::credible(*e, view.epoch))
                .map(|e| e.to_string())
        });
        let write = match probe.epoch {
            _ if forged.is_some() => {
                let forged = forged.unwrap_or_default();
                let text = format!(
                    "the primary's epoch record {forged:?} was not written by shardis: refused"
                );
                self.report(&view.primary.addr, &text);
                if sentinel {
                    return;
                }
                let Some(epoch) = self.next_epoch(view) else {
                    return;
                };
                let epoch = epoch.max(floor);
                if !self.raise_epoch(view, epoch, "new epoch over a forged record") {
                    return;
                }
                Some(epoch)
            }
            // A reload moved keys (locks) onto this shard: above every shard's epoch.
            _ if floor > view.epoch && !sentinel => {
                if !self.raise_epoch(view, floor, "the ring changed in a reload: new epoch") {
                    return;
                }
                Some(floor)
            }
            Some(e) if e > view.epoch && !sentinel && !restarted => {
                self.raise_epoch(view, e, "epoch taken from the primary");
                None
            }
            Some(e) if e > view.epoch && sentinel => {
                self.report(
                    &view.primary.addr,
                    "primary records an epoch above Sentinel's: lock grants refused",
                );
                None
            }
            _ if self.unwritten == Some(view.epoch) && probe.epoch != Some(view.epoch) => {
                Some(view.epoch)
            }
            // Left without a record, the primary refuses grants (until Sentinel fails over).
            _ if lost && sentinel => {
                self.report(
                    &view.primary.addr,
                    "primary restarted or lost its epoch record: its lock counters may have gone back (Sentinel mode cannot start a new epoch)",
                );
                None
            }
            // Not a fresh fleet: this shard had an epoch recorded before, by this run or by
            // the state file, and the primary has none.
            _ if !sentinel
                && (lost || (probe.epoch.is_none() && self.state.get(&name).is_some())) =>
            {
                let Some(epoch) = self.next_epoch(view) else {
                    return;
                };
                if !self.raise_epoch(
                    view,
                    epoch,
                    "the primary restarted or lost its epoch record: new epoch",
                ) {
                    return;
                }
                Some(epoch)
            }
            Some(e) if e < view.epoch => Some(view.epoch),
            None => {
                // A fresh fleet: recorded, so that a later start finds it is not fresh.
                if !sentinel {
                    let record = ShardState {
                        epoch: view.epoch,
                        primary: view.primary.addr.clone(),
                        locks_frozen_until_ms: 0,
                    };
                    if let Err(e) = self.state.set(&name, record) {
                        tracing::error!(shard = %name, "{e}");
                        return;
                    }
                }
                Some(view.epoch)
            }
            Some(_) => None,
        };
        self.epoch_seen |= probe.epoch.is_some();
        if let Some(epoch) = write {
            self.write_epoch(&view.primary, epoch).await;
        }
    }

    /// Writes `epoch` as the record on `node` (the primary); on failure it is written again at
    /// the next check, not raised again.
    pub(super) async fn write_epoch(&mut self, node: &super::super::Node, epoch: u64) -> bool {
        match self.shard.record_epoch(node, epoch).await {
            Ok(()) => {
                self.epoch_seen = true;
                self.unwritten = None;
                true
            }
            Err(e) => {
                self.unwritten = Some(epoch);
                tracing::warn!(shard = %self.shard.name, epoch, "cannot record the epoch on the primary: {e}");
                false
            }
        }
    }

    /// Moves the shard to `epoch` on the same nodes, durably, and freezes lock grants; false
    /// when the state file could not record it (nothing changed then).
    pub(super) fn raise_epoch(&mut self, view: &View, epoch: u64, why: &str) -> bool {
        let freeze = self.config.policy.locks.freeze();
        if let Err(e) = self
            .shard
            .begin_epoch(&self.state, epoch, &view.primary.addr, freeze)
        {
            tracing::error!(shard = %self.shard.name, "{e}");
            return false;
        }
        self.shard.view.store(Arc::new(View {
            epoch,
            primary: view.primary.clone(),
            replicas: view.replicas.clone(),
        }));
        tracing::warn!(shard = %self.shard.name, epoch, freeze_ms = freeze.as_millis() as u64, "{why}");
        true
    }
}
