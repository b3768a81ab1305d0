//! A new configuration applied to a running proxy, without dropping a client.
//!
//! A shard whose nodes and settings did not change is kept as it is (its connections, view,
//! parked requests, mirror, lock freeze and monitor); only its weight on the ring may change.
//! A shard whose nodes or node-level settings changed is rebuilt, starting from the epoch,
//! primary, lock freeze and counters of the shard it replaces. A ring change is measured on
//! 100,000 sample keys; the shards that gain keys move to an epoch above every shard's, and
//! freeze lock grants, so a lock key that lands on another shard never gets a token below one
//! issued for it before, nor a grant while a lease given elsewhere may still run.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::{build_shard, unix_ms, Carried, Shard, Topology, View};
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
    /// `old`). Refuses changes that need a restart. Needs a tokio runtime.
    pub fn reload(&self, old: &Config, new: &Config) -> Result<Reloaded, String> {
        for (key, changed) in [
            ("listen", old.listen != new.listen),
            ("workers", old.workers != new.workers),
            ("metrics_listen", old.metrics_listen != new.metrics_listen),
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
                    let (shard, m) =
                        build_shard(s, new, &self.state, Some(Carried::from(&self.shards[i])));
                    shards.push(shard);
                    monitors.push(m);
                    rebuilt += 1;
                }
                None => {
                    let (shard, m) = build_shard(s, new, &self.state, None);
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
        let (moved, gaining) = moved_keys(self, &router, &shards);
        report.push_str(&format!("; {moved} of {SAMPLE_KEYS} sample keys move"));
        if !gaining.is_empty() {
            let raised = raise_epochs(self, &shards, &gaining, new)?;
            if !raised.is_empty() {
                report.push_str(&format!(
                    "; lock grants frozen and epochs raised on {}",
                    raised.join(", ")
                ));
            }
        }
        Ok(Reloaded {
            topology: Topology {
                router,
                shards,
                monitors: Mutex::new(monitors),
                state: self.state.clone(),
            },
            report,
        })
    }
}

/// Routes the sample keys through both rings: how many change shard, and which shards
/// (indexes into `shards`) gain some.
fn moved_keys(
    old: &Topology,
    router: &crate::routing::Router,
    shards: &[Arc<Shard>],
) -> (usize, BTreeSet<usize>) {
    let mut moved = 0;
    let mut gaining = BTreeSet::new();
    for i in 0..SAMPLE_KEYS {
        let key = format!("key:{i}");
        let was = &old.shards[old.router.shard_of(key.as_bytes())].name;
        let now = router.shard_of(key.as_bytes());
        if shards[now].name != *was {
            moved += 1;
            gaining.insert(now);
        }
    }
    (moved, gaining)
}

/// Moves every shard in `gaining` to one epoch above every shard's, old and new, and freezes
/// its lock grants for `max_ttl + freeze_margin`. Sentinel shards take their epoch from
/// Sentinel: they only freeze. Returns the shards' names.
fn raise_epochs(
    old: &Topology,
    shards: &[Arc<Shard>],
    gaining: &BTreeSet<usize>,
    config: &Config,
) -> Result<Vec<String>, String> {
    let top = old
        .shards
        .iter()
        .chain(shards)
        .map(|s| s.view().epoch)
        .max()
        .unwrap_or(0);
    let freeze = config.policy.locks.freeze();
    let mut names = Vec::new();
    for &i in gaining {
        let shard = &shards[i];
        let view = shard.view();
        if shard.config.sentinel.is_some() {
            let until = unix_ms() + freeze.as_millis() as u64;
            shard
                .locks_frozen_until_ms
                .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
        } else {
            shard.begin_epoch(&old.state, top + 1, &view.primary.addr, freeze)?;
            shard.view.store(Arc::new(View {
                epoch: top + 1,
                primary: view.primary.clone(),
                replicas: view.replicas.clone(),
            }));
            // The monitor writes the new epoch on the primary at its next check; grants wait
            // for it (a primary whose record differs from the proxy's epoch grants nothing).
            shard.alarm.notify_one();
        }
        names.push(shard.name.to_string());
    }
    Ok(names)
}
