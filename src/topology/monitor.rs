//! Each shard's monitor: health checks, replica lag, replication management and failover.
//!
//! Every `interval` (sooner when a data connection just failed) the monitor sends each node
//! PING and INFO replication on its own control connection. `failure_threshold` failed checks
//! in a row make a node down, `success_threshold` good ones bring it back. Then, in order:
//! - a replica is readable when it is up, follows the current primary and is within `max_lag`
//!   (the time since the primary's offset passed the replica's, from a short offset history);
//! - redis mode: a replica that follows no one or another node is pointed at the primary
//!   (`manage_replication`), and a node that answers as a second primary is always demoted;
//! - the primary down: the healthy replica with the largest offset is promoted, the epoch grows
//!   and is written to the state file before any write reaches the new primary, the other
//!   replicas follow it, and requests parked meanwhile are sent there.
//!
//! In Sentinel mode the monitor only checks health and lag: Sentinel picks primaries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::link::{self, split_addr, Link};
use super::state::ShardState;
use super::{Node, Role, Shard, StateFile, View};
use crate::backend::mirror::{Sync, DUMP_SCRIPT};
use crate::backend::{BackendError, Mirror, Parking, Target};
use crate::config::{BackendSettings, Config, ReplicationMode};
use crate::resp::{encode, Proto};

use crate::lock::EPOCH_KEY;

/// Primary offsets kept for lag estimates.
const HISTORY: usize = 512;

pub fn spawn(shard: Arc<Shard>, config: Config, state: Arc<StateFile>) -> AbortHandle {
    let monitor = Monitor {
        shard,
        config,
        state,
        links: HashMap::new(),
        counts: HashMap::new(),
        history: VecDeque::new(),
        deposed: HashSet::new(),
        reported: HashSet::new(),
        resyncs: HashMap::new(),
        epoch_seen: false,
        primary_run: None,
        unwritten: None,
    };
    tokio::spawn(monitor.run()).abort_handle()
}

/// What one check of a node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Probe {
    pub role: Role,
    /// The primary a replica follows, `host:port`.
    pub master: Option<String>,
    pub link_up: bool,
    /// A primary's own offset; how far a replica got.
    pub offset: i64,
    /// The epoch recorded on the node, if any.
    pub epoch: Option<u64>,
    /// The node process's id (INFO server): it changes when the node restarts.
    pub run_id: Option<String>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    fails: u32,
    oks: u32,
}

struct Monitor {
    shard: Arc<Shard>,
    config: Config,
    state: Arc<StateFile>,
    links: HashMap<String, Link>,
    counts: HashMap<String, Counts>,
    /// (when, primary offset), oldest first.
    history: VecDeque<(Instant, i64)>,
    /// Nodes this monitor demoted from primary: put back as replicas even without
    /// `manage_replication`.
    deposed: HashSet<String>,
    /// Problems already logged, so each is logged once until it changes.
    reported: HashSet<String>,
    /// Mirror mode: replicas being resynced.
    resyncs: HashMap<String, tokio::task::JoinHandle<()>>,
    /// A primary of this shard has shown its epoch key since the monitor started: one
    /// without it now lost its data.
    epoch_seen: bool,
    /// The primary (address, `run_id`) at the last check: a new run id is a restart.
    primary_run: Option<(String, String)>,
    /// An epoch this monitor failed to write on the primary: written again, not raised again.
    unwritten: Option<u64>,
}

impl Monitor {
    async fn run(mut self) {
        let interval = self.config.health.interval;
        let parking = self.shard.parking.clone();
        loop {
            let started = Instant::now();
            self.tick(&parking).await;
            let next = started + interval;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                // A data connection failed: check now rather than at the next tick, but not
                // more often than every interval / 4.
                _ = self.shard.alarm.notified() => {
                    tokio::time::sleep_until(started + interval / 4).await;
                }
            }
        }
    }

    fn sentinel(&self) -> bool {
        self.shard.config.sentinel.is_some()
    }

    async fn tick(&mut self, parking: &Parking) {
        let view = self.shard.view();
        let nodes: Vec<Arc<Node>> = std::iter::once(view.primary.clone())
            .chain(view.replicas.iter().cloned())
            .collect();
        let probes = self.probe_all(&nodes).await;
        let now = Instant::now();
        let mut primary_failed = false;
        for (i, (node, probe)) in nodes.iter().zip(&probes).enumerate() {
            let failed = self.count(node, probe.as_ref().ok(), i == 0);
            primary_failed |= i == 0 && failed;
        }
        // The primary's offset history, for replica lag.
        if let Ok(p) = &probes[0] {
            if p.role == Role::Primary {
                self.history.push_back((now, p.offset));
                if self.history.len() > HISTORY {
                    self.history.pop_front();
                }
            }
            if p.role == Role::Primary {
                self.check_epoch(&view, p).await;
            }
        }
        if let Some(mirror) = self.shard.mirror.clone() {
            self.judge_mirrors(&mirror, &view);
        } else {
            for (node, probe) in nodes.iter().zip(&probes).skip(1) {
                self.judge_replica(&view, node, probe.as_ref().ok(), now);
            }
        }
        if self.sentinel() {
            // Sentinel decides; requests park until it names a new primary, or until the
            // failover bound.
            self.settle_parked(parking, &view);
            return;
        }
        if primary_failed {
            self.failover(&view, parking).await;
        } else if self.shard.config.replication == ReplicationMode::Redis {
            for (node, probe) in nodes.iter().zip(&probes).skip(1) {
                if let Ok(p) = probe {
                    self.manage(&view, node, p).await;
                }
            }
        }
        self.settle_parked(parking, &self.shard.view());
    }

    /// Checks every node at once; a node that does not answer within the interval (or the
    /// backend timeout, if shorter) failed its check.
    async fn probe_all(&mut self, nodes: &[Arc<Node>]) -> Vec<Result<Probe, String>> {
        let timeout = self
            .config
            .health
            .interval
            .min(self.config.backend.timeout)
            .max(Duration::from_millis(50));
        let mut set = JoinSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let addr = node.addr.clone();
            let link = self.links.remove(&addr);
            let backend = self.config.backend.clone();
            set.spawn(async move {
                let result = probe(link, &addr, timeout, &backend).await;
                (i, addr, result)
            });
        }
        let mut results: Vec<Result<Probe, String>> = (0..nodes.len())
            .map(|_| Err("not checked".into()))
            .collect();
        while let Some(joined) = set.join_next().await {
            let Ok((i, addr, result)) = joined else {
                continue;
            };
            results[i] = match result {
                Ok((link, probe)) => {
                    self.links.insert(addr, link);
                    Ok(probe)
                }
                Err(e) => Err(e),
            };
        }
        results
    }

    /// Counts one check; flips the node's health past a threshold. A primary is not marked
    /// down here: it stays the target (its requests park) until a failover replaces it or
    /// there is nothing to fail over to. Returns whether the node is past its failure
    /// threshold.
    fn count(&mut self, node: &Node, probe: Option<&Probe>, is_primary: bool) -> bool {
        let h = self.config.health;
        let counts = self.counts.entry(node.addr.clone()).or_default();
        let up = node.health.is_up();
        match probe {
            Some(p) => {
                counts.fails = 0;
                counts.oks = counts.oks.saturating_add(1);
                node.health.role.store(p.role as u8, Ordering::Relaxed);
                node.health.offset.store(p.offset, Ordering::Relaxed);
                if !up && counts.oks >= h.success_threshold {
                    node.health.up.store(true, Ordering::Relaxed);
                    tracing::warn!(shard = %self.shard.name, node = %node.addr, "node up");
                }
                false
            }
            None => {
                counts.oks = 0;
                counts.fails = counts.fails.saturating_add(1);
                let failed = counts.fails >= h.failure_threshold;
                if up && failed && !is_primary {
                    mark_down(&self.shard.name, node, counts.fails);
                }
                failed
            }
        }
    }
}

impl Monitor {
    /// Mirror mode: a replica is readable while in sync; one that is down turns stale, and a
    /// stale one that is up gets resynced.
    fn judge_mirrors(&mut self, mirror: &Arc<Mirror>, view: &View) {
        self.resyncs.retain(|_, task| !task.is_finished());
        for node in &view.replicas {
            let Some(target) = mirror.target(&node.addr) else {
                continue;
            };
            node.health
                .offset
                .store(target.applied() as i64, Ordering::Relaxed);
            if !node.health.is_up() {
                target.mark_stale(&self.shard.name, "down");
            } else if target.state() == Sync::Stale && !self.resyncs.contains_key(&node.addr) {
                let task = tokio::spawn(resync(
                    self.shard.name.clone(),
                    mirror.clone(),
                    target.clone(),
                    view.primary.clone(),
                    self.config.backend.clone(),
                ));
                self.resyncs.insert(node.addr.clone(), task);
            }
            let readable = node.health.is_up() && target.state() == Sync::InSync;
            node.health.readable.store(readable, Ordering::Relaxed);
        }
    }

    /// Decides whether a replica may serve reads, from its last check and the primary's
    /// offset history.
    fn judge_replica(&mut self, view: &View, node: &Node, probe: Option<&Probe>, now: Instant) {
        let lag = self.lag(node.health.offset(), now);
        node.health
            .lag_ms
            .store(lag.as_millis() as u64, Ordering::Relaxed);
        let follows = match probe {
            Some(p) => {
                let ok = p.role == Role::Replica
                    && p.master.as_deref() == Some(view.primary.addr.as_str())
                    && p.link_up;
                if !ok && self.shard.config.replication == ReplicationMode::Redis {
                    let what = match (&p.role, &p.master) {
                        (Role::Replica, Some(m)) if *m != view.primary.addr => {
                            format!("follows {m}, not the primary {}", view.primary.addr)
                        }
                        (Role::Replica, _) => "has its replication link down".to_string(),
                        _ => "is not a replica".to_string(),
                    };
                    self.report(&node.addr, &format!("replica {what}"));
                } else {
                    self.reported.remove(&node.addr);
                }
                ok
            }
            // Not answering this time: judged by what it last said, and its lag grows.
            None => node.health.is_readable(),
        };
        let readable = node.health.is_up() && follows && lag <= self.config.max_lag;
        node.health.readable.store(readable, Ordering::Relaxed);
    }

    /// How long ago the primary passed `offset`: zero when the replica has everything the
    /// primary had at its last check.
    fn lag(&self, offset: i64, now: Instant) -> Duration {
        let Some(&(_, latest)) = self.history.back() else {
            return Duration::ZERO;
        };
        if offset >= latest {
            return Duration::ZERO;
        }
        match self.history.iter().find(|(_, o)| *o > offset) {
            Some((at, _)) => now.saturating_duration_since(*at),
            None => Duration::ZERO,
        }
    }

    fn report(&mut self, addr: &str, what: &str) {
        let key = format!("{addr} {what}");
        if self.reported.insert(key) {
            tracing::warn!(shard = %self.shard.name, node = %addr, "{what}");
        }
    }

    /// Compares the epoch the primary records with the proxy's. The primary's record is what
    /// lock grants check, and it is replicated with the data, so:
    /// - higher: another proxy failed over, or our state file was lost: take it (and freeze
    ///   grants), so epochs never go back;
    /// - lower, or missing where this monitor's own write of it failed: write it (again);
    /// - missing on a fresh fleet (epoch 0, never seen): write it;
    /// - missing after it was seen or with a recorded epoch, or the primary restarted (a new
    ///   `run_id`, so it may have loaded older data): the lock counters may have gone back
    ///   with its data. A new epoch keeps tokens growing (redis and mirror modes). In Sentinel
    ///   mode the epoch is Sentinel's: it is only reported.
    async fn check_epoch(&mut self, view: &View, probe: &Probe) {
        let name = self.shard.name.clone();
        let sentinel = self.sentinel();
        let restarted = match (&self.primary_run, &probe.run_id) {
            (Some((addr, before)), Some(now)) => *addr == view.primary.addr && before != now,
            _ => false,
        };
        if let Some(run) = &probe.run_id {
            self.primary_run = Some((view.primary.addr.clone(), run.clone()));
        }
        let lost = restarted || (probe.epoch.is_none() && self.epoch_seen);
        let floor = self.shard.epoch_floor.load(Ordering::Relaxed);
        let write = match probe.epoch {
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
                let stored = self.state.get(&name).map_or(0, |s| s.epoch);
                let epoch = view.epoch.max(stored).max(probe.epoch.unwrap_or(0)) + 1;
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
            match self.shard.record_epoch(&view.primary, epoch).await {
                Ok(()) => {
                    self.epoch_seen = true;
                    self.unwritten = None;
                }
                Err(e) => {
                    // Written again at the next check, not raised again.
                    self.unwritten = Some(epoch);
                    tracing::warn!(shard = %name, epoch, "cannot record the epoch on the primary: {e}")
                }
            }
        }
    }

    /// Moves the shard to `epoch` on the same nodes, durably, and freezes lock grants; false
    /// when the state file could not record it (nothing changed then).
    fn raise_epoch(&mut self, view: &View, epoch: u64, why: &str) -> bool {
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

    /// Redis mode: keeps each replica following the primary.
    async fn manage(&mut self, view: &View, node: &Node, probe: &Probe) {
        let follows = probe.role == Role::Replica
            && probe.master.as_deref() == Some(view.primary.addr.as_str());
        if follows {
            self.deposed.remove(&node.addr);
            return;
        }
        let allowed = self.shard.config.manage_replication
            || probe.role == Role::Primary && self.deposed.contains(&node.addr);
        if !allowed {
            return;
        }
        let (host, port) = split_addr(&view.primary.addr);
        match self
            .command(
                &node.addr,
                &[b"REPLICAOF", host.as_bytes(), port.as_bytes()],
            )
            .await
        {
            Ok(_) => tracing::warn!(
                shard = %self.shard.name,
                node = %node.addr,
                "pointed at the primary {}",
                view.primary.addr
            ),
            Err(e) => tracing::warn!(
                shard = %self.shard.name,
                node = %node.addr,
                "REPLICAOF {} failed: {e}",
                view.primary.addr
            ),
        }
    }

    /// One command on a node's control connection.
    async fn command(&mut self, addr: &str, args: &[&[u8]]) -> Result<String, String> {
        let timeout = self.config.backend.timeout;
        let mut link = match self.links.remove(addr) {
            Some(l) => l,
            None => Link::open(addr, timeout, &self.config.backend).await?,
        };
        let reply = link::ok(link.call(args).await?)?;
        self.links.insert(addr.to_string(), link);
        Ok(link::text(&reply).unwrap_or_default())
    }

    /// The primary failed its checks: promote the healthy replica with the most data.
    async fn failover(&mut self, view: &View, parking: &Parking) {
        let mirror = self.shard.config.replication == ReplicationMode::Mirror;
        let mut best: Option<(&Arc<Node>, i64)> = None;
        for node in &view.replicas {
            if !node.health.is_up() {
                continue;
            }
            // In mirror mode a stale replica has lost writes; it must not become primary.
            if mirror && !node.health.is_readable() {
                continue;
            }
            let offset = node.health.offset();
            if best.is_none_or(|(_, o)| offset > o) {
                best = Some((node, offset));
            }
        }
        let Some((chosen, offset)) = best else {
            if view.primary.health.is_up() {
                self.mark_down(&view.primary);
                tracing::error!(
                    shard = %self.shard.name,
                    "primary {} down and no healthy replica to promote",
                    view.primary.addr
                );
            }
            self.fail_parked(parking, "its primary is down and no replica can take over");
            return;
        };
        let chosen = chosen.clone();
        if let Some(m) = &self.shard.mirror {
            // Every copy the old primary's replies queued for it must land first.
            let Some(target) = m.target(&chosen.addr) else {
                return;
            };
            let drained = tokio::time::timeout(self.config.backend.timeout, m.barrier(&target));
            if !matches!(drained.await, Ok(Ok(Ok(_)))) || target.state() != Sync::InSync {
                tracing::error!(shard = %self.shard.name, node = %chosen.addr, "cannot promote: its copies did not drain");
                return;
            }
        }
        if !mirror {
            if let Err(e) = self
                .command(&chosen.addr, &[b"REPLICAOF", b"NO", b"ONE"])
                .await
            {
                tracing::error!(
                    shard = %self.shard.name,
                    node = %chosen.addr,
                    "cannot promote: REPLICAOF NO ONE failed: {e}"
                );
                return;
            }
        }
        let stored = self.state.get(&self.shard.name).map_or(0, |s| s.epoch);
        let epoch = view.epoch.max(stored) + 1;
        // Durable before any write reaches the new primary; no lock is granted until every
        // lease the old primary gave has run out.
        let freeze = self.config.policy.locks.freeze();
        if let Err(e) = self
            .shard
            .begin_epoch(&self.state, epoch, &chosen.addr, freeze)
        {
            tracing::error!(shard = %self.shard.name, "cannot record the failover: {e}");
            return;
        }
        let old = view.primary.clone();
        self.mark_down(&old);
        let replicas: Vec<Arc<Node>> = view
            .replicas
            .iter()
            .filter(|n| !Arc::ptr_eq(n, &chosen))
            .cloned()
            .chain(std::iter::once(old.clone()))
            .collect();
        chosen.health.readable.store(true, Ordering::Relaxed);
        if let Some(m) = &self.shard.mirror {
            m.set_source(&chosen.addr);
            m.remove_target(&chosen.addr);
            // The old primary comes back stale and is resynced before it serves.
            m.add_target(&old.addr, old.pool.conn(Proto::Resp2, 0).clone());
        }
        // Before any parked request reaches it: a lock grant parked under the old epoch then
        // finds the new one recorded and is refused, instead of minting an old-epoch token.
        if let Err(e) = self.shard.record_epoch(&chosen, epoch).await {
            tracing::warn!(shard = %self.shard.name, "cannot record the epoch on the new primary: {e}");
            // Re-sent there, a parked lock grant would find the old epoch and mint a token of
            // it: the parked requests fail instead (the next check writes the epoch again).
            self.unwritten = Some(epoch);
            self.fail_parked(parking, "the new primary did not take the new epoch record");
        }
        // Parked requests go first, so each client's requests keep their order; any parked
        // in the instant before the switch follow right after it.
        parking.accept_from(Some(Arc::from(chosen.addr.as_str())));
        self.resend_parked(parking, &chosen).await;
        self.shard.view.store(Arc::new(View {
            epoch,
            primary: chosen.clone(),
            replicas: replicas.clone(),
        }));
        self.shard.failovers.fetch_add(1, Ordering::Relaxed);
        self.history.clear();
        self.deposed.insert(old.addr.clone());
        tracing::warn!(
            shard = %self.shard.name,
            from = %old.addr,
            to = %chosen.addr,
            epoch,
            offset,
            "failover"
        );
        self.resend_parked(parking, &chosen).await;
        if !mirror {
            let (host, port) = split_addr(&chosen.addr);
            for node in replicas.iter().filter(|n| n.health.is_up()) {
                let args: [&[u8]; 3] = [b"REPLICAOF", host.as_bytes(), port.as_bytes()];
                if let Err(e) = self.command(&node.addr, &args).await {
                    tracing::warn!(shard = %self.shard.name, node = %node.addr, "REPLICAOF failed: {e}");
                }
            }
        }
    }

    /// Parked requests past the failover bound fail (each connection re-sends its own when it
    /// reconnects; a failover re-sends them to the new primary).
    fn settle_parked(&mut self, parking: &Parking, view: &View) {
        if parking.is_empty() {
            return;
        }
        let h = self.config.health;
        let extra = self.shard.park_extra_ms.load(Ordering::Relaxed);
        let bound = h.interval * h.failure_threshold
            + Duration::from_secs(2)
            + Duration::from_millis(extra);
        // Each connection sends what it parked itself once it reconnects; here only the
        // deadline is kept.
        let primary = &view.primary;
        if parking.oldest().is_some_and(|t| t.elapsed() >= bound) {
            if primary.health.is_up() {
                self.mark_down(primary);
            }
            self.fail_parked(parking, "no primary within the failover time");
        }
    }

    async fn resend_parked(&self, parking: &Parking, to: &Arc<Node>) {
        for p in parking.take() {
            to.pool.conn_at(p.proto, p.index).resend(p.request).await;
        }
    }

    /// Marks `node` down, logging the failed checks counted for it.
    fn mark_down(&self, node: &Node) {
        let fails = self.counts.get(&node.addr).map_or(0, |c| c.fails);
        mark_down(&self.shard.name, node, fails);
    }

    fn fail_parked(&self, parking: &Parking, reason: &str) {
        for p in parking.take() {
            p.request.fail(BackendError::ShardDown {
                shard: self.shard.name.clone(),
                reason: reason.to_string(),
            });
        }
    }
}

/// Mirror mode: rebuilds a stale replica from the primary. It is emptied, then every key is
/// DUMPed on the primary's data connection (so the RESTOREs are ordered with the writes
/// copied meanwhile, which it gets again from now on), and it is in sync once all of that is
/// confirmed.
async fn resync(
    shard: Arc<str>,
    mirror: Arc<Mirror>,
    target: Arc<Target>,
    primary: Arc<Node>,
    backend: BackendSettings,
) {
    tracing::warn!(shard = %shard, node = %target.addr, "mirror replica resync started");
    match resync_steps(&mirror, &target, &primary, &backend).await {
        Ok(keys) => {
            tracing::warn!(shard = %shard, node = %target.addr, keys, "mirror replica in sync")
        }
        Err(e) => {
            target.mark_stale(&shard, &format!("resync failed: {e}"));
        }
    }
}

async fn resync_steps(
    mirror: &Mirror,
    target: &Arc<Target>,
    primary: &Node,
    backend: &BackendSettings,
) -> Result<usize, String> {
    target.set_state(Sync::Resyncing);
    let mut flush = bytes::BytesMut::new();
    encode::command(&mut flush, [&b"FLUSHALL"[..]].into_iter());
    mirror.push_to(target, flush.freeze());
    let timeout = backend.timeout;
    let mut link = Link::open(&primary.addr, timeout, backend).await?;
    let conn = primary.pool.conn(Proto::Resp2, 0).clone();
    let mut cursor = b"0".to_vec();
    let mut copied = 0;
    loop {
        let reply = link::ok(link.call(&[b"SCAN", &cursor, b"COUNT", b"200"]).await?)?;
        let OwnedFrame::Array(parts) = reply else {
            return Err("SCAN: not an array".into());
        };
        let [OwnedFrame::BulkString(next), OwnedFrame::Array(keys)] = &parts[..] else {
            return Err("SCAN: unexpected reply".into());
        };
        let keys: Vec<bytes::Bytes> = keys
            .iter()
            .filter_map(|k| match k {
                OwnedFrame::BulkString(k) => Some(bytes::Bytes::from(k.clone())),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            copied += keys.len();
            let count = keys.len().to_string();
            let mut request = bytes::BytesMut::new();
            let args: Vec<&[u8]> = [&b"EVAL"[..], DUMP_SCRIPT, count.as_bytes()]
                .into_iter()
                .chain(keys.iter().map(|k| &k[..]))
                .collect();
            encode::command(&mut request, args.into_iter());
            let rx = conn
                .send_resync(request.freeze(), target.clone(), keys)
                .await;
            match rx.await {
                Ok(Ok(frame)) if !crate::resp::reply::is_error(&frame) => {}
                Ok(Ok(frame)) => {
                    return Err(String::from_utf8_lossy(&frame).trim_end().to_string())
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("the primary connection went away".into()),
            }
        }
        if target.state() == Sync::Stale {
            return Err("a copy failed meanwhile".into());
        }
        if next.as_slice() == b"0" {
            break;
        }
        cursor = next.clone();
    }
    match mirror.barrier(target).await {
        Ok(Ok(_)) if target.finish_resync() => Ok(copied),
        _ => Err("a copy failed".into()),
    }
}

/// One health check: PING, INFO replication and the recorded epoch, on the node's control
/// connection (opened when there is none). Any reply to PING means the node is alive.
async fn probe(
    link: Option<Link>,
    addr: &str,
    timeout: Duration,
    backend: &BackendSettings,
) -> Result<(Link, Probe), String> {
    let mut link = match link {
        Some(l) => l,
        None => Link::open(addr, timeout, backend).await?,
    };
    link.call(&[b"PING"]).await?;
    let info = link::ok(link.call(&[b"INFO", b"server", b"replication"]).await?)?;
    let info = link::text(&info).unwrap_or_default();
    // A failed call leaves the connection out of step: `?` drops it. An error reply (LOADING)
    // fails the check rather than reading as "no epoch recorded".
    // MGET rather than GET, so that the GETs a node serves (cmdstat_get) are all clients'.
    let epoch = match link::ok(link.call(&[b"MGET", EPOCH_KEY]).await?)? {
        OwnedFrame::Array(v) => v.first().and_then(link::text).and_then(|t| t.parse().ok()),
        other => return Err(format!("unexpected MGET reply: {other:?}")),
    };
    let mut probe = parse_info(&info);
    probe.epoch = epoch;
    Ok((link, probe))
}

/// The fields of INFO replication that matter here.
pub(super) fn parse_info(info: &str) -> Probe {
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for line in info.lines() {
        if let Some((k, v)) = line.trim_end().split_once(':') {
            fields.insert(k, v);
        }
    }
    let role = match fields.get("role") {
        Some(&"master") => Role::Primary,
        Some(&"slave") => Role::Replica,
        _ => Role::Unknown,
    };
    let master = match (fields.get("master_host"), fields.get("master_port")) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        _ => None,
    };
    let offset_field = if role == Role::Replica {
        "slave_repl_offset"
    } else {
        "master_repl_offset"
    };
    Probe {
        role,
        master,
        link_up: fields.get("master_link_status") == Some(&"up"),
        offset: fields
            .get(offset_field)
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1),
        epoch: None,
        run_id: fields.get("run_id").map(|r| r.to_string()),
    }
}

fn mark_down(shard: &str, node: &Node, fails: u32) {
    node.health.up.store(false, Ordering::Relaxed);
    node.health.readable.store(false, Ordering::Relaxed);
    tracing::warn!(shard, node = %node.addr, "node down after {fails} failed checks");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replication_of_a_replica_and_a_primary() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\nmaster_link_status:up\r\nslave_repl_offset:1234\r\nmaster_repl_offset:1234\r\n";
        assert_eq!(
            parse_info(replica),
            Probe {
                role: Role::Replica,
                master: Some("127.0.0.1:7001".into()),
                link_up: true,
                offset: 1234,
                epoch: None,
                run_id: None,
            }
        );
        let primary =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:99\r\n";
        let p = parse_info(primary);
        assert_eq!(
            (p.role, p.master, p.link_up, p.offset),
            (Role::Primary, None, false, 99)
        );
    }
}
