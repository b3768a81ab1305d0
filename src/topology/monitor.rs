//! Each shard's monitor: health checks, which node is primary, replica lag, replication
//! management and failover.
//!
//! The nodes are the truth; the config file (and the state file) only say where to start.
//! Every `interval` (sooner when a data connection just failed) the monitor checks every node
//! of the shard ([`probe`]): its role, whom it follows, its link and sync state, its offset, its
//! epoch record, whether it holds data. Then, by the rules in [`judge`]:
//! - **Dead is not slow.** A refused or reset connection is evidence: `failure_threshold` of
//!   them in a row make a node dead. Silence is not: a node that keeps its connection and does
//!   not answer (a long script, a huge reply, a fork) is dead only after `down_after`, and a
//!   node answering BUSY or LOADING is alive. A dead node that answers again serves at once.
//! - **The fleet names the primary** (redis mode): of the nodes that answer as primary, the one
//!   with the highest epoch record (then data over none, then the configured primary, then the
//!   lowest address). The shard follows it, taking its epoch, or starting a new one when it
//!   records none newer than the shard's. Other primaries are made its replicas; a node is
//!   never pointed at a replica, a node recording a newer epoch is never touched, and a node
//!   holding data never follows an empty one of the same epoch.
//! - **Only a dead primary is replaced, by a replica that was in sync.** Not while a replica
//!   still hears from the primary (then this proxy alone is cut off from it), and only by a
//!   replica that followed it, link up, not in a full resync and within `max_lag`, when it last
//!   answered. When none qualifies the shard waits, unavailable, and says why.
//!
//! In mirror mode the proxy's own copies decide which replica is whole; in Sentinel mode the
//! monitor only checks health and lag: Sentinel picks primaries.

mod epoch;
mod failover;
mod judge;
mod mirror;
mod probe;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::judge::{Liveness, Patience, Track};
use self::probe::Probe;
use self::probe::Prober;
use super::link::{self, Link};
use super::{Node, Problem, Role, Shard, StateFile, View};
use crate::backend::{BackendError, Parking};
use crate::config::{Config, ReplicationMode};

/// Primary offsets kept for lag estimates.
const HISTORY: usize = 512;

pub fn spawn(shard: Arc<Shard>, config: Config, state: Arc<StateFile>) -> AbortHandle {
    let monitor = Monitor {
        shard,
        config,
        state,
        started: Instant::now(),
        rounds: 0,
        probers: HashMap::new(),
        tracks: HashMap::new(),
        history: VecDeque::new(),
        reported: HashSet::new(),
        resyncs: HashMap::new(),
        epoch_seen: false,
        primary_run: None,
        unwritten: None,
    };
    tokio::spawn(monitor.run()).abort_handle()
}

pub(super) struct Monitor {
    shard: Arc<Shard>,
    config: Config,
    state: Arc<StateFile>,
    /// When this monitor started: silence is counted from here for a node never heard.
    started: Instant,
    rounds: u64,
    /// Each node's control connection and running check, by address.
    probers: HashMap<String, Prober>,
    /// What the checks heard from each node, by address.
    tracks: HashMap<String, Track>,
    /// (when, primary offset), oldest first.
    history: VecDeque<(Instant, i64)>,
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
        loop {
            let started = Instant::now();
            self.tick().await;
            self.rounds += 1;
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

    fn mode(&self) -> ReplicationMode {
        self.shard.config.replication
    }

    fn patience(&self) -> Patience {
        let h = self.config.health;
        Patience {
            failure_threshold: h.failure_threshold,
            success_threshold: h.success_threshold,
            down_after: h.down_after,
            suspect_after: h.interval * h.failure_threshold,
        }
    }

    async fn tick(&mut self) {
        let parking = self.shard.parking.clone();
        let view = self.shard.view();
        let round = self.check_all(&view).await;
        self.judge_health(&view);
        if self.sentinel() {
            // Sentinel decides; requests park until it names a new primary, or until the
            // failover bound.
            self.observe(&view, round).await;
            self.settle_parked(&parking, &view);
            self.shard.announce();
            return;
        }
        let view = match self.mode() {
            ReplicationMode::Redis => self.follow_the_fleet(&view, &parking).await,
            ReplicationMode::Mirror => view,
        };
        if !self.shard.is_confirmed() && self.primary_is_known(&view) {
            tracing::info!(shard = %self.shard.name, primary = %view.primary.addr, epoch = view.epoch, "primary confirmed by its nodes: serving");
            self.shard.confirm();
        }
        self.observe(&view, round).await;
        let problem = if self.track(&view.primary.addr).dead {
            self.failover(&view, &parking, round).await
        } else {
            // Nothing is repointed before the nodes have confirmed the primary.
            if self.mode() == ReplicationMode::Redis && self.shard.is_confirmed() {
                self.manage(&view, round).await;
            }
            self.conflict(&view)
        };
        let view = self.shard.view();
        // The primary takes writes; a node replaced as primary takes them again only once it
        // is seen following (see `observe`).
        view.primary.pool.gate().open();
        self.settle_parked(&parking, &view);
        self.shard.set_problem(problem);
        self.shard.announce();
    }

    /// Checks every node of the shard at once and takes in what comes back by the end of the
    /// round; a check that takes longer keeps running and is looked at next round. Returns
    /// when the round started.
    async fn check_all(&mut self, view: &View) -> Instant {
        let round = Instant::now();
        let backend = &self.config.backend;
        let h = self.config.health;
        // The first round waits for the nodes up to the connect timeout: the proxy takes no
        // client before it has heard them. Later ones wait an interval at most.
        let wait = if self.rounds == 0 {
            backend.connect_timeout.max(h.interval.min(backend.timeout))
        } else {
            h.interval.min(backend.timeout)
        }
        .max(Duration::from_millis(50));
        let deadline = round + wait;
        let nodes: Vec<Arc<Node>> = view.nodes().cloned().collect();
        for node in &nodes {
            self.probers.entry(node.addr.clone()).or_default().start(
                &node.addr,
                backend,
                backend.connect_timeout,
                h.down_after,
            );
        }
        for node in &nodes {
            let Some(prober) = self.probers.get_mut(&node.addr) else {
                continue;
            };
            if let Some(outcome) = prober.finish_by(deadline).await {
                self.tracks
                    .entry(node.addr.clone())
                    .or_default()
                    .record(outcome, Instant::now());
            }
        }
        let keep: HashSet<&String> = nodes.iter().map(|n| &n.addr).collect();
        self.probers.retain(|a, _| keep.contains(a));
        self.tracks.retain(|a, _| keep.contains(a));
        round
    }

    fn track(&mut self, addr: &str) -> &mut Track {
        self.tracks.entry(addr.to_string()).or_default()
    }

    /// Turns what the checks heard into each node's health. A replica found dead is marked
    /// down at once; the primary is left up (its requests park) for the failover to settle.
    fn judge_health(&mut self, view: &View) {
        let patience = self.patience();
        let (since, now) = (self.started, Instant::now());
        for (i, node) in view.nodes().enumerate() {
            let track = self.tracks.entry(node.addr.clone()).or_default();
            let was_dead = track.dead;
            let liveness = track.judge(&patience, since, now);
            let h = &node.health;
            let manner = match liveness {
                Liveness::Busy => 1,
                Liveness::Suspect => 2,
                _ => 0,
            };
            h.manner.store(manner, Ordering::Relaxed);
            if let Some(p) = &track.answer {
                h.role.store(p.role as u8, Ordering::Relaxed);
                h.offset.store(p.offset, Ordering::Relaxed);
            }
            let dead = liveness == Liveness::Dead;
            if !dead && !h.is_up() && track.answered_since_down() {
                h.up.store(true, Ordering::Relaxed);
                // Requests go to it at once, not after its connections' backoff.
                node.pool.wake();
                if was_dead {
                    tracing::warn!(shard = %self.shard.name, node = %node.addr, "node up");
                }
            } else if dead && i > 0 && h.is_up() {
                let why = track.missed.clone().unwrap_or_default();
                self.mark_down(node, &why);
            }
        }
    }

    /// Offsets, replica lag and readability, the epoch check on the primary, and which
    /// replicas were in sync at the primary's answer in this round.
    async fn observe(&mut self, view: &View, round: Instant) {
        let now = Instant::now();
        let primary = self.track(&view.primary.addr).fresh(round).cloned();
        if let Some(p) = primary.as_ref().filter(|p| p.role == Role::Primary) {
            // An offset that went back (the primary restarted) makes the older samples
            // meaningless.
            if self.history.back().is_some_and(|&(_, o)| p.offset < o) {
                self.history.clear();
            }
            self.history.push_back((now, p.offset));
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
            // Until the nodes have confirmed the primary, nothing is written on it: a stale
            // guess must not get a fresh epoch record.
            if self.shard.is_confirmed() {
                self.check_epoch(view, p).await;
            }
        }
        if let Some(mirror) = self.shard.mirror.clone() {
            // Copies are rebuilt only from a primary that answered, in a confirmed shard: a
            // rebuild starts by emptying the copy.
            let source_ok = self.shard.is_confirmed() && primary.is_some();
            self.judge_mirrors(&mirror, view, source_ok);
            return;
        }
        let primary_answered = primary.is_some_and(|p| p.role == Role::Primary);
        let max_lag = self.config.max_lag;
        for node in &view.replicas {
            let lag = self.read_lag(node.health.offset(), now);
            // For promotion, a lag that is not known is too much.
            let sync_lag = self.lag(node.health.offset(), now).unwrap_or(Duration::MAX);
            node.health
                .lag_ms
                .store(lag.as_millis() as u64, Ordering::Relaxed);
            let track = self.tracks.entry(node.addr.clone()).or_default();
            let fresh = track.fresh(round).cloned();
            let follows = match &fresh {
                Some(p) => judge::in_sync(&view.primary.addr, p, Duration::ZERO, Duration::MAX),
                // Not answering this time: judged by what it last said, and its lag grows.
                None => node.health.is_readable(),
            };
            if primary_answered {
                track.in_sync = match &fresh {
                    Some(p) => judge::in_sync(&view.primary.addr, p, sync_lag, max_lag),
                    // Silent this round: in sync while what it last had is recent enough
                    // (its lag grows as the primary moves on).
                    None => track.in_sync && sync_lag <= max_lag,
                };
            }
            if track.dead {
                track.in_sync = false;
            }
            if follows {
                // A node replaced as primary takes writes again only as a replica.
                node.pool.gate().open();
            }
            let readable = node.health.is_up() && follows && lag <= max_lag;
            node.health.readable.store(readable, Ordering::Relaxed);
            if let (Some(p), ReplicationMode::Redis) = (&fresh, self.mode()) {
                if !follows {
                    let what = match (&p.role, &p.master) {
                        (Role::Replica, Some(m)) if *m != view.primary.addr => {
                            format!("replica follows {m}, not the primary {}", view.primary.addr)
                        }
                        (Role::Replica, _) if p.syncing => "replica is in a full resync".into(),
                        (Role::Replica, _) => "replica has its replication link down".into(),
                        _ => "replica answers as a primary".into(),
                    };
                    self.report(&node.addr, &what);
                } else {
                    self.reported.retain(|r| !r.starts_with(&node.addr));
                }
            }
        }
    }

    /// How long ago the primary passed `offset`: zero when the replica has everything the
    /// primary had at its last check; `None` when it is behind every offset sampled (since the
    /// primary last changed), so how far behind is not known.
    fn lag(&self, offset: i64, now: Instant) -> Option<Duration> {
        let Some(&(_, latest)) = self.history.back() else {
            return Some(Duration::ZERO);
        };
        if offset >= latest {
            return Some(Duration::ZERO);
        }
        match self.history.iter().position(|(_, o)| *o > offset) {
            Some(0) => None,
            Some(i) => Some(now.saturating_duration_since(self.history[i].0)),
            None => Some(Duration::ZERO),
        }
    }

    /// [`Self::lag`] for reads: behind every sample counts as behind since the oldest.
    fn read_lag(&self, offset: i64, now: Instant) -> Duration {
        self.lag(offset, now).unwrap_or_else(|| {
            self.history
                .front()
                .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at))
        })
    }

    /// Whether the nodes have said enough to serve from the view's primary: it answered as a
    /// primary, no node that answered records a newer epoch, and either every node has given a
    /// full answer (or refuses connections, or is dead) or a replica follows it with its link
    /// up. A node that has not answered could be a primary of a newer epoch (a proxy started
    /// from a stale config while the real primary is busy or loading); a replica following this
    /// one says it is not.
    fn primary_is_known(&self, view: &View) -> bool {
        let answer = |addr: &str| self.tracks.get(addr).and_then(Track::live_answer);
        let Some(primary) = answer(&view.primary.addr) else {
            return false;
        };
        if self.mode() == ReplicationMode::Mirror {
            return true;
        }
        if primary.role != Role::Primary {
            return false;
        }
        let replicas: Vec<&Probe> = view
            .replicas
            .iter()
            .filter_map(|n| answer(&n.addr))
            .collect();
        let all_known = view
            .nodes()
            .all(|n| self.tracks.get(&n.addr).is_some_and(Track::known));
        judge::confirms(
            &view.primary.addr,
            primary,
            &replicas,
            all_known,
            view.epoch,
        )
    }

    /// Whether the nodes disagree about who is primary (redis mode): two answer as primary,
    /// or none does while the one the shard follows answers as a replica.
    fn conflict(&mut self, view: &View) -> Problem {
        if self.mode() != ReplicationMode::Redis {
            return Problem::None;
        }
        let primaries: Vec<&str> = view
            .nodes()
            .filter(|n| {
                self.tracks
                    .get(&n.addr)
                    .and_then(Track::live_answer)
                    .is_some_and(|p| p.role == Role::Primary)
            })
            .map(|n| n.addr.as_str())
            .collect();
        let problem = match primaries.len() {
            0 if self
                .tracks
                .get(&view.primary.addr)
                .and_then(Track::live_answer)
                .is_some_and(|p| p.role == Role::Replica) =>
            {
                Problem::NoPrimary
            }
            0 | 1 => Problem::None,
            _ => Problem::TwoPrimaries,
        };
        if problem != Problem::None {
            let text = format!(
                "the nodes disagree about the primary ({}): {primaries:?}",
                problem.code()
            );
            self.report("shard", &text);
        }
        problem
    }

    fn report(&mut self, addr: &str, what: &str) {
        let key = format!("{addr} {what}");
        if self.reported.insert(key) {
            tracing::warn!(shard = %self.shard.name, node = %addr, "{what}");
        }
    }

    /// One command on a node's control connection (a new one if a check is using it).
    async fn command(&mut self, addr: &str, args: &[&[u8]]) -> Result<String, String> {
        let mut link = self.control_link(addr).await?;
        let reply = link::ok(link.call(args).await?)?;
        self.give_back(addr, link);
        Ok(link::text(&reply).unwrap_or_default())
    }

    /// The node's control connection when no check is using it, else a new one; replies within
    /// the backend timeout.
    async fn control_link(&mut self, addr: &str) -> Result<Link, String> {
        let backend = &self.config.backend;
        let prober = self.probers.entry(addr.to_string()).or_default();
        let mut link = match prober.take_idle() {
            Some(l) => l,
            None => Link::open(addr, backend.connect_timeout, backend).await?,
        };
        link.set_timeout(backend.timeout);
        Ok(link)
    }

    /// Keeps `link` for the node's next check (dropped if one started meanwhile).
    fn give_back(&mut self, addr: &str, link: Link) {
        if let Some(p) = self.probers.get_mut(addr) {
            p.put_idle(link);
        }
    }

    /// A node's role (`master` or `slave`) and epoch record, asked right now: `None` when the
    /// record cannot be read. A record shardis would not have written reads as the largest, so
    /// nothing is pointed at it.
    async fn recheck(
        &mut self,
        addr: &str,
        shard_epoch: u64,
    ) -> Result<(String, Option<Option<u64>>), String> {
        use redis_protocol::resp2::types::OwnedFrame;
        let mut link = self.control_link(addr).await?;
        let commands: [&[&[u8]]; 2] = [&[b"ROLE"], &[b"MGET", crate::command::lock::EPOCH_KEY]];
        let replies = link.call_many(&commands).await?;
        self.give_back(addr, link);
        let [role, record] = &replies[..] else {
            return Err("unexpected replies".into());
        };
        let role = match link::ok(role.clone())? {
            OwnedFrame::Array(items) => items.first().and_then(link::text).unwrap_or_default(),
            _ => String::new(),
        };
        let epoch = match record {
            OwnedFrame::Array(v) => Some(v.first().and_then(link::text).map(|r| {
                r.parse::<u64>()
                    .ok()
                    .filter(|e| judge::credible(*e, shard_epoch))
                    .unwrap_or(u64::MAX)
            })),
            // A replica with its link down that serves no stale data (MASTERDOWN): unread.
            OwnedFrame::Error(_) => None,
            _ => return Err("unexpected MGET reply".into()),
        };
        Ok((role, epoch))
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
        let primary = &view.primary;
        if parking.oldest().is_some_and(|t| t.elapsed() >= bound) {
            if primary.health.is_up() {
                self.mark_down(primary, "no primary within the failover time");
            }
            self.fail_parked(parking, "no primary within the failover time");
        }
    }

    async fn resend_parked(&self, parking: &Parking, to: &Arc<Node>) {
        for p in parking.take() {
            to.pool.conn_at(p.proto, p.index).resend(p.request).await;
        }
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

impl Monitor {
    /// Marks `node` down: requests to it fail at once until it answers again.
    fn mark_down(&mut self, node: &Node, why: &str) {
        let track = self.track(&node.addr);
        track.downed_at = Some(Instant::now());
        node.health.set_down_why(track.missed.as_deref());
        node.health.up.store(false, Ordering::Relaxed);
        node.health.readable.store(false, Ordering::Relaxed);
        tracing::warn!(shard = %self.shard.name, node = %node.addr, "node down: {why}");
    }
}
