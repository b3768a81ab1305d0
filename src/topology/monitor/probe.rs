//! One health check of one node, and the control connection it runs on.
//!
//! A check is PING, then INFO (server, replication, keyspace), the node's epoch record and how
//! many of shardis' own keys it holds, written at once: two round trips. It runs in a
//! task of its own, so a node that takes long to answer (a long script, a huge reply being
//! written, a fork) holds up nothing: the monitor looks at the check again at its next tick,
//! and only gives up on it after `down_after`.

use std::collections::HashMap;
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::super::link::{self, Link, LinkError};
use super::super::Role;
use crate::command::lock::{EPOCH_KEY, STATE_KEY};
use crate::config::BackendSettings;

/// What a node said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub role: Role,
    /// The primary a replica follows, `host:port`.
    pub master: Option<String>,
    pub link_up: bool,
    /// A replica waiting for or loading a full sync: it does not have its primary's data.
    pub syncing: bool,
    /// A replica's seconds since it last heard from its primary.
    pub last_io_s: Option<u64>,
    /// A primary's own offset; how far a replica got.
    pub offset: i64,
    /// The replication history its offset counts in (`master_replid`): two offsets compare
    /// only within one history.
    pub replid: Option<String>,
    /// The epoch recorded on the node, when it is one a fencing token can carry.
    pub epoch: Option<u64>,
    /// A record that is not such an epoch (a number too large, or not a number): never
    /// adopted.
    pub bad_epoch: Option<String>,
    /// The record could not be read (an error reply: a replica that serves no stale data while
    /// its link is down answers MASTERDOWN, an ACL may deny it): nothing is known of it.
    pub epoch_unread: bool,
    /// The node process's id (INFO server): it changes when the node restarts.
    pub run_id: Option<String>,
    /// Whether it holds keys other than shardis' own.
    pub has_data: bool,
}

/// What one check came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole check was answered.
    Answer(Probe),
    /// An error reply instead (BUSY running a script, LOADING its data set, ...): the node is
    /// alive, and this check learnt nothing more.
    Busy(String),
    /// Refused, reset, closed, or a broken reply: evidence that the node is down.
    Refused(String),
    /// No connection, or no reply, in the time allowed: no evidence either way.
    Silent(String),
    /// This process could not check (out of file descriptors): the node's silence meanwhile
    /// does not count.
    Local(String),
}

impl From<LinkError> for Outcome {
    fn from(e: LinkError) -> Outcome {
        match e {
            LinkError::Refused(e) => Outcome::Refused(e),
            LinkError::Silent(e) => Outcome::Silent(e),
            LinkError::Answered(e) => Outcome::Busy(e),
            LinkError::Local(e) => Outcome::Local(e),
        }
    }
}

/// A node's control connection, and the check running on it if there is one.
#[derive(Default)]
pub struct Prober {
    idle: Option<Link>,
    running: Option<JoinHandle<(Option<Link>, Outcome)>>,
}

impl Prober {
    /// Starts a check of `addr`, unless the last one is still waiting for its reply. A check
    /// gets `connect` to connect and `patience` for its reply.
    pub fn start(
        &mut self,
        addr: &str,
        backend: &BackendSettings,
        connect: Duration,
        patience: Duration,
    ) {
        if self.running.is_some() {
            return;
        }
        let link = self.idle.take();
        let addr = addr.to_string();
        let backend = backend.clone();
        self.running = Some(tokio::spawn(async move {
            check(link, &addr, &backend, connect, patience).await
        }));
    }

    /// The running check's outcome, if it ends by `deadline`; else it keeps running.
    pub async fn finish_by(&mut self, deadline: Instant) -> Option<Outcome> {
        let running = self.running.as_mut()?;
        let joined = tokio::time::timeout_at(deadline, running).await.ok()?;
        self.running = None;
        match joined {
            Ok((link, outcome)) => {
                self.idle = link;
                Some(outcome)
            }
            Err(e) => Some(Outcome::Silent(format!("the check task failed: {e}"))),
        }
    }

    /// The control connection, for a command of the monitor's own (REPLICAOF); `None` while a
    /// check runs on it.
    pub fn take_idle(&mut self) -> Option<Link> {
        if self.running.is_some() {
            return None;
        }
        self.idle.take()
    }

    pub fn put_idle(&mut self, link: Link) {
        if self.running.is_none() {
            self.idle = Some(link);
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(task) = &self.running {
            task.abort();
        }
    }
}

/// One check, on `link` or on a new connection.
async fn check(
    link: Option<Link>,
    addr: &str,
    backend: &BackendSettings,
    connect: Duration,
    patience: Duration,
) -> (Option<Link>, Outcome) {
    let mut link = match link {
        Some(l) => l,
        None => match Link::open(addr, connect, backend).await {
            Ok(l) => l,
            Err(e) => return (None, e.into()),
        },
    };
    link.set_timeout(patience);
    // PING first, alone: a node that answers it with an error is alive whatever comes next
    // (one at maxclients answers "-ERR max number of clients reached" and closes).
    match link.call(&[b"PING"]).await {
        // Kept for the next check unless the node closes it (at maxclients it does).
        Ok(OwnedFrame::Error(e)) => {
            let keep = !e.contains("max number of clients");
            return (keep.then_some(link), Outcome::Busy(e));
        }
        Ok(_) => {}
        Err(e) => return (None, e.into()),
    }
    // MGET rather than GET, so that the GETs a node serves (cmdstat_get) are all clients'.
    let commands: [&[&[u8]]; 3] = [
        &[b"INFO", b"server", b"replication", b"keyspace"],
        &[b"MGET", EPOCH_KEY],
        &[b"EXISTS", EPOCH_KEY, STATE_KEY],
    ];
    let replies = match link.call_many(&commands).await {
        Ok(r) => r,
        // A connection that missed a reply is out of step: dropped.
        Err(e) => return (None, e.into()),
    };
    let outcome = read_check(&replies);
    (Some(link), outcome)
}

/// The replies to INFO, the record and the key count, read. An error reply to INFO (BUSY,
/// LOADING, ...) proves the node alive but tells nothing more; one to the record or key count
/// leaves only those unknown.
fn read_check(replies: &[OwnedFrame]) -> Outcome {
    let [info, record, own] = replies else {
        return Outcome::Refused("a check got the wrong number of replies".into());
    };
    if let OwnedFrame::Error(e) = info {
        return Outcome::Busy(e.clone());
    }
    let info = link::text(info).unwrap_or_default();
    let mut probe = parse_info(&info);
    match record {
        OwnedFrame::Array(v) => match v.first().and_then(link::text) {
            None => {}
            Some(r) => match r.parse::<u64>() {
                Ok(e) if e <= crate::command::lock::MAX_EPOCH => probe.epoch = Some(e),
                _ => probe.bad_epoch = Some(r.chars().take(40).collect()),
            },
        },
        _ => probe.epoch_unread = true,
    }
    // Unknown counts as holding data: a node is never made to follow an empty one on a guess.
    probe.has_data = match own {
        OwnedFrame::Integer(n) => keys_in_db0(&info) > (*n).max(0) as u64,
        _ => true,
    };
    Outcome::Answer(probe)
}

/// `db0:keys=N,...` of INFO keyspace (0 when the database is empty).
fn keys_in_db0(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix("db0:keys="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The fields of INFO server and replication that matter here.
pub fn parse_info(info: &str) -> Probe {
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
        syncing: fields.get("master_sync_in_progress") == Some(&"1"),
        last_io_s: fields
            .get("master_last_io_seconds_ago")
            .and_then(|v| v.parse().ok()),
        offset: fields
            .get(offset_field)
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1),
        replid: fields.get("master_replid").map(|r| r.to_string()),
        epoch: None,
        bad_epoch: None,
        epoch_unread: false,
        run_id: fields.get("run_id").map(|r| r.to_string()),
        has_data: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> OwnedFrame {
        OwnedFrame::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn info_of_a_replica_and_a_primary() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:2\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:1234\r\nmaster_repl_offset:1234\r\n";
        let p = parse_info(replica);
        assert_eq!(
            (
                p.role,
                p.master.as_deref(),
                p.link_up,
                p.syncing,
                p.last_io_s,
                p.offset
            ),
            (
                Role::Replica,
                Some("127.0.0.1:7001"),
                true,
                false,
                Some(2),
                1234
            )
        );
        let primary =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:99\r\n";
        let p = parse_info(primary);
        assert_eq!(
            (p.role, p.master, p.link_up, p.offset),
            (Role::Primary, None, false, 99)
        );
        let syncing = "role:slave\r\nmaster_host:h\r\nmaster_port:1\r\nmaster_link_status:down\r\nmaster_sync_in_progress:1\r\n";
        assert!(parse_info(syncing).syncing);
    }

    #[test]
    fn a_check_reads_the_epoch_record_and_the_data() {
        let info = "role:master\r\nmaster_repl_offset:7\r\n# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n";
        let replies = |record: Option<&str>, own: i64| {
            let record = match record {
                Some(r) => OwnedFrame::Array(vec![bulk(r)]),
                None => OwnedFrame::Array(vec![OwnedFrame::Null]),
            };
            vec![bulk(info), record, OwnedFrame::Integer(own)]
        };
        let Outcome::Answer(p) = read_check(&replies(Some("3"), 1)) else {
            panic!()
        };
        assert_eq!((p.epoch, p.bad_epoch, p.has_data), (Some(3), None, true));
        // Two keys, both shardis' own: no data.
        let Outcome::Answer(p) = read_check(&replies(Some("3"), 2)) else {
            panic!()
        };
        assert!(!p.has_data);
        // A record no token can carry is never read as an epoch.
        for forged in ["8388608", "99999999999", "x"] {
            let Outcome::Answer(p) = read_check(&replies(Some(forged), 1)) else {
                panic!()
            };
            assert_eq!((p.epoch, p.bad_epoch.as_deref()), (None, Some(forged)));
        }
        let Outcome::Answer(p) = read_check(&replies(None, 0)) else {
            panic!()
        };
        assert_eq!((p.epoch, p.has_data), (None, true));
        // BUSY: alive, nothing learnt.
        let mut busy = replies(None, 0);
        busy[0] = OwnedFrame::Error("BUSY Redis is busy running a script.".into());
        assert!(matches!(read_check(&busy), Outcome::Busy(e) if e.starts_with("BUSY")));
        // A replica that serves no stale data: its role and offset still count.
        let mut stale = replies(None, 0);
        stale[1] = OwnedFrame::Error("MASTERDOWN Link with MASTER is down".into());
        stale[2] = OwnedFrame::Error("MASTERDOWN Link with MASTER is down".into());
        let Outcome::Answer(p) = read_check(&stale) else {
            panic!()
        };
        assert_eq!(
            (p.role, p.epoch, p.epoch_unread, p.has_data),
            (Role::Primary, None, true, true)
        );
    }
}
