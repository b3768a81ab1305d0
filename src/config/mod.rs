//! Configuration: the TOML file schema (serde), environment overrides, and validation into the
//! runtime [`Config`].
//!
//! The raw schema mirrors the file one to one; [`Config`] is what the rest of the proxy reads,
//! with addresses resolved, names defaulted and every rule checked. Every error names the key
//! it is about, e.g. `shards[1].primary: "127.0.0.1" is not host:port`, and the environment
//! variable when a `SHARDIS__...` override set it (`env.rs`). Durations are humantime's
//! `"500ms"`, `"2s"` (`duration.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::resp::Limits;
use crate::routing::{Distribution, HashFn, HashTag, RingMember, Router};

mod check;
mod defaults;
mod duration;
mod env;
mod raw;
mod users;

use check::{invalid, listen_addr, nonzero, positive};
use defaults::*;
pub use defaults::{DEFAULT_DOWN_AFTER, DEFAULT_MAX_DEDICATED};
use raw::RawConfig;
pub use users::{Role, Secret, User};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", without_source(.0))]
    Load(#[from] config::ConfigError),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    /// What a `SHARDIS__...` variable set was refused: `problem` is the error it caused.
    #[error("environment variable {var}: {problem}")]
    Env { var: String, problem: String },
}

/// A parse error's text without the lines quoting the file (`3 | password = "...`): the
/// quoted line may hold a password, and errors reach logs and the SHARDIS RELOAD reply. The
/// line and column stay.
fn without_source(e: &config::ConfigError) -> String {
    e.to_string()
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let gutter = t.trim_start_matches(|c: char| c.is_ascii_digit());
            !gutter.trim_start().starts_with('|')
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- the validated configuration ----

/// The validated runtime configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Runtime worker threads; 0 = one per CPU.
    pub workers: usize,
    /// On SIGTERM/SIGINT: how long sessions may take to finish their in-flight requests.
    pub shutdown_grace: Duration,
    /// Password clients must give with AUTH (or HELLO ... AUTH default <pw>), if any.
    pub password: Option<Secret>,
    /// Client users (`[[users]]`): AUTH <name> <password>, with a role and key prefixes.
    pub users: Vec<User>,
    /// Where `GET /metrics` (Prometheus text) is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// A second listener, for clients speaking TLS.
    pub tls: Option<TlsSettings>,
    pub log: LogSettings,
    pub hash: HashFn,
    pub distribution: Distribution,
    pub hash_tag: Option<HashTag>,
    pub backend: BackendSettings,
    pub protocol: Limits,
    pub client: ClientLimits,
    /// Commands allowed beyond the defaults (`[commands]`).
    pub policy: Policy,
    pub health: HealthSettings,
    /// Where shard epochs and current primaries are kept across restarts.
    pub state_file: Option<std::path::PathBuf>,
    /// Replica acknowledgements wait this long before a write is answered with an error.
    pub ack_timeout: Duration,
    /// Replicas further behind than this serve no reads.
    pub max_lag: Duration,
    pub shards: Vec<ShardConfig>,
}

/// The `[health]` section: active checks of every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// Every node gets a PING and an INFO replication this often.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Consecutive checks refused or reset that make a node down (a connection refused is
    /// evidence of death; silence is not).
    pub failure_threshold: u32,
    /// Consecutive answers that bring a down node back.
    pub success_threshold: u32,
    /// Silence that makes a node down: a node that keeps its connection but does not answer
    /// (a long script, a huge reply, a fork) is only slow until then.
    #[serde(with = "duration")]
    pub down_after: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval: DEFAULT_HEALTH_INTERVAL,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            down_after: DEFAULT_DOWN_AFTER,
        }
    }
}

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

/// Fenced locks (`[locks]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// `SET key owner NX PX|EX ttl` on a key starting with this is a lock grant; empty: none
    /// is.
    pub prefix: Bytes,
    /// The longest lease a grant or an extension may ask for.
    pub max_ttl: Duration,
    /// After a failover a shard grants no lock for `max_ttl` plus this (clock drift, and the
    /// time the failover took to notice).
    pub freeze_margin: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            prefix: Bytes::from_static(DEFAULT_LOCK_PREFIX.as_bytes()),
            max_ttl: DEFAULT_LOCK_MAX_TTL,
            freeze_margin: DEFAULT_FREEZE_MARGIN,
        }
    }
}

impl LockSettings {
    /// Whether a SET on `key` is a lock grant.
    pub fn in_namespace(&self, key: &[u8]) -> bool {
        !self.prefix.is_empty() && key.starts_with(&self.prefix)
    }

    /// How long a shard refuses grants after a failover.
    pub fn freeze(&self) -> Duration {
        self.max_ttl + self.freeze_margin
    }
}

/// TLS for clients: where, and with which certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain, server certificate first.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

/// A shard whose nodes Redis Sentinel names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub master: String,
    pub addresses: Vec<String>,
}

/// Which commands the operator allows beyond the defaults, and which keys are locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// FLUSHDB and FLUSHALL, sent to every shard.
    pub allow_flush: bool,
    /// KEYS (it walks every key of every shard, blocking each) is refused unless allowed.
    pub allow_keys: bool,
    /// CONFIG SET, CONFIG RESETSTAT, SLOWLOG RESET and LATENCY RESET, sent to every node.
    pub allow_node_admin: bool,
    pub locks: LockSettings,
}

/// The `[backend]` section, read as is (durations in humantime form: "500ms", "2s").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSettings {
    /// Multiplexed connections per node (per client protocol: RESP2 and RESP3 each get a set).
    pub connections: usize,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply before the connection is declared broken.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// First delay before reconnecting to a node that failed; doubles up to the max.
    #[serde(with = "duration")]
    pub reconnect_backoff: Duration,
    #[serde(with = "duration")]
    pub reconnect_backoff_max: Duration,
    /// Requests queued per backend connection before senders wait.
    pub queue_depth: usize,
    /// Connections to one node opened for one client each (a blocking command, a WATCH, a
    /// subscriber) that may be open at once; past it such a client gets an error at once.
    /// Each takes a client slot on the node (Redis's `maxclients`, 10,000 by default).
    pub max_dedicated: usize,
    /// Sent with AUTH on every connection to a node (data and health checks), with
    /// `username` when set (Redis 6 ACL users). Not sent to Sentinels.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS to every node (data and health checks), verifying their certificates against
    /// `tls_ca` for `tls_server_name` (default: the host of the node's address).
    pub tls: bool,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_server_name: Option<String>,
}

impl BackendSettings {
    /// The AUTH command a new node connection sends first, if any.
    pub fn auth_args(&self) -> Option<Vec<&[u8]>> {
        let password = self.password.as_ref()?;
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &self.username {
            args.push(user.as_bytes());
        }
        args.push(password.expose().as_bytes());
        Some(args)
    }
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            connections: DEFAULT_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_BACKEND_TIMEOUT,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            reconnect_backoff_max: DEFAULT_RECONNECT_BACKOFF_MAX,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_dedicated: DEFAULT_MAX_DEDICATED,
            username: None,
            password: None,
            tls: false,
            tls_ca: None,
            tls_server_name: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_clients: usize,
    /// Requests one client may have in flight; reading from it pauses at this depth.
    pub max_pipeline: usize,
    /// Reply bytes held for a client that is not reading; replies wait (and so does reading)
    /// past this.
    pub max_output_buffer: usize,
    /// A client that sends nothing for this long, with nothing in flight, is closed (Redis's
    /// `timeout`); zero means never.
    pub idle_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pipeline: DEFAULT_MAX_PIPELINE,
            max_output_buffer: DEFAULT_MAX_OUTPUT_BUFFER,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The `[log]` section. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter: `info`, `debug`, `shardis=debug,warn`, ...
    pub level: String,
    /// `text` (one line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: DEFAULT_LOG_LEVEL.into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Identity on the ring (default: the primary's `host:port`).
    pub name: String,
    pub primary: String,
    pub replicas: Vec<String>,
    pub weight: u32,
    pub replication: ReplicationMode,
    /// Redis mode: point replicas at the primary at start (else only check and report).
    pub manage_replication: bool,
    pub write_ack: WriteAck,
    pub read_from: ReadFrom,
    pub sentinel: Option<SentinelConfig>,
}

impl ShardConfig {
    /// The shard's nodes: the configured primary, then its replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }
}

impl Config {
    /// Whether clients are served without AUTH: no password and no users.
    pub fn open_to_all(&self) -> bool {
        self.password.is_none() && self.users.is_empty()
    }

    /// Reads `path` (TOML), applies `SHARDIS__...` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let load = || -> Result<Config, ConfigError> {
            let raw: RawConfig = config::Config::builder()
                .add_source(config::File::from(path).format(config::FileFormat::Toml))
                .add_source(env::source())
                .build()?
                .try_deserialize()?;
            raw.validate()
        };
        load().map_err(|e| env::blame(e, &env::overrides()))
    }

    /// Parses TOML text (no environment overrides); used by `shardis dev` and tests.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        raw.validate()
    }

    /// Where keys go under this configuration.
    pub fn router(&self) -> Router {
        let members: Vec<RingMember> = self
            .shards
            .iter()
            .map(|s| RingMember {
                name: s.name.clone(),
                weight: s.weight,
            })
            .collect();
        Router::new(self.hash, self.distribution, self.hash_tag, &members)
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = listen_addr("listen", &self.listen)?;
        let hash = HashFn::parse(&self.routing.hash).ok_or_else(|| {
            invalid(
                "routing.hash",
                format!("{:?}: expected xxh3, fnv1a_64 or md5", self.routing.hash),
            )
        })?;
        let distribution = Distribution::parse(&self.routing.distribution).ok_or_else(|| {
            invalid(
                "routing.distribution",
                format!("{:?}: expected ketama or modula", self.routing.distribution),
            )
        })?;
        let hash_tag = match self.routing.hash_tag.as_str() {
            "" => None,
            spec => Some(HashTag::parse(spec).ok_or_else(|| {
                invalid(
                    "routing.hash_tag",
                    format!("{spec:?}: expected two ASCII characters, or \"\" for none"),
                )
            })?),
        };
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return Err(invalid("password", "empty; leave it out for no password"));
        }
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if u.name.is_empty() || u.name.contains(|c: char| c.is_whitespace()) {
                return Err(invalid(format!("{key}.name"), "empty or has spaces"));
            }
            if u.password.expose().is_empty() {
                return Err(invalid(format!("{key}.password"), "empty"));
            }
            if u.name == "default" && self.password.is_some() {
                return Err(invalid(
                    format!("{key}.name"),
                    "\"default\" is the user of the top-level password",
                ));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} is named twice", u.name),
                ));
            }
        }
        let tls = match self.tls {
            None => None,
            Some(t) => {
                let listen = listen_addr("tls.listen", &t.listen)?;
                crate::net::tls::acceptor(&t.cert, &t.key).map_err(|e| invalid("tls", e))?;
                Some(TlsSettings {
                    listen,
                    cert: t.cert,
                    key: t.key,
                })
            }
        };
        match (&self.backend.tls, &self.backend.tls_ca) {
            (true, None) => {
                return Err(invalid(
                    "backend.tls_ca",
                    "needed with backend.tls: the CA that signs the nodes' certificates",
                ))
            }
            (true, Some(ca)) => {
                crate::net::tls::client_config(ca).map_err(|e| invalid("backend.tls_ca", e))?;
            }
            (false, _) => {}
        }
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(addr) => Some(listen_addr("metrics_listen", addr)?),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("{:?}: {e}", self.log.level)));
        }
        let b = self.backend;
        if b.password.as_ref().is_some_and(|p| p.expose().is_empty()) {
            return Err(invalid("backend.password", "empty; leave it out for none"));
        }
        if b.username.is_some() && b.password.is_none() {
            return Err(invalid("backend.username", "set without backend.password"));
        }
        positive("backend.connections", b.connections)?;
        positive("backend.queue_depth", b.queue_depth)?;
        positive("backend.max_dedicated", b.max_dedicated)?;
        nonzero("backend.connect_timeout", b.connect_timeout)?;
        nonzero("backend.timeout", b.timeout)?;
        nonzero("backend.reconnect_backoff", b.reconnect_backoff)?;
        if b.reconnect_backoff_max < b.reconnect_backoff {
            return Err(invalid(
                "backend.reconnect_backoff_max",
                "must not be shorter than backend.reconnect_backoff",
            ));
        }
        let l = self.limits;
        for (key, v) in [
            ("limits.max_clients", l.max_clients),
            ("limits.max_bulk_len", l.max_bulk_len),
            ("limits.max_inline_len", l.max_inline_len),
            ("limits.max_args", l.max_args),
            ("limits.max_query_buffer", l.max_query_buffer),
            ("limits.max_pipeline", l.max_pipeline),
            ("limits.max_output_buffer", l.max_output_buffer),
        ] {
            positive(key, v)?;
        }
        let h = self.health;
        nonzero("health.interval", h.interval)?;
        nonzero("health.down_after", h.down_after)?;
        if h.failure_threshold == 0 || h.success_threshold == 0 {
            return Err(invalid(
                "health",
                "failure_threshold and success_threshold must be at least 1",
            ));
        }
        let lk = self.locks;
        // A lease must fit in Redis's PX and in the Lua number a script handles exactly.
        if lk.max_ttl.is_zero() || lk.max_ttl > Duration::from_secs(365 * 24 * 3600) {
            return Err(invalid(
                "locks.max_ttl",
                "must be longer than 0 and at most one year",
            ));
        }
        let locks = LockSettings {
            prefix: Bytes::from(lk.prefix.into_bytes()),
            max_ttl: lk.max_ttl,
            freeze_margin: lk.freeze_margin,
        };
        let r = self.replication;
        nonzero("replication.ack_timeout", r.ack_timeout)?;
        let default_mode = parse_mode("replication.mode", &r.mode)?;
        let default_ack = parse_write_ack("replication.write_ack", &r.write_ack)?;
        let default_read = parse_read_from("replication.read_from", &r.read_from)?;
        if self.shards.is_empty() {
            return Err(invalid(
                "shards",
                "at least one [[shards]] entry is required",
            ));
        }
        let mut shards = Vec::with_capacity(self.shards.len());
        for (i, s) in self.shards.into_iter().enumerate() {
            let key = |field: &str| format!("shards[{i}].{field}");
            check_addr(&key("primary"), &s.primary)?;
            for (j, r) in s.replicas.iter().enumerate() {
                check_addr(&key(&format!("replicas[{j}]")), r)?;
                if *r == s.primary {
                    return Err(invalid(
                        key(&format!("replicas[{j}]")),
                        "same as the primary",
                    ));
                }
            }
            if s.weight == 0 {
                return Err(invalid(key("weight"), "must be at least 1"));
            }
            let name = s.name.unwrap_or_else(|| s.primary.clone());
            if name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            let replication = match &s.replication {
                Some(m) => parse_mode(&key("replication"), m)?,
                None => default_mode,
            };
            let write_ack = match &s.write_ack {
                Some(a) => parse_write_ack(&key("write_ack"), a)?,
                None => default_ack,
            };
            if let WriteAck::Replicas(n) = write_ack {
                if s.sentinel.is_none() && usize::from(n) > s.replicas.len() {
                    return Err(invalid(
                        key("write_ack"),
                        format!(
                            "asks for {n} replicas but the shard has {}",
                            s.replicas.len()
                        ),
                    ));
                }
            }
            let read_from = match &s.read_from {
                Some(r) => parse_read_from(&key("read_from"), r)?,
                None => default_read,
            };
            let sentinel = match s.sentinel {
                Some(sentinel) => {
                    if sentinel.master.is_empty() {
                        return Err(invalid(key("sentinel.master"), "must not be empty"));
                    }
                    if sentinel.addresses.is_empty() {
                        return Err(invalid(key("sentinel.addresses"), "give at least one"));
                    }
                    for (j, a) in sentinel.addresses.iter().enumerate() {
                        check_addr(&key(&format!("sentinel.addresses[{j}]")), a)?;
                    }
                    if replication == ReplicationMode::Mirror {
                        return Err(invalid(
                            key("sentinel"),
                            "Sentinel shards use Redis replication, not mirror",
                        ));
                    }
                    Some(SentinelConfig {
                        master: sentinel.master,
                        addresses: sentinel.addresses,
                    })
                }
                None => None,
            };
            shards.push(ShardConfig {
                name,
                primary: s.primary,
                replicas: s.replicas,
                weight: s.weight,
                replication,
                manage_replication: s.manage_replication.unwrap_or(r.manage_replication),
                write_ack,
                read_from,
                sentinel,
            });
        }
        for (i, s) in shards.iter().enumerate() {
            if let Some(j) = shards[..i].iter().position(|o| o.name == s.name) {
                return Err(invalid(
                    format!("shards[{i}].name"),
                    format!("{:?} is already the name of shards[{j}]", s.name),
                ));
            }
            for node in s.nodes() {
                let clash = shards[..i]
                    .iter()
                    .position(|o| o.primary == *node || o.replicas.contains(node));
                if let Some(j) = clash {
                    return Err(invalid(
                        format!("shards[{i}]"),
                        format!("node {node} is already in shards[{j}]"),
                    ));
                }
            }
        }
        Ok(Config {
            listen,
            workers: self.workers,
            shutdown_grace: self.shutdown_grace,
            password: self.password,
            users: self.users,
            metrics_listen,
            tls,
            log: self.log,
            hash,
            distribution,
            hash_tag,
            backend: b,
            protocol: Limits {
                max_bulk_len: l.max_bulk_len,
                max_inline_len: l.max_inline_len,
                max_args: l.max_args,
                max_query_buffer: l.max_query_buffer,
            },
            client: ClientLimits {
                max_clients: l.max_clients,
                max_pipeline: l.max_pipeline,
                max_output_buffer: l.max_output_buffer,
                idle_timeout: l.idle_timeout,
            },
            policy: Policy {
                allow_flush: self.commands.allow_flush,
                allow_keys: self.commands.allow_keys,
                allow_node_admin: self.commands.allow_node_admin,
                locks,
            },
            health: h,
            state_file: r.state_file,
            ack_timeout: r.ack_timeout,
            max_lag: r.max_lag,
            shards,
        })
    }
}

fn parse_mode(key: &str, text: &str) -> Result<ReplicationMode, ConfigError> {
    match text {
        "redis" => Ok(ReplicationMode::Redis),
        "mirror" => Ok(ReplicationMode::Mirror),
        _ => Err(invalid(key, format!("{text:?}: expected redis or mirror"))),
    }
}

/// `primary` or `replicas:N` with N from 1 to 255.
fn parse_write_ack(key: &str, text: &str) -> Result<WriteAck, ConfigError> {
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

fn parse_read_from(key: &str, text: &str) -> Result<ReadFrom, ConfigError> {
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

/// A node address is `host:port` with a non-empty host and a port in 1..=65535.
fn check_addr(key: &str, addr: &str) -> Result<(), ConfigError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("{addr:?} is not host:port")))
    }
}

#[cfg(test)]
mod tests;
