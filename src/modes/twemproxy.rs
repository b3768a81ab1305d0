//! `shardis --from-twemproxy nutcracker.yml`: a twemproxy (nutcracker 0.5.0) configuration
//! turned into shardis configuration that places every key on the same server.
//!
//! Each twemproxy Redis pool becomes one shardis configuration (one shardis process serves one
//! pool); memcached pools are skipped, each named on stderr.
//! What decides where a key goes (hash, distribution, hash tag, and each server's name on the
//! ring and weight) is carried over exactly, or the conversion fails: a configuration that would
//! quietly move keys is never printed. Settings with a shardis counterpart are mapped; those
//! without one are listed in comments. Every configuration printed has passed shardis' own
//! validation.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::config::{BackendSettings, Config};

/// twemproxy's hash functions that shardis does not implement.
const OTHER_HASHES: &[&str] = &[
    "one_at_a_time",
    "fnv1_64",
    "fnv1_32",
    "fnv1a_32",
    "hsieh",
    "murmur",
    "jenkins",
    "crc16",
    "crc32",
    "crc32a",
];

/// twemproxy's port for memcached: a server on it is named on the ring by its host alone.
const KETAMA_PORT: u16 = 11211;

/// `shardis --from-twemproxy FILE`: prints the converted configuration on stdout, and each
/// pool left out as `shardis: FILE: pool <name> skipped: <why>` on stderr; or
/// `shardis: FILE: <why>` on stderr when nothing can be converted.
pub fn run(path: &Path) -> ExitCode {
    let converted = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| convert(&text));
    let printed = match converted {
        Ok(converted) => {
            for line in &converted.skipped {
                eprintln!("shardis: {}: {line}", path.display());
            }
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(converted.toml.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("cannot print the configuration: {e}"))
        }
        Err(e) => Err(e),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardis: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Why a memcached pool is left out.
const MEMCACHED: &str = "redis: not true, so this is a memcached pool (twemproxy's default); \
                         shardis speaks the Redis protocol only";

/// A twemproxy file as shardis configuration.
#[derive(Debug)]
pub struct Converted {
    /// One configuration per Redis pool (see [`convert`]).
    pub toml: String,
    /// One line per pool left out, naming it and saying why: `pool <name> skipped: <why>`.
    pub skipped: Vec<String>,
}

/// Converts a twemproxy YAML configuration into shardis TOML: one configuration per Redis pool,
/// each headed by a `# pool <name>` line; several are separated by a blank line and a `# ---`
/// line. Memcached pools are skipped (and listed in [`Converted::skipped`]); a file without a
/// Redis pool is an error. Any other error names the pool and the twemproxy key at fault, and
/// nothing is converted.
pub fn convert(yaml: &str) -> Result<Converted, String> {
    let docs = YamlLoader::load_from_str(yaml).map_err(|e| format!("not valid YAML: {e}"))?;
    let pools = match docs.as_slice() {
        [Yaml::Hash(pools)] if !pools.is_empty() => pools,
        [] | [Yaml::Hash(_) | Yaml::Null | Yaml::BadValue] => {
            return Err("no pool: the file is empty".into())
        }
        [_] => return Err("expected a mapping of pool names to their settings".into()),
        _ => return Err("several YAML documents; twemproxy reads one".into()),
    };
    let mut documents = Vec::with_capacity(pools.len());
    let mut memcached = Vec::new();
    for (name, settings) in pools.iter() {
        let name = scalar_text(name).ok_or("a pool's name is not a plain word")?;
        let shown = comment_text(&name);
        if !is_redis(settings).map_err(|e| format!("pool {shown}: {e}"))? {
            memcached.push(shown);
            continue;
        }
        let pool = read_pool(settings).map_err(|e| format!("pool {shown}: {e}"))?;
        let document = render(&shown, &pool);
        if let Err(e) = Config::from_toml(&document) {
            return Err(format!(
                "pool {shown}: shardis refuses the converted configuration: {e}"
            ));
        }
        documents.push(document);
    }
    let toml = match documents.len() {
        0 => {
            return Err(match memcached.as_slice() {
                [one] => format!("pool {one}: {MEMCACHED}; the file has no other pool"),
                all => format!(
                    "no Redis pool (redis: true) to convert; shardis speaks the Redis protocol \
                     only, and all {} pools are memcached pools: {}",
                    all.len(),
                    all.join(", ")
                ),
            })
        }
        1 => documents.concat(),
        n => {
            let mut out = format!(
                "# {n} twemproxy pools, so {n} shardis configurations, separated by \"# ---\" lines.\n\
                 # One shardis process serves one configuration: save each part as its own file and run a\n\
                 # shardis for each pool.\n\n"
            );
            out.push_str(&documents.join("\n# ---\n"));
            out
        }
    };
    let skipped = memcached
        .iter()
        .map(|name| format!("pool {name} skipped: {MEMCACHED}"))
        .collect();
    Ok(Converted { toml, skipped })
}

/// Whether a pool is a Redis pool (`redis: true`); twemproxy's default is memcached.
fn is_redis(settings: &Yaml) -> Result<bool, String> {
    let Yaml::Hash(map) = settings else {
        return Err("expected a mapping of settings".into());
    };
    match map.get(&Yaml::String("redis".into())) {
        Some(value) => boolean("redis", value),
        None => Ok(false),
    }
}

/// One twemproxy pool, read and checked.
#[derive(Debug)]
struct Pool {
    listen: String,
    hash: &'static str,
    distribution: &'static str,
    /// Two characters, or empty for none.
    hash_tag: String,
    password: Option<String>,
    timeout_ms: Option<u64>,
    retry_ms: Option<u64>,
    connections: Option<u64>,
    auto_eject: bool,
    shards: Vec<Shard>,
    /// twemproxy settings left out, each with the reason.
    ignored: Vec<String>,
}

/// One twemproxy server as a shardis shard.
#[derive(Debug, PartialEq, Eq)]
struct Shard {
    /// Its identity on the ring, as twemproxy derives it.
    name: String,
    primary: String,
    weight: u32,
}

fn read_pool(settings: &Yaml) -> Result<Pool, String> {
    let Yaml::Hash(map) = settings else {
        return Err("expected a mapping of settings".into());
    };
    let mut listen = None;
    let mut hash = None;
    let mut distribution = None;
    let mut hash_tag = None;
    // twemproxy's defaults: database 0, no timeout, no ejection.
    let mut redis_db = 0;
    let mut password = None;
    let mut timeout_ms = None;
    let mut retry_ms = None;
    let mut connections = None;
    let mut auto_eject = false;
    let mut servers = None;
    let mut ignored = Vec::new();
    for (key, value) in map.iter() {
        let key = scalar_text(key).ok_or("a setting's name is not a plain word")?;
        let key = key.as_str();
        match key {
            "listen" => listen = Some(text(key, value)?),
            "hash" => hash = Some(text(key, value)?),
            "distribution" => distribution = Some(text(key, value)?),
            "hash_tag" => hash_tag = Some(text(key, value)?),
            // Read by `is_redis` before this pool was.
            "redis" => {}
            "redis_db" => redis_db = number(key, value)?,
            "redis_auth" => password = Some(text(key, value)?),
            "timeout" => timeout_ms = Some(number(key, value)?),
            "server_retry_timeout" => retry_ms = Some(number(key, value)?),
            "server_connections" => connections = Some(number(key, value)?),
            "auto_eject_hosts" => auto_eject = boolean(key, value)?,
            "servers" => servers = Some(value),
            "backlog" | "tcpkeepalive" => {
                ignored.push(format!("{key}: shardis has no such setting"))
            }
            "preconnect" => ignored.push(format!(
                "{key}: shardis connects to every node when it starts"
            )),
            "client_connections" => ignored.push(format!(
                "{key}: not carried over; [limits] max_clients caps clients in shardis"
            )),
            "server_failure_limit" => ignored.push(format!(
                "{key}: it counts failures for auto_eject_hosts, and shardis never ejects"
            )),
            other => ignored.push(format!(
                "{}: not a twemproxy 0.5.0 setting",
                comment_text(other)
            )),
        }
    }

    if redis_db != 0 {
        return Err(format!(
            "redis_db: {redis_db}: shardis serves database 0 only"
        ));
    }
    let listen = listen.ok_or("listen: missing")?;
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(if listen.starts_with('/') {
            format!("listen: {listen:?} is a unix socket; shardis listens on TCP ip:port only")
        } else {
            format!("listen: {listen:?} is not ip:port; shardis needs a numeric address")
        });
    }
    let hash = match hash.as_deref() {
        // twemproxy's default.
        None | Some("fnv1a_64") => "fnv1a_64",
        Some("md5") => "md5",
        Some(h) if OTHER_HASHES.contains(&h) => {
            return Err(format!(
                "hash: {h}: shardis places keys as twemproxy does only with fnv1a_64 and md5 \
                 (and has xxh3 for new fleets); another hash would move keys"
            ))
        }
        Some(h) => return Err(format!("hash: {h:?} is not a twemproxy hash")),
    };
    let distribution = match distribution.as_deref() {
        // twemproxy's default.
        None | Some("ketama") => "ketama",
        Some("modula") => "modula",
        Some("random") => {
            return Err(
                "distribution: random sends each request to any server; shardis places every \
                 key by its hash (ketama or modula)"
                    .into(),
            )
        }
        Some(d) => {
            return Err(format!(
                "distribution: {d:?} is not a twemproxy distribution"
            ))
        }
    };
    // No hash_tag in twemproxy: whole keys are hashed ("" in shardis).
    let hash_tag = hash_tag.unwrap_or_default();
    let two_ascii = hash_tag.len() == 2 && hash_tag.is_ascii();
    if !hash_tag.is_empty() && !two_ascii {
        return Err(format!(
            "hash_tag: {hash_tag:?}: expected two characters (shardis: two ASCII characters)"
        ));
    }
    if connections == Some(0) {
        return Err("server_connections: 0; at least 1 is needed".into());
    }
    let servers = match servers {
        Some(Yaml::Array(list)) if !list.is_empty() => list,
        Some(Yaml::Array(_)) | Some(Yaml::Null) => {
            return Err("servers: empty; give at least one".into())
        }
        Some(_) => return Err("servers: expected a list of \"host:port:weight [name]\"".into()),
        None => return Err("servers: missing".into()),
    };
    let mut shards = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        let Yaml::String(spec) = server else {
            return Err(format!(
                "servers[{i}]: expected a \"host:port:weight [name]\" string"
            ));
        };
        shards.push(parse_server(spec).map_err(|e| format!("servers[{i}]: {spec:?}: {e}"))?);
    }
    Ok(Pool {
        listen,
        hash,
        distribution,
        hash_tag,
        // An empty redis_auth is no password in twemproxy.
        password: password.filter(|p| !p.is_empty()),
        // 0 is no timeout in twemproxy, as is leaving it out.
        timeout_ms: timeout_ms.filter(|&t| t > 0),
        retry_ms: retry_ms.filter(|&t| t > 0),
        connections,
        auto_eject,
        shards,
        ignored,
    })
}

/// One `servers` entry: `host:port:weight` and an optional ` name`, read the way twemproxy
/// reads it (the name after the last space, then weight and port from the right).
fn parse_server(spec: &str) -> Result<Shard, String> {
    const FORMAT: &str = "expected \"host:port:weight [name]\"";
    let (address, name) = match spec.rsplit_once(' ') {
        Some((address, name)) => (address, Some(name)),
        None => (spec, None),
    };
    if address.starts_with('/') {
        return Err("a unix socket; shardis connects to nodes over TCP only".into());
    }
    let (host_port, weight) = address.rsplit_once(':').ok_or(FORMAT)?;
    let (host, port) = host_port.rsplit_once(':').ok_or(FORMAT)?;
    if host.is_empty() || host.contains(|c: char| c == ':' || c.is_whitespace()) {
        return Err(FORMAT.into());
    }
    let port_number = whole_number(port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?;
    let weight = whole_number(weight)
        .and_then(|w| u32::try_from(w).ok())
        .filter(|&w| w > 0)
        .ok_or_else(|| format!("weight {weight:?} is not a whole number of at least 1"))?;
    let name = match name {
        Some("") => return Err("empty name after the space".into()),
        Some(name) => name.to_string(),
        // twemproxy names an unnamed server "host:port" on the ring, but just "host" on
        // memcached's port (libmemcached's habit).
        None if port_number == KETAMA_PORT => host.to_string(),
        None => format!("{host}:{port}"),
    };
    Ok(Shard {
        name,
        primary: format!("{host}:{port_number}"),
        weight,
    })
}

/// One pool as a shardis configuration.
fn render(pool_name: &str, p: &Pool) -> String {
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line(&format!("# pool {pool_name}"));
    line("# Converted by `shardis --from-twemproxy`: the same hash, distribution, hash tag, shard");
    line("# names and weights as twemproxy, so every key lands on the same server.");
    if p.timeout_ms.is_none() {
        line("# timeout: twemproxy had none (it waits for ever); shardis' [backend] timeout");
        line("# default applies.");
    }
    if p.auto_eject {
        line("# auto_eject_hosts: true is not carried over: shardis never ejects a node, so keys");
        line("# never move when one fails. Give shards replicas to keep them available.");
    }
    if p.password.is_some() {
        line("# redis_auth became both password (clients must AUTH with it) and");
        line("# [backend] password (shardis sends it to the nodes), as twemproxy uses it.");
    }
    for ignored in &p.ignored {
        line(&format!("# Ignored: {ignored}."));
    }
    line(&format!("listen = {}", toml_string(&p.listen)));
    if let Some(password) = &p.password {
        line(&format!("password = {}", toml_string(password)));
    }
    line("");
    line("[routing]");
    line(&format!("hash = {}", toml_string(p.hash)));
    line(&format!("distribution = {}", toml_string(p.distribution)));
    line(&format!("hash_tag = {}", toml_string(&p.hash_tag)));
    if p.timeout_ms.is_some()
        || p.connections.is_some()
        || p.retry_ms.is_some()
        || p.password.is_some()
    {
        line("");
        line("[backend]");
        if let Some(password) = &p.password {
            line("# twemproxy redis_auth");
            line(&format!("password = {}", toml_string(password)));
        }
        if let Some(ms) = p.timeout_ms {
            line("# twemproxy timeout");
            line(&format!("timeout = \"{ms}ms\""));
        }
        if let Some(n) = p.connections {
            line("# twemproxy server_connections");
            line(&format!("connections = {n}"));
        }
        if let Some(ms) = p.retry_ms {
            line("# twemproxy server_retry_timeout");
            line(&format!("reconnect_backoff = \"{ms}ms\""));
            if Duration::from_millis(ms) > BackendSettings::default().reconnect_backoff_max {
                line(&format!("reconnect_backoff_max = \"{ms}ms\""));
            }
        }
    }
    for shard in &p.shards {
        line("");
        line("[[shards]]");
        line(&format!("name = {}", toml_string(&shard.name)));
        line(&format!("primary = {}", toml_string(&shard.primary)));
        line(&format!("weight = {}", shard.weight));
    }
    out
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a comment line or a message: control characters escaped, so it stays one line.
fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A scalar's text, as twemproxy (which reads every value as text) would see it.
fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text(key: &str, value: &Yaml) -> Result<String, String> {
    scalar_text(value).ok_or_else(|| format!("{key}: expected a single value"))
}

/// `true` or `false`, as twemproxy accepts them.
fn boolean(key: &str, value: &Yaml) -> Result<bool, String> {
    match value {
        Yaml::Boolean(b) => Ok(*b),
        Yaml::String(s) if s == "true" => Ok(true),
        Yaml::String(s) if s == "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false")),
    }
}

/// A whole number of zero or more, as twemproxy accepts it.
fn number(key: &str, value: &Yaml) -> Result<u64, String> {
    let n = match value {
        Yaml::Integer(i) => u64::try_from(*i).ok(),
        Yaml::String(s) => whole_number(s),
        _ => None,
    };
    n.ok_or_else(|| format!("{key}: expected a whole number"))
}

/// Decimal digits only (no sign, no spaces).
fn whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests;
