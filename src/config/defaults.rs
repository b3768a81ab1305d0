//! What a key left out of the file is: every default, section by section, in one place. The
//! `Default` impls of the raw sections and of the checked types read them from here.
//!
//! The protocol limits of `[limits]` (`max_bulk_len`, `max_inline_len`, `max_args`,
//! `max_query_buffer`) are the parser's own, [`crate::resp::Limits::default`].

use std::time::Duration;

// ---- top level ----

/// `listen`: loopback only, on the port after Redis's 6379.
pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:6380";

/// `shutdown_grace`: how long sessions get, on SIGTERM/SIGINT, to finish their in-flight
/// requests.
pub(super) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

// ---- [routing] ----

/// `routing.hash`: the hash of a key's bytes (or of its hash tag).
pub(super) const DEFAULT_HASH: &str = "xxh3";

/// `routing.distribution`: how hashes map to shards.
pub(super) const DEFAULT_DISTRIBUTION: &str = "ketama";

/// `routing.hash_tag`: the two characters around the part of a key that is hashed.
pub(super) const DEFAULT_HASH_TAG: &str = "{}";

// ---- [backend] ----

/// `backend.connections`: multiplexed connections per node, per client protocol.
pub(super) const DEFAULT_CONNECTIONS: usize = 2;

/// `backend.connect_timeout`.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `backend.timeout`: how long a request may wait for its reply.
pub(super) const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// `backend.reconnect_backoff`: the first delay before reconnecting to a node that failed.
pub(super) const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// `backend.reconnect_backoff_max`: where the doubling delay stops.
pub(super) const DEFAULT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// `backend.queue_depth`: requests queued per backend connection before senders wait.
pub(super) const DEFAULT_QUEUE_DEPTH: usize = 16 * 1024;

/// Dedicated connections per node (blocked, watching, subscribed clients): a tenth of Redis's
/// default `maxclients`, so that one proxy's blocked clients leave a node room for the shared
/// connections, health checks and other proxies.
pub const DEFAULT_MAX_DEDICATED: usize = 1_000;

// ---- [limits], the client side ----

/// `limits.max_clients`: Redis's own default `maxclients`.
pub(super) const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// `limits.max_pipeline`: requests one client may have in flight.
pub(super) const DEFAULT_MAX_PIPELINE: usize = 4096;

/// `limits.max_output_buffer`: reply bytes held for a client that is not reading (64 MiB).
pub(super) const DEFAULT_MAX_OUTPUT_BUFFER: usize = 64 * 1024 * 1024;

/// `limits.idle_timeout`: zero, idle clients are never closed.
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::ZERO;

// ---- [log] ----

/// `log.level`, a `tracing` filter.
pub(super) const DEFAULT_LOG_LEVEL: &str = "info";

// ---- [health] ----

/// `health.interval`: how often every node gets a PING and an INFO replication.
pub(super) const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// `health.failure_threshold`: consecutive checks refused or reset that make a node down.
pub(super) const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// `health.success_threshold`: consecutive answers that bring a down node back.
pub(super) const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;

/// How long a node may stay silent before it is down: Sentinel's `down-after-milliseconds`
/// default. Silence is what a slow node and a dead one share, and slow nodes are silent for
/// longer than one would guess: Redis answers nothing during the first `busy-reply-threshold`
/// (5 s) of a long script, and one client pipelining 400 GETs of an 8 MiB value without reading
/// kept a Redis 7.0 silent for 7.2 s on an idle 2-core machine, over 10 s on a busy one. A
/// node that refuses connections (crashed, restarted) is down after `failure_threshold` checks
/// instead, in about three intervals.
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(30);

// ---- [replication] ----

/// `replication.mode`: Redis's own replication.
pub(super) const DEFAULT_REPLICATION_MODE: &str = "redis";

/// `replication.manage_replication`: point replicas at their primary at start.
pub(super) const DEFAULT_MANAGE_REPLICATION: bool = true;

/// `replication.write_ack`: a write is answered as soon as the primary answers.
pub(super) const DEFAULT_WRITE_ACK: &str = "primary";

/// `replication.ack_timeout`: how long a write waits for its replicas' acknowledgements.
pub(super) const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// `replication.read_from`: reads go to the primary.
pub(super) const DEFAULT_READ_FROM: &str = "primary";

/// `replication.max_lag`: replicas further behind serve no reads.
pub(super) const DEFAULT_MAX_LAG: Duration = Duration::from_secs(1);

// ---- [locks] ----

/// `locks.prefix`: keys starting with it are locks.
pub(super) const DEFAULT_LOCK_PREFIX: &str = "lock:";

/// `locks.max_ttl`: the longest lease a grant or an extension may ask for.
pub(super) const DEFAULT_LOCK_MAX_TTL: Duration = Duration::from_secs(30);

/// `locks.freeze_margin`: added to `max_ttl` for how long a shard grants no lock after a
/// failover.
pub(super) const DEFAULT_FREEZE_MARGIN: Duration = Duration::from_secs(1);

// ---- [[shards]] ----

/// `weight`: a shard's share of the ring, relative to the others.
pub(super) const DEFAULT_WEIGHT: u32 = 1;
