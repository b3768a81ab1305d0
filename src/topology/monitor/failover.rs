//! Changing which node is primary: following the primary the fleet names, replacing a dead
//! one, and keeping the other nodes behind the primary.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::super::link::split_addr;
use super::super::{Node, Problem, Role, View};
use super::judge::{self, Candidate, Claim};
use super::{Monitor, Probe};
use crate::backend::mirror::Sync;
use crate::backend::Parking;
use crate::config::ReplicationMode;
use crate::resp::Proto;

impl Monitor {
    /// Redis mode: makes the shard follow the primary the nodes name ([`judge::authority`]):
    /// the best-ranked node answering as primary; if none answers as one, the node the live
    /// replicas all follow. Returns the view to go on with.
    pub(super) async fn follow_the_fleet(
        &mut self,
        view: &Arc<View>,
        parking: &Parking,
    ) -> Arc<View> {
        let configured = self.shard.config.primary.as_str();
        let claims: Vec<Claim> = view
            .nodes()
            .filter_map(|n| {
                let p = self.tracks.get(&n.addr)?.live_answer()?;
                (p.role == Role::Primary).then_some(Claim {
                    addr: &n.addr,
                    probe: p,
                    epoch: p.epoch.filter(|e| judge::credible(*e, view.epoch)),
                    configured: n.addr == configured,
                })
            })
            .collect();
        let (target, recorded) = match judge::authority(&claims) {
            Some(best) => (best.addr.to_string(), best.epoch),
            None => {
                // Nobody answers as primary. The node every live replica follows, if it is one
                // of the shard's and not itself a replica, is the primary, alive or not.
                let followed: Vec<(&str, Option<u64>)> = view
                    .nodes()
                    .filter_map(|n| {
                        let p = self.tracks.get(&n.addr)?.live_answer()?;
                        Some((p.master.as_deref()?, p.epoch))
                    })
                    .collect();
                let Some(&(first, _)) = followed.first() else {
                    return view.clone();
                };
                let is_member_not_replica = view.nodes().any(|n| {
                    n.addr == first
                        && self
                            .tracks
                            .get(&n.addr)
                            .and_then(|t| t.live_answer())
                            .is_none_or(|p| p.role != Role::Replica)
                });
                if !is_member_not_replica || followed.iter().any(|(m, _)| *m != first) {
                    return view.clone();
                }
                let recorded = followed
                    .iter()
                    .filter_map(|(_, e)| *e)
                    .filter(|e| judge::credible(*e, view.epoch))
                    .max();
                (first.to_string(), recorded)
            }
        };
        if target == view.primary.addr {
            return view.clone();
        }
        let Some(node) = view.nodes().find(|n| n.addr == target).cloned() else {
            return view.clone();
        };
        let epoch = match recorded {
            Some(e) if e > view.epoch => e,
            // It records no newer epoch than the shard's: it was promoted by hand (or by a
            // proxy that failed to record it), so the lock counters it has may be behind.
            _ => match self.next_epoch(view) {
                Some(e) => e,
                None => return view.clone(),
            },
        };
        let why = if recorded.is_some_and(|e| e >= epoch) {
            "following the primary the nodes name, at the epoch it records"
        } else {
            "following the primary the nodes name, in a new epoch"
        };
        self.switch(view, &node, epoch, parking, why).await
    }

    /// Makes `to` the shard's primary at `epoch`, durably first; the node it replaces takes no
    /// more writes. Returns the new view (the old one if the state file refused the epoch).
    async fn switch(
        &mut self,
        view: &View,
        to: &Arc<Node>,
        epoch: u64,
        parking: &Parking,
        why: &str,
    ) -> Arc<View> {
        let freeze = self.config.policy.locks.freeze();
        // Durable before any write reaches the new primary; no lock is granted until every
        // lease granted under the old epoch has run out.
        if let Err(e) = self.shard.begin_epoch(&self.state, epoch, &to.addr, freeze) {
            tracing::error!(shard = %self.shard.name, "cannot record the new primary: {e}");
            return self.shard.view();
        }
        let old = view.primary.clone();
        // Replies from the old primary to requests it got before the switch would be writes it
        // loses when it becomes a replica: they fail instead.
        old.pool.gate().close();
        to.pool.gate().open();
        to.health.up.store(true, Ordering::Relaxed);
        to.health.readable.store(true, Ordering::Relaxed);
        let recorded = self
            .tracks
            .get(&to.addr)
            .and_then(|t| t.answer.as_ref()?.epoch);
        let mut written = recorded == Some(epoch);
        if !written {
            // Before any parked request reaches it: a lock grant parked under the old epoch
            // then finds the new one recorded and is refused, instead of minting an old-epoch
            // token. If it cannot be written, the parked requests fail (the next check writes
            // it again).
            written = self.write_epoch(to, epoch).await;
            if !written {
                self.fail_parked(parking, "the new primary did not take the new epoch record");
            }
        }
        // What the monitor knows of the new primary is what it just made of it: until its
        // next answer, an older answer must not let another node outrank it.
        if let Some(a) = self
            .tracks
            .get_mut(&to.addr)
            .and_then(|t| t.answer.as_mut())
        {
            a.role = Role::Primary;
            a.master = None;
            a.link_up = false;
            a.syncing = false;
            if written {
                a.epoch = Some(epoch);
            }
        }
        let replicas: Vec<Arc<Node>> = view
            .nodes()
            .filter(|n| !Arc::ptr_eq(n, to))
            .cloned()
            .collect();
        // Parked requests go first, so each client's requests keep their order; any parked in
        // the instant before the switch follow right after it.
        parking.accept_from(Some(Arc::from(to.addr.as_str())));
        self.resend_parked(parking, to).await;
        let next = Arc::new(View {
            epoch,
            primary: to.clone(),
            replicas,
        });
        self.shard.view.store(next.clone());
        self.shard.failovers.fetch_add(1, Ordering::Relaxed);
        self.history.clear();
        for t in self.tracks.values_mut() {
            t.in_sync = false;
        }
        tracing::warn!(shard = %self.shard.name, from = %old.addr, to = %to.addr, epoch, "{why}");
        self.resend_parked(parking, to).await;
        next
    }

    /// The primary is dead: promotes the fittest replica, or says why none can be promoted.
    /// Returns what keeps the shard from serving, if anything does.
    pub(super) async fn failover(
        &mut self,
        view: &View,
        parking: &Parking,
        round: Instant,
    ) -> Problem {
        let primary = view.primary.addr.clone();
        if self.next_epoch(view).is_none() {
            let why = "its primary is down and no epoch is left to start: a new primary under an old epoch could repeat fencing tokens";
            self.hold_down(view, parking, Problem::EpochsExhausted, why);
            return Problem::EpochsExhausted;
        }
        if view.replicas.is_empty() {
            self.hold_down(
                view,
                parking,
                Problem::PrimaryDown,
                "its primary is down and it has no replica",
            );
            return Problem::PrimaryDown;
        }
        let chosen = match self.mode() {
            ReplicationMode::Mirror => self.fittest_mirror(view).await,
            ReplicationMode::Redis => {
                let down_after = self.config.health.down_after;
                let witness = view.replicas.iter().find(|n| {
                    self.tracks
                        .get(&n.addr)
                        .and_then(|t| t.fresh(round))
                        .is_some_and(|p| judge::vouches_for(&primary, p, down_after))
                });
                if let Some(w) = witness {
                    let why = format!(
                        "its primary {primary} does not answer this proxy, but replica {} still hears from it: not replacing a live primary",
                        w.addr
                    );
                    self.hold_down(view, parking, Problem::PrimaryUnreachable, &why);
                    return Problem::PrimaryUnreachable;
                }
                let candidates: Vec<Candidate> = view
                    .replicas
                    .iter()
                    .map(|n| {
                        let t = self.tracks.get(&n.addr);
                        Candidate {
                            addr: &n.addr,
                            probe: t.filter(|t| !t.dead).and_then(|t| t.fresh(round)),
                            in_sync: t.is_some_and(|t| t.in_sync),
                        }
                    })
                    .collect();
                match judge::choose(&candidates, view.epoch) {
                    Ok(c) => view.replicas.iter().find(|n| n.addr == c.addr).cloned(),
                    Err(reasons) => {
                        let reasons: Vec<String> = reasons
                            .iter()
                            .map(|(a, why)| format!("{a}: {why}"))
                            .collect();
                        let why = format!(
                            "its primary {primary} is down and no replica was in sync with it, so none is promoted (a promoted replica would drop writes the primary acknowledged); waiting for the primary. Replicas: {}",
                            reasons.join("; ")
                        );
                        self.hold_down(view, parking, Problem::NoReplicaInSync, &why);
                        return Problem::NoReplicaInSync;
                    }
                }
            }
        };
        let Some(chosen) = chosen else {
            let why = "its primary is down and no replica can take over";
            self.hold_down(view, parking, Problem::NoReplicaInSync, why);
            return Problem::NoReplicaInSync;
        };
        self.promote(view, &chosen, parking, round).await;
        Problem::None
    }

    /// The primary stays down without a replacement: requests fail at once with `why` until
    /// it answers again.
    fn hold_down(&mut self, view: &View, parking: &Parking, problem: Problem, why: &str) {
        if view.primary.health.is_up() {
            self.mark_down(&view.primary, why);
        }
        self.report(&view.primary.addr, &format!("{}: {why}", problem.code()));
        self.fail_parked(parking, why);
    }

    /// Mirror mode: the in-sync copy whose queue drained, if any.
    async fn fittest_mirror(&mut self, view: &View) -> Option<Arc<Node>> {
        let m = self.shard.mirror.clone()?;
        let chosen = view
            .replicas
            .iter()
            .filter(|n| n.health.is_up() && n.health.is_readable())
            .max_by_key(|n| n.health.offset())?
            .clone();
        // Every copy the old primary's replies queued for it must land first.
        let target = m.target(&chosen.addr)?;
        let drained = tokio::time::timeout(self.config.backend.timeout, m.barrier(&target));
        if !matches!(drained.await, Ok(Ok(Ok(_)))) || target.state() != Sync::InSync {
            tracing::error!(shard = %self.shard.name, node = %chosen.addr, "cannot promote: its copies did not drain");
            return None;
        }
        Some(chosen)
    }

    /// Makes `chosen` the primary in a new epoch, and the other live replicas its replicas.
    async fn promote(
        &mut self,
        view: &View,
        chosen: &Arc<Node>,
        parking: &Parking,
        round: Instant,
    ) {
        let mirror = self.mode() == ReplicationMode::Mirror;
        let Some(epoch) = self.next_epoch(view) else {
            return;
        };
        // No write of the old primary's may be acknowledged from here on.
        view.primary.pool.gate().close();
        if !mirror {
            if let Err(e) = self
                .command(&chosen.addr, &[b"REPLICAOF", b"NO", b"ONE"])
                .await
            {
                tracing::error!(shard = %self.shard.name, node = %chosen.addr, "cannot promote: REPLICAOF NO ONE failed: {e}");
                return;
            }
        }
        let old = view.primary.clone();
        self.mark_down(&old, "replaced as primary");
        if let Some(m) = &self.shard.mirror {
            m.set_source(&chosen.addr);
            m.remove_target(&chosen.addr);
            // The old primary comes back stale and is resynced before it serves.
            m.add_target(&old.addr, old.pool.conn(Proto::Resp2, 0).clone());
        }
        let next = self.switch(view, chosen, epoch, parking, "failover").await;
        if next.primary.addr != chosen.addr || mirror {
            return;
        }
        // The promoted node, as it now is.
        let Some(mut promoted) = self.tracks.get(&chosen.addr).and_then(|t| t.answer.clone())
        else {
            return;
        };
        promoted.role = Role::Primary;
        promoted.epoch = Some(epoch);
        for node in &next.replicas {
            let answer = self.fresh_answer(&node.addr, round);
            if let Some(p) = answer {
                self.point_at(&next, node, &p, &promoted).await;
            }
        }
    }

    /// A node's answer from this round, unless it is dead: what a REPLICAOF is decided on.
    fn fresh_answer(&self, addr: &str, round: Instant) -> Option<Probe> {
        let t = self.tracks.get(addr).filter(|t| !t.dead)?;
        t.fresh(round).cloned()
    }

    /// Redis mode, primary alive: every other node that answers follows it. Other primaries are
    /// always made replicas (a shard has one); replicas following another node are pointed
    /// at the primary when `manage_replication` is on.
    pub(super) async fn manage(&mut self, view: &View, round: Instant) {
        let Some(primary) = self
            .tracks
            .get(&view.primary.addr)
            .and_then(|t| t.live_answer())
            .filter(|p| p.role == Role::Primary)
            .cloned()
        else {
            // Never point a node at one that does not answer as a primary.
            return;
        };
        for node in &view.replicas {
            let Some(p) = self.fresh_answer(&node.addr, round) else {
                continue;
            };
            let follows =
                p.role == Role::Replica && p.master.as_deref() == Some(&view.primary.addr);
            let second_primary = p.role == Role::Primary;
            if follows || !(second_primary || self.shard.config.manage_replication) {
                continue;
            }
            self.point_at(view, node, &p, &primary).await;
        }
    }

    /// Sends `node` REPLICAOF the view's primary, if the rules allow it ([`judge::may_follow`])
    /// and the primary still answers as one right before.
    async fn point_at(&mut self, view: &View, node: &Node, answer: &Probe, primary: &Probe) {
        if let Err(why) = judge::may_follow(answer, primary) {
            let text = format!("not pointed at the primary {}: {why}", view.primary.addr);
            self.report(&node.addr, &text);
            return;
        }
        if answer.role == Role::Primary {
            // A second primary: whatever it takes from now on it would lose.
            node.pool.gate().close();
        }
        // Either may have changed since its check (another proxy, an operator): asked again
        // right before. Never point a node at a replica, nor one that now records a newer
        // epoch than the primary, nor one whose role changed since.
        let primary_now = self.recheck(&view.primary.addr, view.epoch).await;
        let node_now = self.recheck(&node.addr, view.epoch).await;
        let fits = match (&primary_now, &node_now) {
            (Ok((p_role, Some(p_epoch))), Ok((n_role, n_epoch))) => {
                let same = (n_role == "master") == (answer.role == Role::Primary);
                let older = match n_epoch {
                    Some(n) => n <= p_epoch,
                    // A replica that cannot show its record (MASTERDOWN) holds what its own
                    // primary had, which the check judged already.
                    None => n_role == "slave",
                };
                p_role == "master" && same && older
            }
            _ => false,
        };
        if !fits {
            tracing::warn!(shard = %self.shard.name, node = %node.addr, "not pointed at {}: changed since the check (primary {primary_now:?}, node {node_now:?})", view.primary.addr);
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
}
