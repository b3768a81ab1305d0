//! INFO: every section Redis 7.0 has, plus shardis' own (`shards`, `locks`).
//!
//! Each field is one of three kinds, and the README lists which is which: the proxy's own
//! figure (its clients, commands, process, CPU), the fleet's figure made from the primaries'
//! own INFO (memory, persistence, replication, keyspace: summed, the largest, the oldest, or
//! `ok` only when every primary says so), or a fixed answer that describes what the proxy is
//! (`role:master`, `cluster_enabled:0`). The proxy's figures are read when the request is
//! planned; the fleet's are merged in when the primaries' replies arrive.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::proxy::Proxy;
use crate::resp::{Request as ClientRequest, Value};
use crate::session::local::REDIS_COMPAT_VERSION;
use crate::topology::Topology;

/// Redis 7.0's sections, in its order, then shardis' own.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "commandstats",
    "errorstats",
    "latencystats",
    "cluster",
    "keyspace",
    "shards",
    "locks",
];

/// Shown only when asked for by name, or with `all` / `everything`, as on Redis.
const NOT_DEFAULT: &[&str] = &["commandstats", "latencystats"];

/// An INFO request: the proxy's own lines per section, taken when it was planned; the fleet's
/// lines are added when the primaries' replies arrive.
pub struct Request {
    sections: Vec<(&'static str, String)>,
}

impl Request {
    pub fn new(proxy: &Proxy, topology: &Topology, req: &ClientRequest) -> Request {
        let wanted: Vec<String> = req.args()[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        let every = wanted.iter().any(|w| w == "all" || w == "everything");
        let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
        let want = |s: &str| {
            every || (default && !NOT_DEFAULT.contains(&s)) || wanted.iter().any(|w| w == s)
        };
        // /proc is read once, and only for the sections that show it.
        let process = if want("memory") || want("cpu") {
            Process::read()
        } else {
            Process::default()
        };
        let sections = SECTIONS
            .iter()
            .filter(|s| want(s))
            .map(|&s| {
                let mut text = String::new();
                own_lines(&mut text, s, proxy, topology, &process);
                (s, text)
            })
            .collect();
        Request { sections }
    }

    /// The full INFO text. `replies` holds each primary's INFO text (memory, persistence,
    /// stats, replication and keyspace), `None` for a shard that did not answer.
    pub fn render(self, replies: &[Option<Bytes>]) -> Value {
        let fleet = Fleet::parse(replies);
        let mut text = String::new();
        for (section, own) in self.sections {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = section.to_string();
            title[..1].make_ascii_uppercase();
            if section == "cpu" {
                title = "CPU".into();
            }
            let _ = write!(text, "# {title}\r\n");
            // The fleet's memory figures first: redis-cli --stat finds `used_memory` by the
            // first line that merely contains the name, so `proxy_used_memory_*` must follow.
            if section == "memory" {
                fleet.lines(&mut text, section);
                text.push_str(&own);
            } else {
                text.push_str(&own);
                fleet.lines(&mut text, section);
            }
        }
        Value::Verbatim(Bytes::from(text))
    }
}

fn kv(text: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = write!(text, "{k}:{v}\r\n");
}

/// A 40-hex-digit id for this process, new at every start (Redis's `run_id`).
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        let seed = (std::process::id(), std::time::SystemTime::now());
        (0..3)
            .map(|i| format!("{:016x}", RandomState::new().hash_one((seed, i))))
            .collect::<String>()[..40]
            .to_string()
    })
}

/// The proxy's own lines for a section.
fn own_lines(
    text: &mut String,
    section: &str,
    proxy: &Proxy,
    topology: &Topology,
    process: &Process,
) {
    let stats = &proxy.stats;
    let t = &proxy.telemetry;
    let config = proxy.config();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    match section {
        "server" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let uptime = stats.started.elapsed().as_secs();
            kv(text, "redis_version", REDIS_COMPAT_VERSION);
            kv(text, "redis_git_sha1", "00000000");
            kv(text, "redis_git_dirty", 0);
            kv(text, "redis_build_id", "0");
            kv(text, "redis_mode", "standalone");
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            kv(
                text,
                "os",
                format!("Linux {} {}", release.trim(), std::env::consts::ARCH),
            );
            kv(text, "arch_bits", usize::BITS);
            kv(text, "monotonic_clock", "POSIX clock_gettime");
            kv(text, "multiplexing_api", "epoll");
            kv(text, "atomicvar_api", "c11-builtin");
            kv(text, "gcc_version", "0.0.0");
            kv(text, "process_id", std::process::id());
            kv(text, "process_supervised", "no");
            kv(text, "run_id", run_id());
            kv(text, "tcp_port", proxy.listen_addr().port());
            kv(text, "server_time_usec", now.as_micros());
            kv(text, "uptime_in_seconds", uptime);
            kv(text, "uptime_in_days", uptime / 86_400);
            kv(text, "hz", 10);
            kv(text, "configured_hz", 10);
            kv(text, "lru_clock", now.as_secs() & ((1 << 24) - 1));
            kv(
                text,
                "executable",
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            kv(
                text,
                "config_file",
                proxy
                    .config_path()
                    .map(|p| {
                        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                        p.display().to_string()
                    })
                    .unwrap_or_default(),
            );
            kv(text, "io_threads_active", 0);
            kv(text, "shardis_version", env!("CARGO_PKG_VERSION"));
        }
        "clients" => {
            let (input, output) = proxy.clients.recent_max_buffers();
            kv(
                text,
                "connected_clients",
                stats.connected.load(Ordering::Relaxed),
            );
            kv(text, "cluster_connections", 0);
            kv(text, "maxclients", config.client.max_clients);
            kv(text, "client_recent_max_input_buffer", input);
            kv(text, "client_recent_max_output_buffer", output);
            kv(
                text,
                "blocked_clients",
                stats.blocked.load(Ordering::Relaxed),
            );
            kv(text, "tracking_clients", 0);
            kv(text, "clients_in_timeout_table", 0);
        }
        "memory" => {
            kv(text, "proxy_used_memory_rss", process.rss);
            kv(text, "proxy_used_memory_rss_human", human(process.rss));
            kv(text, "proxy_used_memory_peak", process.peak_rss);
            kv(
                text,
                "proxy_used_memory_peak_human",
                human(process.peak_rss),
            );
        }
        "stats" => {
            let rates = t.rates();
            kv(text, "total_connections_received", n(&stats.connections));
            kv(text, "total_commands_processed", t.processed());
            kv(text, "instantaneous_ops_per_sec", rates.ops_per_sec);
            kv(text, "total_net_input_bytes", t.net_input());
            kv(text, "total_net_output_bytes", t.net_output());
            kv(
                text,
                "instantaneous_input_kbps",
                format!("{:.2}", rates.input_kbps),
            );
            kv(
                text,
                "instantaneous_output_kbps",
                format!("{:.2}", rates.output_kbps),
            );
            kv(text, "rejected_connections", n(&stats.rejected));
            kv(text, "total_error_replies", t.error_replies());
            kv(text, "config_reloads", n(&t.reloads_ok));
            kv(text, "config_reload_failures", n(&t.reloads_failed));
        }
        "replication" => {
            kv(text, "role", "master");
        }
        "cpu" => {
            kv(text, "used_cpu_sys", format!("{:.6}", process.cpu_sys));
            kv(text, "used_cpu_user", format!("{:.6}", process.cpu_user));
            kv(text, "used_cpu_sys_children", "0.000000");
            kv(text, "used_cpu_user_children", "0.000000");
        }
        // Redis's format; `usec` runs from reading the command to its reply being ready.
        "commandstats" => {
            for (name, s) in t.commands() {
                let (calls, rejected) = (s.calls, s.rejected);
                let ran = calls.saturating_sub(rejected);
                let usec = s.usec;
                let value = format!(
                    "calls={ran},usec={usec},usec_per_call={:.2},rejected_calls={rejected},failed_calls={}",
                    usec as f64 / ran.max(1) as f64,
                    s.failed.saturating_sub(rejected),
                );
                kv(text, &format!("cmdstat_{name}"), value);
            }
        }
        "errorstats" => {
            for (code, count) in t.errors() {
                kv(text, &format!("errorstat_{code}"), format!("count={count}"));
            }
        }
        "latencystats" => {
            for (name, s) in t.commands() {
                if let Some([p50, p99, p999]) = t.percentiles(s.cmd, [50.0, 99.0, 99.9]) {
                    kv(
                        text,
                        &format!("latency_percentiles_usec_{name}"),
                        format!("p50={p50:.3},p99={p99:.3},p99.9={p999:.3}"),
                    );
                }
            }
        }
        "cluster" => kv(text, "cluster_enabled", 0),
        "shards" => shards(text, proxy, topology),
        "locks" => locks(text, proxy, topology),
        _ => {}
    }
}

fn shards(text: &mut String, proxy: &Proxy, topology: &Topology) {
    let config = proxy.config();
    kv(text, "shards", topology.shards.len());
    for (i, shard) in topology.shards.iter().enumerate() {
        let view = shard.view();
        let state = shard.state();
        let weight = config.shards.get(i).map_or(1, |s| s.weight);
        let value = format!(
            "name={},epoch={},primary={},state={state},problem={},weight={weight},replicas={},failovers={}",
            shard.name,
            view.epoch,
            view.primary.addr,
            shard.problem().code(),
            view.replicas.len(),
            shard.failovers(),
        );
        kv(text, &format!("shard{i}"), value);
        for (j, node) in view.nodes().enumerate() {
            let h = &node.health;
            let n = node.pool.stats();
            let value = format!(
                "addr={},role={},health={},offset={},lag_ms={},readable={},requests={},errors={},connections={},dedicated={}",
                node.addr,
                if j == 0 { "primary" } else { "replica" },
                h.describe(),
                h.offset(),
                h.lag_ms(),
                if (j == 0 && h.is_up()) || h.is_readable() {
                    "yes"
                } else {
                    "no"
                },
                n.requests(),
                n.errors(),
                node.pool.open(),
                node.pool.dedicated_open(),
            );
            kv(text, &format!("shard{i}_node{j}"), value);
        }
    }
}

fn locks(text: &mut String, proxy: &Proxy, topology: &Topology) {
    let config = proxy.config();
    kv(
        text,
        "lock_prefix",
        String::from_utf8_lossy(&config.policy.locks.prefix),
    );
    kv(
        text,
        "lock_max_ttl_ms",
        config.policy.locks.max_ttl.as_millis(),
    );
    kv(
        text,
        "lock_freeze_ms",
        config.policy.locks.freeze().as_millis(),
    );
    for (i, shard) in topology.shards.iter().enumerate() {
        let s = &shard.lock_stats;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let value = format!(
            "name={},epoch={},frozen_ms={},grants={},contended={},frozen={},not_replicated={},stale_tokens={}",
            shard.name,
            shard.view().epoch,
            shard.lock_freeze_left().map_or(0, |d| d.as_millis()),
            n(&s.grants),
            n(&s.contended),
            n(&s.frozen),
            n(&s.not_replicated),
            n(&s.stale),
        );
        kv(text, &format!("lock_shard{i}"), value);
    }
}

/// What the primaries' INFO said, one map of fields per primary that answered.
struct Fleet {
    primaries: Vec<HashMap<String, String>>,
    shards: usize,
}

impl Fleet {
    fn parse(replies: &[Option<Bytes>]) -> Fleet {
        let primaries = replies
            .iter()
            .flatten()
            .map(|text| {
                String::from_utf8_lossy(text)
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        Fleet {
            primaries,
            shards: replies.len(),
        }
    }

    fn numbers<'a>(&'a self, field: &'a str) -> impl Iterator<Item = u64> + 'a {
        self.primaries
            .iter()
            .filter_map(move |p| p.get(field)?.parse().ok())
    }

    fn sum(&self, field: &str) -> u64 {
        self.numbers(field).sum()
    }

    fn max(&self, field: &str) -> u64 {
        self.numbers(field).max().unwrap_or(0)
    }

    /// The smallest that any primary reported, or 0 when none did.
    fn min(&self, field: &str) -> u64 {
        self.numbers(field).min().unwrap_or(0)
    }

    /// `ok` when every primary that answered says `ok`, else `err`.
    fn all_ok(&self, field: &str) -> &'static str {
        if self
            .primaries
            .iter()
            .all(|p| p.get(field).is_none_or(|v| v == "ok"))
        {
            "ok"
        } else {
            "err"
        }
    }

    /// The value every primary reported, or `mixed` when they differ.
    fn same(&self, field: &str) -> String {
        let mut values = self.primaries.iter().filter_map(|p| p.get(field));
        let first = values.next().cloned().unwrap_or_default();
        if values.all(|v| *v == first) {
            first
        } else {
            "mixed".into()
        }
    }

    /// The fleet's lines for a section.
    fn lines(&self, text: &mut String, section: &str) {
        match section {
            "memory" => {
                for field in [
                    "used_memory",
                    "used_memory_rss",
                    "used_memory_peak",
                    "used_memory_dataset",
                    "used_memory_lua",
                    "used_memory_scripts",
                    "maxmemory",
                ] {
                    let total = self.sum(field);
                    kv(text, field, total);
                    if field != "used_memory_dataset" {
                        kv(text, &format!("{field}_human"), human(total));
                    }
                }
                kv(text, "maxmemory_policy", self.same("maxmemory_policy"));
                let (rss, used) = (self.sum("used_memory_rss"), self.sum("used_memory"));
                let ratio = if used > 0 {
                    rss as f64 / used as f64
                } else {
                    0.0
                };
                kv(text, "mem_fragmentation_ratio", format!("{ratio:.2}"));
                kv(text, "fleet_primaries", self.shards);
                kv(text, "fleet_primaries_answered", self.primaries.len());
            }
            "persistence" => {
                for field in ["loading", "async_loading"] {
                    kv(text, field, self.max(field));
                }
                kv(
                    text,
                    "rdb_changes_since_last_save",
                    self.sum("rdb_changes_since_last_save"),
                );
                kv(
                    text,
                    "rdb_bgsave_in_progress",
                    self.max("rdb_bgsave_in_progress"),
                );
                kv(text, "rdb_last_save_time", self.min("rdb_last_save_time"));
                kv(
                    text,
                    "rdb_last_bgsave_status",
                    self.all_ok("rdb_last_bgsave_status"),
                );
                kv(text, "rdb_saves", self.sum("rdb_saves"));
                for field in ["aof_enabled", "aof_rewrite_in_progress"] {
                    kv(text, field, self.max(field));
                }
                kv(text, "aof_rewrites", self.sum("aof_rewrites"));
                for field in ["aof_last_bgrewrite_status", "aof_last_write_status"] {
                    kv(text, field, self.all_ok(field));
                }
            }
            "stats" => {
                for field in [
                    "expired_keys",
                    "evicted_keys",
                    "keyspace_hits",
                    "keyspace_misses",
                    "pubsub_channels",
                    "total_forks",
                ] {
                    kv(text, field, self.sum(field));
                }
                // Every shard holds every pattern a proxy subscriber asked for.
                kv(text, "pubsub_patterns", self.max("pubsub_patterns"));
            }
            "replication" => {
                kv(text, "connected_slaves", self.sum("connected_slaves"));
                kv(text, "master_failover_state", "no-failover");
                kv(text, "master_replid", run_id());
                kv(text, "master_repl_offset", self.sum("master_repl_offset"));
            }
            "keyspace" => {
                let (mut keys, mut expires, mut ttl_weighted) = (0u64, 0u64, 0u128);
                let mut any = false;
                for p in &self.primaries {
                    let Some(fields) = p.get("db0") else {
                        continue;
                    };
                    any = true;
                    let field = |name: &str| -> u64 {
                        fields
                            .split(',')
                            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0)
                    };
                    keys += field("keys");
                    let e = field("expires");
                    expires += e;
                    ttl_weighted += u128::from(field("avg_ttl")) * u128::from(e);
                }
                if any {
                    let avg_ttl = if expires > 0 {
                        ttl_weighted / u128::from(expires)
                    } else {
                        0
                    };
                    kv(
                        text,
                        "db0",
                        format!("keys={keys},expires={expires},avg_ttl={avg_ttl}"),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Bytes as Redis writes them for people (`bytesToHuman`): `941.40K`, `6.90M`, `200B`.
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    const K: f64 = 1024.0;
    if b < K {
        format!("{bytes}B")
    } else if b < K * K {
        format!("{:.2}K", b / K)
    } else if b < K * K * K {
        format!("{:.2}M", b / (K * K))
    } else if b < K * K * K * K {
        format!("{:.2}G", b / (K * K * K))
    } else {
        format!("{:.2}T", b / (K * K * K * K))
    }
}

/// The proxy process's memory and CPU, from /proc (zero where it cannot be read).
#[derive(Default)]
struct Process {
    rss: u64,
    peak_rss: u64,
    cpu_user: f64,
    cpu_sys: f64,
}

impl Process {
    fn read() -> Process {
        let mut p = Process::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kib = |name: &str| -> u64 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0)
                    * 1024
            };
            p.rss = kib("VmRSS:");
            p.peak_rss = kib("VmHWM:");
        }
        // Fields 14 and 15 (utime, stime), in clock ticks, which Linux gives user space at
        // 100 a second on every architecture; the name (field 2) may hold spaces, so the
        // fields are counted after its closing parenthesis.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
                p.cpu_user = ticks(11).unwrap_or(0.0) / 100.0;
                p.cpu_sys = ticks(12).unwrap_or(0.0) / 100.0;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_read_as_redis_writes_them() {
        assert_eq!(human(200), "200B");
        assert_eq!(human(963_992), "941.40K");
        assert_eq!(human(7_233_536), "6.90M");
    }

    #[test]
    fn fleet_sums_sizes_and_keeps_the_oldest_save() {
        let a = Bytes::from_static(b"used_memory:100\r\nrdb_last_save_time:50\r\nrdb_last_bgsave_status:ok\r\ndb0:keys=3,expires=1,avg_ttl=10\r\n");
        let b = Bytes::from_static(b"used_memory:50\r\nrdb_last_save_time:40\r\nrdb_last_bgsave_status:err\r\ndb0:keys=2,expires=1,avg_ttl=30\r\n");
        let fleet = Fleet::parse(&[Some(a), Some(b), None]);
        assert_eq!(fleet.sum("used_memory"), 150);
        assert_eq!(fleet.min("rdb_last_save_time"), 40);
        assert_eq!(fleet.all_ok("rdb_last_bgsave_status"), "err");
        let mut text = String::new();
        fleet.lines(&mut text, "keyspace");
        assert_eq!(text, "db0:keys=5,expires=2,avg_ttl=20\r\n");
        let mut text = String::new();
        fleet.lines(&mut text, "memory");
        assert!(text.contains("fleet_primaries:3\r\nfleet_primaries_answered:2\r\n"));
    }
}
