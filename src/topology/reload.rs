//! A new configuration applied to a running proxy, without dropping a client.
//!
//! A shard whose nodes and settings did not change is kept as it is (its connections, view,
//! parked requests, mirror, lock freeze and monitor); only its weight on the ring may change.
//! A shard whose nodes or node-level settings changed is rebuilt, starting from the epoch,
//! primary, lock freeze and counters of the shard it replaces. A ring change is measured on
//! 100,000 sample keys; the shards that gain keys move to an epoch above every shard's, and
//! freeze lock grants, so a lock key that lands on another shard never gets a token below one
//! issued for it before, nor a grant while a lease given elsewhere may still run.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{build_shard, unix_ms, Carried, Shard, Topology};
use crate::config::{Config, ShardConfig};

/// Sample keys a reload routes through both rings to count how many move.
pub const SAMPLE_KEYS: usize = 100_000;

/// A reload's result: the topology to swap in and what changed, for the log and the admin
/// command.
pub struct Reloaded {
    pub topology: Topology,
    pub report: String,
}

/// Settings a shard's connections and monitor were started with: a change rebuilds every
/// shard.
fn node_settings_equal(a: &Config, b: &Config) -> bool {
    a.backend == b.backend
        && a.health == b.health
        && a.ack_timeout == b.ack_timeout
        && a.max_lag == b.max_lag
        && a.policy.locks == b.policy.locks
}

/// The same nodes and replication settings (the weight only moves the shard on the ring).
fn same_shard(a: &ShardConfig, b: &ShardConfig) -> bool {
    ShardConfig {
        weight: b.weight,
        ..a.clone()
    } == *b
}

impl Topology {
    /// Builds the topology for `new`, taking over what it can from this one (built from
    /// `old`). Refuses changes that need a restart, before anything is built or stopped:
    /// nothing fails after that, so a refused reload leaves everything as it was. Needs a
    /// tokio runtime.
    pub fn reload(&self, old: &Config, new: &Config) -> Result<Reloaded, String> {
        for (key, changed) in [
            ("listen", old.listen != new.listen),
            ("workers", old.workers != new.workers),
            ("metrics_listen", old.metrics_listen != new.metrics_listen),
            ("tls", old.tls != new.tls),
            ("log", old.log != new.log),
            ("replication.state_file", old.state_file != new.state_file),
        ] {
            if changed {
                return Err(format!("{key} cannot change without a restart"));
            }
        }
        let by_name: HashMap<&str, usize> = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| (&*s.name, i))
            .collect();
        let keep_nodes = node_settings_equal(old, new);
        let mut taken = self.monitors.lock().unwrap_or_else(|e| e.into_inner());
        let mut shards = Vec::with_capacity(new.shards.len());
        let mut monitors = Vec::with_capacity(new.shards.len());
        let (mut kept, mut rebuilt, mut added) = (0, 0, 0);
        let mut reused = vec![false; self.shards.len()];
        for s in &new.shards {
            let before = by_name.get(s.name.as_str()).copied();
            match before {
                Some(i) if keep_nodes && same_shard(&self.shards[i].config, s) => {
                    // Kept whole: only the ring (built from `new`) knows its new weight.
                    shards.push(self.shards[i].clone());
                    monitors.push(std::mem::take(&mut taken[i]));
                    reused[i] = true;
                    kept += 1;
                }
                Some(i) => {
                    let old = &self.shards[i];
                    // Serving stays on only if the primary it confirmed is still one of its
                    // nodes (else the configured one, unchecked, would serve).
                    let primary = &old.view().primary.addr;
                    let serving = old.is_confirmed() && s.nodes().any(|n| n == primary);
                    let (shard, m) =
                        build_shard(s, new, &self.state, Some(Carried::from(old)), serving);
                    shards.push(shard);
                    monitors.push(m);
                    rebuilt += 1;
                }
                None => {
                    // A shard added back keeps what the state file recorded for it.
                    let recorded = Carried::recorded(&self.state, s);
                    // Serves at once, from its configured primary until its first checks: a
                    // reload cannot wait for them.
                    let (shard, m) = build_shard(s, new, &self.state, recorded, true);
                    shards.push(shard);
                    monitors.push(m);
                    added += 1;
                }
            }
        }
        // The monitors of shards removed or rebuilt stop now, not when the last session lets
        // go of the old topology: two monitors must never run one shard.
        for (i, handles) in taken.iter_mut().enumerate() {
            if !reused[i] {
                for h in handles.drain(..) {
                    h.abort();
                }
            }
        }
        drop(taken);
        let removed = self.shards.len() - kept - rebuilt;
        let router = new.router();
        let mut report = format!(
            "{} shards: {kept} kept, {rebuilt} rebuilt, {added} added, {removed} removed",
            shards.len()
        );
        let moved = moved_keys(self, &router, &shards);
        report.push_str(&format!("; {moved} of {SAMPLE_KEYS} sample keys move"));
        let ring_changed = ring_of(old) != ring_of(new);
        if ring_changed {
            let frozen = raise_epochs(self, &shards, new);
            report.push_str(&format!(
                "; the ring changed: lock grants frozen on every shard, and epochs raised on {}",
                if frozen.is_empty() {
                    "none (all follow Sentinel)".to_string()
                } else {
                    frozen.join(", ")
                }
            ));
        }
        let shards_changed = ring_changed
            || shards.len() != self.shards.len()
            || shards
                .iter()
                .zip(&self.shards)
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        Ok(Reloaded {
            topology: Topology {
                router,
                generation: self.generation + u64::from(shards_changed),
                shards,
                monitors: Mutex::new(monitors),
                state: self.state.clone(),
            },
            report,
        })
    }
}

/// What places keys: the hash settings and each shard's name and weight, in order (modula
/// depends on the order).
fn ring_of(
    c: &Config,
) -> (
    crate::routing::HashFn,
    crate::routing::Distribution,
    Option<crate::routing::HashTag>,
    Vec<(&str, u32)>,
) {
    (
        c.hash,
        c.distribution,
        c.hash_tag,
        c.shards
            .iter()
            .map(|s| (s.name.as_str(), s.weight))
            .collect(),
    )
}

/// Routes the sample keys through both rings: how many change shard (for the report: a
/// sample can miss a small arc, so epochs are raised on any ring change, not on these).
fn moved_keys(old: &Topology, router: &crate::routing::Router, shards: &[Arc<Shard>]) -> usize {
    (0..SAMPLE_KEYS)
        .filter(|i| {
            let key = format!("key:{i}");
            let was = &old.shards[old.router.shard_of(key.as_bytes())].name;
            shards[router.shard_of(key.as_bytes())].name != *was
        })
        .count()
}

/// After a ring change any lock key may have moved: every shard freezes lock grants for
/// `max_ttl + freeze_margin` at once, and is asked to move to one epoch above every shard's,
/// old and new. The shard's monitor makes that move (durably, and on the primary) at its next
/// check, in the same task as its failovers, so the two never race. Sentinel shards take their
/// epoch from Sentinel: they only freeze. Returns the shards whose epoch is raised.
fn raise_epochs(old: &Topology, shards: &[Arc<Shard>], config: &Config) -> Vec<String> {
    let top = old
        .shards
        .iter()
        .chain(shards)
        .map(|s| s.view().epoch.max(s.epoch_floor.load(Ordering::Relaxed)))
        .max()
        .unwrap_or(0);
    let until = unix_ms() + config.policy.locks.freeze().as_millis() as u64;
    let mut names = Vec::new();
    for shard in shards {
        shard
            .locks_frozen_until_ms
            .fetch_max(until, Ordering::Relaxed);
        if shard.config.sentinel.is_none() {
            shard.epoch_floor.fetch_max(top + 1, Ordering::Relaxed);
            shard.alarm.notify_one();
            names.push(shard.name.to_string());
        }
    }
    names
}
