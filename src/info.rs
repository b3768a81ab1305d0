//! INFO: the proxy's own sections, plus the keyspace summed over every shard.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::local::REDIS_COMPAT_VERSION;
use crate::resp::{Request as ClientRequest, Value};
use crate::server::Proxy;
use crate::topology::Topology;

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "stats",
    "commandstats",
    "shards",
    "locks",
    "keyspace",
];

/// An INFO request whose proxy-side figures were taken when it was planned; the shards' keyspace
/// lines are merged in when their replies arrive.
pub struct Request {
    text: String,
    keyspace: bool,
}

impl Request {
    pub fn new(proxy: &Proxy, topology: &Topology, req: &ClientRequest) -> Request {
        let wanted: Vec<String> = req.args()[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        let every = wanted.iter().any(|w| w == "all" || w == "everything");
        let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
        // As on Redis, command statistics are shown only when asked for (or with `all`).
        let want =
            |s: &str| every || (default && s != "commandstats") || wanted.iter().any(|w| w == s);
        let mut text = String::new();
        for section in SECTIONS.iter().filter(|s| want(s) && **s != "keyspace") {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = section.to_string();
            title[..1].make_ascii_uppercase();
            text.push_str(&format!("# {title}\r\n"));
            render_section(&mut text, section, proxy, topology);
        }
        Request {
            text,
            keyspace: want("keyspace"),
        }
    }

    /// The full INFO text. `keyspaces` holds each shard's `INFO keyspace` text, `None` for a
    /// shard that did not answer.
    pub fn render(self, keyspaces: &[Option<Bytes>]) -> Value {
        let mut text = self.text;
        if self.keyspace {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            text.push_str("# Keyspace\r\n");
            let (mut keys, mut expires, mut ttl_weighted) = (0u64, 0u64, 0u128);
            let mut any = false;
            for ks in keyspaces.iter().flatten() {
                for line in String::from_utf8_lossy(ks).lines() {
                    let Some(fields) = line.strip_prefix("db0:") else {
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
            }
            if any {
                let avg_ttl = if expires > 0 {
                    ttl_weighted / u128::from(expires)
                } else {
                    0
                };
                let _ = write!(
                    text,
                    "db0:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
                );
            }
        }
        Value::Verbatim(Bytes::from(text))
    }
}

fn render_section(text: &mut String, section: &str, proxy: &Proxy, topology: &Topology) {
    let stats = &proxy.stats;
    let config = proxy.config();
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(text, "{k}:{v}\r\n");
    };
    match section {
        "server" => {
            kv("redis_version", &REDIS_COMPAT_VERSION);
            kv("redis_mode", &"standalone");
            kv("shardis_version", &env!("CARGO_PKG_VERSION"));
            kv("process_id", &std::process::id());
            kv("tcp_port", &proxy.listen_addr().port());
            let uptime = stats.started.elapsed().as_secs();
            kv("uptime_in_seconds", &uptime);
            kv("uptime_in_days", &(uptime / 86_400));
        }
        "clients" => {
            kv(
                "connected_clients",
                &stats.connected.load(Ordering::Relaxed),
            );
            kv("maxclients", &config.client.max_clients);
        }
        "stats" => {
            let t = &proxy.telemetry;
            for (name, counter) in [
                ("total_connections_received", &stats.connections),
                ("total_commands_processed", &stats.commands),
                ("rejected_connections", &stats.rejected),
                ("total_net_input_bytes", &t.net_input),
                ("total_net_output_bytes", &t.net_output),
                ("config_reloads", &t.reloads_ok),
                ("config_reload_failures", &t.reloads_failed),
            ] {
                kv(name, &counter.load(Ordering::Relaxed));
            }
        }
        // Redis's format; `usec` runs from reading the command to its reply being ready.
        "commandstats" => {
            for (name, s) in proxy.telemetry.commands() {
                let calls = s.calls.load(Ordering::Relaxed);
                let usec = s.usec.load(Ordering::Relaxed);
                let value = format!(
                    "calls={calls},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls={}",
                    usec as f64 / calls.max(1) as f64,
                    s.failed.load(Ordering::Relaxed),
                );
                kv(&format!("cmdstat_{name}"), &value);
            }
        }
        "shards" => {
            kv("shards", &topology.shards.len());
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
                kv(&format!("shard{i}"), &value);
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
                        n.requests.load(Ordering::Relaxed),
                        n.errors.load(Ordering::Relaxed),
                        node.pool.open(),
                        node.pool.dedicated_open(),
                    );
                    kv(&format!("shard{i}_node{j}"), &value);
                }
            }
        }
        "locks" => {
            kv(
                "lock_prefix",
                &String::from_utf8_lossy(&config.policy.locks.prefix),
            );
            kv("lock_max_ttl_ms", &config.policy.locks.max_ttl.as_millis());
            kv("lock_freeze_ms", &config.policy.locks.freeze().as_millis());
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
                kv(&format!("lock_shard{i}"), &value);
            }
        }
        _ => {}
    }
}
