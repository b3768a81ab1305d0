//! The `[replication]` section: how a shard's replicas get its writes, when a write is
//! answered, which node serves reads. The section gives every shard's defaults, which a
//! `[[shards]]` entry may override (`shards.rs`), and the settings that hold for all of them.

use super::check::{invalid, nonzero};
use super::raw::RawReplication;
use super::ConfigError;

/// How a shard's replicas get its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// Redis's own replication (REPLICAOF).
    Redis,
    /// shardis copies every successful write to each replica itself.
    Mirror,
}

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAck {
    /// As soon as the primary answers.
    Primary,
    /// Once this many replicas have it too.
    Replicas(u8),
}

/// Which node serves a shard's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Primary,
    /// A replica within the lag limit; the primary when there is none.
    Replica,
    /// Same as `Replica`; kept as the name operators know from other clients.
    PreferReplica,
}

/// What a `[[shards]]` entry that does not say gets, from `[replication]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShardDefaults {
    pub(super) mode: ReplicationMode,
    pub(super) manage_replication: bool,
    pub(super) write_ack: WriteAck,
    pub(super) read_from: ReadFrom,
}

impl RawReplication {
    /// `ack_timeout` must not be zero; it, `max_lag` and `state_file` go into
    /// [`Config`](super::Config) as they are. The rest is the shards' defaults.
    pub(super) fn validate(&self) -> Result<ShardDefaults, ConfigError> {
        nonzero("replication.ack_timeout", self.ack_timeout)?;
        let mode = parse_mode("replication.mode", &self.mode)?;
        let write_ack = parse_write_ack("replication.write_ack", &self.write_ack)?;
        let read_from = parse_read_from("replication.read_from", &self.read_from)?;
        Ok(ShardDefaults {
            mode,
            manage_replication: self.manage_replication,
            write_ack,
            read_from,
        })
    }
}

/// `redis` or `mirror`.
pub(super) fn parse_mode(key: &str, text: &str) -> Result<ReplicationMode, ConfigError> {
    match text {
        "redis" => Ok(ReplicationMode::Redis),
        "mirror" => Ok(ReplicationMode::Mirror),
        _ => Err(invalid(key, format!("{text:?}: expected redis or mirror"))),
    }
}

/// `primary` or `replicas:N` with N from 1 to 255.
pub(super) fn parse_write_ack(key: &str, text: &str) -> Result<WriteAck, ConfigError> {
    if text == "primary" {
        return Ok(WriteAck::Primary);
    }
    match text.strip_prefix("replicas:").map(str::parse::<u8>) {
        Some(Ok(n)) if n > 0 => Ok(WriteAck::Replicas(n)),
        _ => Err(invalid(
            key,
            format!("{text:?}: expected primary or replicas:N (N from 1 to 255)"),
        )),
    }
}

/// `primary`, `replica` or `prefer-replica`.
pub(super) fn parse_read_from(key: &str, text: &str) -> Result<ReadFrom, ConfigError> {
    match text {
        "primary" => Ok(ReadFrom::Primary),
        "replica" => Ok(ReadFrom::Replica),
        "prefer-replica" => Ok(ReadFrom::PreferReplica),
        _ => Err(invalid(
            key,
            format!("{text:?}: expected primary, replica or prefer-replica"),
        )),
    }
}
