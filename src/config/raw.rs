//! The file's schema, as `config.toml` with the `SHARDIS__...` overrides over it is read:
//! names and modes still text, addresses not yet parsed. A section left out, and most keys
//! left out of one, take their value from `defaults.rs`; unknown keys are refused rather than
//! ignored.
//!
//! `[log]`, `[backend]` and `[health]` are read straight into their checked types, which are
//! public ([`LogSettings`], [`BackendSettings`], [`HealthSettings`]). The checks of each
//! section, and what turns a `Raw*` section into its part of [`Config`](super::Config), are
//! in the section's own file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_DISTRIBUTION, DEFAULT_FREEZE_MARGIN, DEFAULT_HASH,
    DEFAULT_HASH_TAG, DEFAULT_LISTEN, DEFAULT_LOCK_MAX_TTL, DEFAULT_LOCK_PREFIX,
    DEFAULT_MANAGE_REPLICATION, DEFAULT_MAX_LAG, DEFAULT_READ_FROM, DEFAULT_REPLICATION_MODE,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WEIGHT, DEFAULT_WRITE_ACK,
};
use super::{duration, BackendSettings, ClientLimits, HealthSettings, LogSettings, Secret, User};
use crate::resp::Limits;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    pub(super) workers: usize,
    #[serde(with = "duration")]
    pub(super) shutdown_grace: Duration,
    pub(super) password: Option<Secret>,
    pub(super) metrics_listen: Option<String>,
    pub(super) log: LogSettings,
    pub(super) tls: Option<RawTls>,
    pub(super) routing: RawRouting,
    pub(super) backend: BackendSettings,
    pub(super) limits: RawLimits,
    pub(super) commands: RawCommands,
    pub(super) health: HealthSettings,
    pub(super) replication: RawReplication,
    pub(super) locks: RawLocks,
    pub(super) users: Vec<User>,
    pub(super) shards: Vec<RawShard>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: DEFAULT_LISTEN.into(),
            workers: 0,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            password: None,
            metrics_listen: None,
            log: LogSettings::default(),
            tls: None,
            routing: RawRouting::default(),
            backend: BackendSettings::default(),
            limits: RawLimits::default(),
            commands: RawCommands::default(),
            health: HealthSettings::default(),
            replication: RawReplication::default(),
            locks: RawLocks::default(),
            users: Vec::new(),
            shards: Vec::new(),
        }
    }
}

/// The `[tls]` section: a listener for TLS clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) listen: String,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// The `[routing]` section: which shard a key belongs to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRouting {
    pub(super) hash: String,
    pub(super) distribution: String,
    pub(super) hash_tag: String,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            hash: DEFAULT_HASH.into(),
            distribution: DEFAULT_DISTRIBUTION.into(),
            hash_tag: DEFAULT_HASH_TAG.into(),
        }
    }
}

/// The `[limits]` section: the parser's limits and the clients'.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub(super) max_clients: usize,
    pub(super) max_bulk_len: usize,
    pub(super) max_inline_len: usize,
    pub(super) max_args: usize,
    pub(super) max_query_buffer: usize,
    pub(super) max_pipeline: usize,
    pub(super) max_output_buffer: usize,
    #[serde(with = "duration")]
    pub(super) idle_timeout: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        let p = Limits::default();
        let c = ClientLimits::default();
        RawLimits {
            max_clients: c.max_clients,
            max_bulk_len: p.max_bulk_len,
            max_inline_len: p.max_inline_len,
            max_args: p.max_args,
            max_query_buffer: p.max_query_buffer,
            max_pipeline: c.max_pipeline,
            max_output_buffer: c.max_output_buffer,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// The `[commands]` section: commands refused unless allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCommands {
    pub(super) allow_flush: bool,
    pub(super) allow_keys: bool,
    pub(super) allow_node_admin: bool,
}

/// The `[replication]` section: defaults for every shard, and where epochs are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReplication {
    pub(super) mode: String,
    pub(super) manage_replication: bool,
    pub(super) write_ack: String,
    #[serde(with = "duration")]
    pub(super) ack_timeout: Duration,
    pub(super) read_from: String,
    #[serde(with = "duration")]
    pub(super) max_lag: Duration,
    pub(super) state_file: Option<PathBuf>,
}

impl Default for RawReplication {
    fn default() -> Self {
        RawReplication {
            mode: DEFAULT_REPLICATION_MODE.into(),
            manage_replication: DEFAULT_MANAGE_REPLICATION,
            write_ack: DEFAULT_WRITE_ACK.into(),
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            read_from: DEFAULT_READ_FROM.into(),
            max_lag: DEFAULT_MAX_LAG,
            state_file: None,
        }
    }
}

/// The `[locks]` section: fenced locks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLocks {
    pub(super) prefix: String,
    #[serde(with = "duration")]
    pub(super) max_ttl: Duration,
    #[serde(with = "duration")]
    pub(super) freeze_margin: Duration,
}

impl Default for RawLocks {
    fn default() -> Self {
        RawLocks {
            prefix: DEFAULT_LOCK_PREFIX.into(),
            max_ttl: DEFAULT_LOCK_MAX_TTL,
            freeze_margin: DEFAULT_FREEZE_MARGIN,
        }
    }
}

/// One `[[shards]]` entry. What it leaves out (`replication`, `manage_replication`,
/// `write_ack`, `read_from`) comes from `[replication]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShard {
    pub(super) name: Option<String>,
    pub(super) primary: String,
    #[serde(default)]
    pub(super) replicas: Vec<String>,
    #[serde(default = "default_weight")]
    pub(super) weight: u32,
    pub(super) replication: Option<String>,
    pub(super) manage_replication: Option<bool>,
    pub(super) write_ack: Option<String>,
    pub(super) read_from: Option<String>,
    pub(super) sentinel: Option<RawSentinel>,
}

/// A shard's `sentinel = { master = ..., addresses = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSentinel {
    pub(super) master: String,
    pub(super) addresses: Vec<String>,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}
