//! The monitor's rules, as pure functions of what the checks heard: when a node is dead
//! rather than slow, which node the fleet names primary, who may follow whom, and which
//! replica may be promoted. No I/O here, so every rule is unit-tested below, and every proxy in
//! front of a fleet computes the same answers from the same facts.

use std::cmp::Reverse;
use std::time::Duration;

use tokio::time::Instant;

use super::probe::{Outcome, Probe};
use crate::topology::Role;

/// How long silence and refusals are tolerated.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Refused or reset checks in a row that make a node dead.
    pub failure_threshold: u32,
    /// Answers in a row that bring a dead node back.
    pub success_threshold: u32,
    /// Silence that makes a node dead.
    pub down_after: Duration,
    /// Silence that makes a node suspect (still used, shown in INFO).
    pub suspect_after: Duration,
}

/// A node's state as the health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Up,
    /// Answering with errors (BUSY in a script, LOADING its data): alive.
    Busy,
    /// Silent (or refusing) for a while, not long enough to be dead: still used.
    Suspect,
    Dead,
}

/// What the monitor knows of one node between checks.
#[derive(Debug, Default)]
pub struct Track {
    /// When the node last answered anything; a BUSY reply counts.
    pub heard_at: Option<Instant>,
    /// Its last full answer, and when it came.
    pub answer: Option<Probe>,
    pub answered_at: Option<Instant>,
    /// The error its last reply was, when it was one.
    pub busy: Option<String>,
    /// Checks refused, reset or closed in a row.
    pub refusals: u32,
    /// Replies in a row.
    pub replies: u32,
    /// Why the last check failed, for the log.
    pub missed: Option<String>,
    /// Whether it is held dead now (changes only through [`Track::judge`]).
    pub dead: bool,
    /// A replica: whether it followed the primary, link up, not in a full sync and within the
    /// lag limit, at the primary's latest answer. Only such a replica may be promoted.
    pub in_sync: bool,
    /// When the monitor last marked it down: it comes back up only by answering after that.
    pub downed_at: Option<Instant>,
    /// When a check last failed on this side (out of file descriptors): silence around then
    /// is not the node's.
    pub local_at: Option<Instant>,
}

impl Track {
    /// Takes in one check's outcome.
    pub fn record(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Answer(p) => {
                self.heard(now);
                self.busy = None;
                self.answer = Some(p);
                self.answered_at = Some(now);
            }
            Outcome::Busy(e) => {
                self.heard(now);
                self.busy = Some(e);
            }
            Outcome::Refused(e) => {
                self.refusals = self.refusals.saturating_add(1);
                self.replies = 0;
                self.missed = Some(e);
            }
            Outcome::Silent(e) => {
                self.replies = 0;
                self.missed = Some(e);
            }
            Outcome::Local(e) => {
                self.local_at = Some(now);
                self.missed = Some(e);
            }
        }
    }

    fn heard(&mut self, now: Instant) {
        self.heard_at = Some(now);
        self.refusals = 0;
        self.replies = self.replies.saturating_add(1);
        self.missed = None;
    }

    /// How long the node has said nothing (counted from `since` if it never has).
    pub fn silence(&self, since: Instant, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard_at.unwrap_or(since).max(since))
    }

    /// Decides whether the node is dead now: refused `failure_threshold` times in a row, or
    /// silent for `down_after`. A dead node comes back after `success_threshold` replies.
    /// `since` is when the monitor started watching it.
    pub fn judge(&mut self, p: &Patience, since: Instant, now: Instant) -> Liveness {
        let silence = self.silence(since, now);
        let checked = self
            .local_at
            .is_none_or(|t| now.saturating_duration_since(t) >= p.down_after);
        let failing = self.refusals >= p.failure_threshold || (silence >= p.down_after && checked);
        if failing {
            self.dead = true;
        } else if self.dead && self.replies >= p.success_threshold {
            self.dead = false;
        }
        if self.dead {
            Liveness::Dead
        } else if self.refusals > 0 || silence >= p.suspect_after {
            Liveness::Suspect
        } else if self.busy.is_some() {
            Liveness::Busy
        } else {
            Liveness::Up
        }
    }

    /// Its last full answer, unless it is dead.
    pub fn live_answer(&self) -> Option<&Probe> {
        self.answer.as_ref().filter(|_| !self.dead)
    }

    /// Whether it answered since the monitor last marked it down (or was never marked down).
    pub fn answered_since_down(&self) -> bool {
        match (self.downed_at, self.heard_at) {
            (None, _) => true,
            (Some(down), Some(heard)) => heard > down,
            (Some(_), None) => false,
        }
    }

    /// Whether it has said enough to be counted on: it gave a full answer (its role and
    /// record; a node LOADING or BUSY has not), or it refused a connection (nothing listens
    /// there, so it serves no one), or it is dead.
    pub fn known(&self) -> bool {
        self.answer.is_some() || self.refusals > 0 || self.dead
    }

    /// Its full answer from this round (checks started at `round`).
    pub fn fresh(&self, round: Instant) -> Option<&Probe> {
        match self.answered_at {
            Some(at) if at >= round => self.answer.as_ref(),
            _ => None,
        }
    }
}

/// A node that answers as a primary.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub addr: &'a str,
    pub probe: &'a Probe,
    /// Its epoch record, if it is [`credible`].
    pub epoch: Option<u64>,
    /// The node the config file names primary.
    pub configured: bool,
}

/// How primaries outrank each other: the highest epoch record first; then a node holding data
/// over an empty one; then the configured primary; then the lowest address. Only facts that
/// every proxy reads alike go in (not replication offsets, which move between two proxies'
/// checks: two proxies ranking by them could each demote the other's choice).
fn rank<'a>(c: &Claim<'a>) -> (Option<u64>, bool, bool, Reverse<&'a str>) {
    (c.epoch, c.probe.has_data, c.configured, Reverse(c.addr))
}

/// The primary the nodes name: the best-ranked of those that claim to be one.
pub fn authority<'a>(claims: &[Claim<'a>]) -> Option<Claim<'a>> {
    claims.iter().copied().max_by(|a, b| rank(a).cmp(&rank(b)))
}

/// Whether `node` may be made a replica of `primary`, from what each last said; else why not.
/// Never at a node that is not a primary, never a node recording a newer epoch than the
/// primary, and never a node holding data behind an empty one that records no newer epoch.
pub fn may_follow(node: &Probe, primary: &Probe) -> Result<(), &'static str> {
    if primary.role != Role::Primary {
        return Err("the primary does not answer as one");
    }
    if node.epoch > primary.epoch || node.bad_epoch.is_some() {
        return Err("it records a newer epoch than the primary");
    }
    if node.epoch_unread && node.role == Role::Primary {
        return Err("its epoch record cannot be read");
    }
    if node.has_data && !primary.has_data && node.epoch == primary.epoch {
        return Err("it holds data and the primary is empty");
    }
    Ok(())
}

/// Whether the answers confirm `primary` (whose answer is `answer`) as the shard's primary: it
/// answers as one; no other node that answered records a newer (credible) epoch, which would
/// mean it holds data from after this primary, whoever it follows (an address shardis may
/// spell otherwise); and either every node has said enough (`all_known`, see
/// [`Track::known`]) or a replica follows it with its link up.
pub fn confirms(
    primary: &str,
    answer: &Probe,
    others: &[&Probe],
    all_known: bool,
    shard_epoch: u64,
) -> bool {
    if answer.role != Role::Primary {
        return false;
    }
    let credible = |p: &Probe| p.epoch.filter(|e| credible(*e, shard_epoch));
    let newer = others.iter().any(|p| credible(p) > credible(answer));
    let vouched = others
        .iter()
        .any(|p| p.role == Role::Replica && p.master.as_deref() == Some(primary) && p.link_up);
    !newer && (all_known || vouched)
}

/// Whether a replica's answer shows it following `primary`, link up, not in a full sync, and
/// `lag` (how long ago the primary had what the replica has) within `max_lag`.
pub fn in_sync(primary: &str, replica: &Probe, lag: Duration, max_lag: Duration) -> bool {
    replica.role == Role::Replica
        && replica.master.as_deref() == Some(primary)
        && replica.link_up
        && !replica.syncing
        && lag <= max_lag
}

/// Whether a replica's answer shows that `primary` is alive: its link is up and it heard from
/// the primary less than `down_after` ago. A primary that only this proxy cannot reach is not
/// replaced.
pub fn vouches_for(primary: &str, replica: &Probe, down_after: Duration) -> bool {
    let bound = down_after.as_secs().max(1);
    replica.role == Role::Replica
        && replica.master.as_deref() == Some(primary)
        && replica.link_up
        && replica.last_io_s.is_some_and(|s| s < bound)
}

/// A replica considered for promotion.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub addr: &'a str,
    /// Its answer from this round, if it gave one and is not dead.
    pub probe: Option<&'a Probe>,
    pub in_sync: bool,
}

/// Whether an epoch record read from a node is one shardis could have written, given the
/// shard's own epoch: at most [`MAX_RECORDED_EPOCH`](crate::command::lock::MAX_RECORDED_EPOCH), or at
/// most [`MAX_EPOCH_JUMP`] above the shard's epoch. A forged record above both is never adopted,
/// so a forgery cannot use up the epochs a shard has left.
pub fn credible(epoch: u64, shard_epoch: u64) -> bool {
    epoch <= crate::command::lock::MAX_RECORDED_EPOCH
        || epoch <= shard_epoch.saturating_add(MAX_EPOCH_JUMP)
}

/// How far above its own epoch a shard follows a record past
/// [`MAX_RECORDED_EPOCH`](crate::command::lock::MAX_RECORDED_EPOCH): other proxies' failovers since.
pub const MAX_EPOCH_JUMP: u64 = 1_000;

/// Why a replica may not be promoted on its own account (see [`choose`] for one that holds
/// everything an in-sync one holds).
pub fn unfit(c: &Candidate, epoch: u64) -> Option<&'static str> {
    let Some(p) = c.probe else {
        return Some("it did not answer this check");
    };
    if p.role != Role::Replica {
        return Some("it is not a replica");
    }
    if p.syncing {
        return Some("it is in a full resync");
    }
    if p.epoch.is_some_and(|e| e > epoch) || p.bad_epoch.is_some() {
        return Some("it records another epoch");
    }
    if !c.in_sync {
        return Some("it was not in sync when the primary last answered");
    }
    None
}

/// The replica to promote. The fit ones are those in sync when the primary last answered, and
/// any other replica on the same replication history as one of those (same `master_replid`)
/// with at least its offset: a replication stream is a prefix of itself, so such a replica
/// holds everything the in-sync one holds, and more. Of the fit ones, the largest offset wins
/// (the lowest address among equals, so proxies agree). None fit: each one's reason.
pub fn choose<'a>(
    candidates: &[Candidate<'a>],
    epoch: u64,
) -> Result<Candidate<'a>, Vec<(&'a str, &'static str)>> {
    let offset = |c: &Candidate| c.probe.map_or(-1, |p| p.offset);
    let in_sync: Vec<&Candidate<'a>> = candidates
        .iter()
        .filter(|c| unfit(c, epoch).is_none())
        .collect();
    let holds_as_much = |c: &&Candidate<'a>| {
        // Fit on every account but having been in sync.
        let fit_otherwise = unfit(
            &Candidate {
                in_sync: true,
                ..**c
            },
            epoch,
        )
        .is_none();
        let Some(p) = c.probe.filter(|_| fit_otherwise) else {
            return false;
        };
        in_sync.iter().any(|s| {
            let s_replid = s.probe.and_then(|q| q.replid.as_deref());
            s_replid.is_some() && s_replid == p.replid.as_deref() && p.offset >= offset(s)
        })
    };
    let fit = candidates
        .iter()
        .filter(|c| unfit(c, epoch).is_none() || holds_as_much(c))
        .max_by_key(|c| (offset(c), Reverse(c.addr)));
    match fit {
        Some(c) => Ok(*c),
        None => Err(candidates
            .iter()
            .filter_map(|c| Some((c.addr, unfit(c, epoch)?)))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(epoch: Option<u64>, has_data: bool) -> Probe {
        Probe {
            role: Role::Primary,
            master: None,
            link_up: false,
            syncing: false,
            last_io_s: None,
            offset: 100,
            replid: Some("h1".into()),
            epoch,
            bad_epoch: None,
            epoch_unread: false,
            run_id: None,
            has_data,
        }
    }

    fn replica_of(master: &str, offset: i64) -> Probe {
        Probe {
            role: Role::Replica,
            master: Some(master.into()),
            link_up: true,
            last_io_s: Some(0),
            offset,
            ..primary(Some(1), true)
        }
    }

    fn claim<'a>(addr: &'a str, probe: &'a Probe, configured: bool) -> Claim<'a> {
        Claim {
            addr,
            probe,
            epoch: probe.epoch,
            configured,
        }
    }

    fn cand<'a>(addr: &'a str, probe: Option<&'a Probe>, in_sync: bool) -> Candidate<'a> {
        Candidate {
            addr,
            probe,
            in_sync,
        }
    }

    fn patience() -> Patience {
        Patience {
            failure_threshold: 3,
            success_threshold: 1,
            down_after: Duration::from_secs(5),
            suspect_after: Duration::from_millis(300),
        }
    }

    #[test]
    fn refusals_kill_at_once_silence_only_after_down_after() {
        let p = patience();
        let t0 = Instant::now();
        let mut refused = Track::default();
        for i in 0..3 {
            let now = t0 + Duration::from_millis(100 * i);
            assert_ne!(refused.judge(&p, t0, now), Liveness::Dead);
            refused.record(Outcome::Refused("connection refused".into()), now);
        }
        assert_eq!(
            refused.judge(&p, t0, t0 + Duration::from_millis(300)),
            Liveness::Dead
        );
        // Answers again: back at once (success_threshold 1).
        refused.record(
            Outcome::Answer(primary(None, false)),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            refused.judge(&p, t0, t0 + Duration::from_secs(1)),
            Liveness::Up
        );

        let mut silent = Track::default();
        silent.record(Outcome::Answer(primary(None, false)), t0);
        for ms in [400, 1_000, 4_900] {
            let now = t0 + Duration::from_millis(ms);
            silent.record(Outcome::Silent("no reply".into()), now);
            assert_eq!(silent.judge(&p, t0, now), Liveness::Suspect, "{ms} ms");
        }
        assert_eq!(
            silent.judge(&p, t0, t0 + Duration::from_secs(5)),
            Liveness::Dead
        );

        // BUSY is life.
        let mut busy = Track::default();
        for s in 0..10 {
            let now = t0 + Duration::from_secs(s);
            busy.record(Outcome::Busy("BUSY running a script".into()), now);
            assert_eq!(busy.judge(&p, t0, now), Liveness::Busy);
        }
    }

    #[test]
    fn the_highest_epoch_record_names_the_primary() {
        let stale_config_primary = primary(None, false);
        let promoted = primary(Some(1), true);
        let claims = [
            claim("10.0.0.1:6379", &stale_config_primary, true),
            claim("10.0.0.2:6379", &promoted, false),
        ];
        assert_eq!(authority(&claims).unwrap().addr, "10.0.0.2:6379");
        // The old primary, back with data but an older epoch, still loses.
        let old_with_data = primary(Some(0), true);
        let claims = [
            claim("10.0.0.1:6379", &old_with_data, true),
            claim("10.0.0.2:6379", &promoted, false),
        ];
        assert_eq!(authority(&claims).unwrap().addr, "10.0.0.2:6379");
    }

    #[test]
    fn equal_epochs_prefer_data_then_the_configured_primary_then_the_lower_address() {
        let empty = primary(Some(2), false);
        let full = primary(Some(2), true);
        let claims = [claim("a:1", &empty, true), claim("b:1", &full, false)];
        assert_eq!(authority(&claims).unwrap().addr, "b:1");
        let fresh = primary(None, false);
        let claims = [claim("a:1", &fresh, false), claim("b:1", &fresh, true)];
        assert_eq!(authority(&claims).unwrap().addr, "b:1");
        let claims = [claim("b:1", &full, false), claim("a:1", &full, false)];
        assert_eq!(authority(&claims).unwrap().addr, "a:1");
        // The order the claims come in does not matter.
        let mut reversed = claims;
        reversed.reverse();
        assert_eq!(authority(&reversed).unwrap().addr, "a:1");
        // Offsets do not matter: they move between two proxies' checks.
        let mut ahead = full.clone();
        ahead.offset = 1_000_000;
        let claims = [claim("b:1", &ahead, false), claim("a:1", &full, false)];
        assert_eq!(authority(&claims).unwrap().addr, "a:1");
    }

    #[test]
    fn the_primary_is_confirmed_by_its_nodes() {
        let stale = primary(None, false);
        let r = replica_of("new:1", 10);
        // The stale config's primary, empty; a replica of the real one (epoch 1) answers: not
        // confirmed, whatever else is known.
        assert!(!confirms("old:1", &stale, &[&r], true, 0));
        // The real one, with that replica following it.
        let real = primary(Some(1), true);
        assert!(confirms("new:1", &real, &[&r], false, 1));
        // Not every node answered and none vouches: wait.
        let elsewhere = replica_of("10.0.0.9:6379", 10);
        assert!(!confirms("new:1", &real, &[&elsewhere], false, 1));
        // ... unless all are known: a replica following another spelling of the same primary
        // (same epoch) does not contradict it.
        assert!(confirms("new:1", &real, &[&elsewhere], true, 1));
        // Not a primary: never.
        assert!(!confirms("new:1", &r, &[], true, 1));
        // A forged record far above the shard does not count as newer.
        let mut forged = replica_of("new:1", 10);
        forged.epoch = Some(crate::command::lock::MAX_EPOCH);
        forged.link_up = false;
        assert!(confirms("new:1", &real, &[&forged], true, 1));
    }

    #[test]
    fn forged_records_far_above_the_shard_are_not_credible() {
        let max = crate::command::lock::MAX_RECORDED_EPOCH;
        assert!(credible(7, 3));
        assert!(credible(max, 0));
        assert!(!credible(max + 1, 0));
        // Past the bound only by following this shard's own epochs.
        assert!(credible(max + 10, max + 5));
        assert!(!credible(crate::command::lock::MAX_EPOCH, max));
    }

    #[test]
    fn who_may_follow_whom() {
        let p = primary(Some(2), true);
        assert_eq!(may_follow(&primary(None, false), &p), Ok(()));
        assert_eq!(may_follow(&primary(Some(1), true), &p), Ok(()));
        assert!(may_follow(&primary(Some(3), true), &p).is_err());
        // Never at a replica.
        assert!(may_follow(&primary(None, false), &replica_of("x:1", 5)).is_err());
        // Data never follows an empty node of the same epoch.
        assert!(may_follow(&primary(Some(2), true), &primary(Some(2), false)).is_err());
        let mut forged = primary(None, false);
        forged.bad_epoch = Some("8388607".into());
        assert!(may_follow(&forged, &p).is_err());
    }

    #[test]
    fn replicas_vouch_for_a_primary_they_still_hear() {
        let down_after = Duration::from_secs(5);
        let mut r = replica_of("p:1", 10);
        assert!(vouches_for("p:1", &r, down_after));
        assert!(!vouches_for("q:1", &r, down_after));
        r.last_io_s = Some(5);
        assert!(!vouches_for("p:1", &r, down_after));
        r.last_io_s = Some(0);
        r.link_up = false;
        assert!(!vouches_for("p:1", &r, down_after));
    }

    #[test]
    fn only_a_replica_in_sync_is_promoted_and_the_most_advanced_wins() {
        let max_lag = Duration::from_secs(1);
        let a = replica_of("p:1", 100);
        let b = replica_of("p:1", 120);
        let mut resyncing = replica_of("p:1", 500);
        resyncing.syncing = true;
        resyncing.link_up = false;
        assert!(in_sync("p:1", &a, Duration::ZERO, max_lag));
        assert!(!in_sync("p:1", &a, Duration::from_secs(2), max_lag));
        assert!(!in_sync("p:1", &resyncing, Duration::ZERO, max_lag));
        let cands = [
            cand("a:1", Some(&a), true),
            cand("b:1", Some(&b), true),
            cand("c:1", Some(&resyncing), false),
        ];
        assert_eq!(choose(&cands, 1).unwrap().addr, "b:1");
        // The one that was in a resync, however far its offset, waits; so does one that was
        // not in sync when the primary last answered.
        let cands = [
            cand("a:1", Some(&a), false),
            cand("c:1", Some(&resyncing), false),
            cand("d:1", None, true),
        ];
        let why = choose(&cands, 1).unwrap_err();
        assert_eq!(why.len(), 3, "{why:?}");
        assert_eq!(why[1], ("c:1", "it is in a full resync"));
        // A replica that was not in sync, but is now ahead of an in-sync one on the same
        // history, holds all it holds: it is the one promoted.
        let mut ahead = a.clone();
        ahead.offset = 1_000;
        let cands = [
            cand("a:1", Some(&a), true),
            cand("e:1", Some(&ahead), false),
        ];
        assert_eq!(choose(&cands, 1).unwrap().addr, "e:1");
        // On another history (its primary restarted without data since), its offset means
        // nothing: the in-sync one is promoted.
        ahead.replid = Some("other".into());
        let cands = [
            cand("a:1", Some(&a), true),
            cand("e:1", Some(&ahead), false),
        ];
        assert_eq!(choose(&cands, 1).unwrap().addr, "a:1");
        // Equal offsets: the lower address, as every proxy would choose.
        let cands = [cand("b:1", Some(&a), true), cand("a:1", Some(&a), true)];
        assert_eq!(choose(&cands, 1).unwrap().addr, "a:1");
    }
}
