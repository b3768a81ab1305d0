use super::*;
use crate::routing::{Distribution, HashFn, HashTag};

/// A file with the one pool `alpha` holding `settings`, each line indented under it.
fn alpha(settings: &[&str]) -> String {
    let mut yaml = String::from("alpha:\n");
    for s in settings {
        yaml.push_str("  ");
        yaml.push_str(s);
        yaml.push('\n');
    }
    yaml
}

const LISTEN: &str = "listen: 127.0.0.1:22121";
const REDIS: &str = "redis: true";
const SERVERS: &str = "servers: [\"127.0.0.1:6379:1\"]";

/// `alpha` with listen, redis and one server, plus `extra`.
fn minimal_with(extra: &[&str]) -> String {
    let mut settings = vec![LISTEN, REDIS, SERVERS];
    settings.extend_from_slice(extra);
    alpha(&settings)
}

fn parsed(yaml: &str) -> (String, Config) {
    let converted = convert(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(converted.skipped.is_empty(), "{converted:?}");
    let out = converted.toml;
    let config = Config::from_toml(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    (out, config)
}

fn err(yaml: &str) -> String {
    match convert(yaml) {
        Ok(out) => panic!("converted, but should not have been:\n{yaml}\n->\n{out:?}"),
        Err(e) => e,
    }
}

fn names(config: &Config) -> Vec<&str> {
    config.shards.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn a_pool_with_named_servers() {
    let yaml = alpha(&[
        "listen: 127.0.0.1:22121",
        "hash: fnv1a_64",
        "hash_tag: \"{}\"",
        "distribution: ketama",
        "auto_eject_hosts: false",
        "redis: true",
        "timeout: 400",
        "server_connections: 3",
        "server_retry_timeout: 500",
        "servers:",
        " - 127.0.0.1:6379:1 a",
        " - 127.0.0.1:6380:2 b",
        " - 10.0.0.7:6381:3 cache-c",
    ]);
    let (out, c) = parsed(&yaml);
    assert!(out.starts_with("# pool alpha\n"), "{out}");
    assert_eq!(c.listen, "127.0.0.1:22121".parse().unwrap());
    assert_eq!(c.hash, HashFn::Fnv1a64);
    assert_eq!(c.distribution, Distribution::Ketama);
    assert_eq!(c.hash_tag, HashTag::parse("{}"));
    assert_eq!(names(&c), ["a", "b", "cache-c"]);
    let primaries: Vec<&str> = c.shards.iter().map(|s| s.primary.as_str()).collect();
    assert_eq!(
        primaries,
        ["127.0.0.1:6379", "127.0.0.1:6380", "10.0.0.7:6381"]
    );
    let weights: Vec<u32> = c.shards.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [1_u32, 2, 3]);
    assert_eq!(c.backend.timeout, Duration::from_millis(400));
    assert_eq!(c.backend.connections, 3);
    assert_eq!(c.backend.reconnect_backoff, Duration::from_millis(500));
    assert_eq!(
        c.backend.reconnect_backoff_max,
        BackendSettings::default().reconnect_backoff_max
    );
    assert_eq!(c.password, None);
    assert!(!out.contains("Ignored"), "{out}");
    assert!(!out.contains("auto_eject_hosts"), "{out}");
}

#[test]
fn unnamed_servers_are_named_as_twemproxy_names_them() {
    let yaml = alpha(&[
        LISTEN,
        REDIS,
        "servers:",
        " - 127.0.0.1:6379:1",
        " - 127.0.0.1:11211:2",
        " - cache-1.internal:11211:1",
        " - cache-2.internal:6379:1",
    ]);
    let (out, c) = parsed(&yaml);
    assert_eq!(
        names(&c),
        [
            "127.0.0.1:6379",
            "127.0.0.1",
            "cache-1.internal",
            "cache-2.internal:6379"
        ]
    );
    assert_eq!(c.shards[1].primary, "127.0.0.1:11211");
    assert_eq!(c.shards[2].primary, "cache-1.internal:11211");
    // Explicit names, also where they equal shardis' default.
    assert!(out.contains("name = \"127.0.0.1:6379\"\n"), "{out}");
    assert!(out.contains("name = \"127.0.0.1\"\n"), "{out}");
}

#[test]
fn the_name_is_what_follows_the_last_space() {
    assert_eq!(
        parse_server("127.0.0.1:6379:10 server-1"),
        Ok(Shard {
            name: "server-1".into(),
            primary: "127.0.0.1:6379".into(),
            weight: 10
        })
    );
    // twemproxy keeps the port's text in the name, and 011211 is port 11211.
    assert_eq!(parse_server("h:06379:1").unwrap().name, "h:06379");
    assert_eq!(parse_server("h:06379:1").unwrap().primary, "h:6379");
    assert_eq!(parse_server("h:011211:1").unwrap().name, "h");
}

#[test]
fn twemproxy_defaults() {
    let (out, c) = parsed(&minimal_with(&[]));
    // twemproxy's defaults: fnv1a_64, ketama, no hash tag.
    assert_eq!(c.hash, HashFn::Fnv1a64);
    assert_eq!(c.distribution, Distribution::Ketama);
    assert_eq!(c.hash_tag, None);
    assert!(out.contains("hash_tag = \"\"\n"), "{out}");
    // No timeout there (it waits for ever): shardis' default applies, and a comment says so.
    assert_eq!(c.backend, BackendSettings::default());
    assert!(!out.contains("\n[backend]\n"), "{out}");
    assert!(out.contains("# timeout: twemproxy had none"), "{out}");
    assert_eq!(names(&c), ["127.0.0.1:6379"]);
    assert_eq!(c.shards[0].weight, 1);
    // timeout: 0 is no timeout too.
    let (_, c) = parsed(&minimal_with(&["timeout: 0"]));
    assert_eq!(c.backend.timeout, BackendSettings::default().timeout);
}

#[test]
fn md5_and_modula() {
    let (_, c) = parsed(&minimal_with(&[
        "hash: md5",
        "distribution: modula",
        "hash_tag: \"<>\"",
    ]));
    assert_eq!(c.hash, HashFn::Md5);
    assert_eq!(c.distribution, Distribution::Modula);
    assert_eq!(c.hash_tag, HashTag::parse("<>"));
}

#[test]
fn a_long_retry_raises_the_backoff_limit() {
    let (_, c) = parsed(&minimal_with(&["server_retry_timeout: 30000"]));
    assert_eq!(c.backend.reconnect_backoff, Duration::from_secs(30));
    assert_eq!(c.backend.reconnect_backoff_max, Duration::from_secs(30));
}

#[test]
fn redis_auth_becomes_the_client_password() {
    let (out, c) = parsed(&minimal_with(&[r#"redis_auth: "s3\"cr\\et""#]));
    assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("s3\"cr\\et"));
    assert!(out.contains("shardis sends it to the nodes"), "{out}");
    assert_eq!(
        c.backend.password.as_ref().map(|p| p.expose()),
        Some("s3\"cr\\et")
    );
    // Quoted as TOML needs, whatever it holds.
    let (_, c) = parsed(&minimal_with(&[r#"redis_auth: "tab\there\u0001""#]));
    assert_eq!(
        c.password.as_ref().map(|p| p.expose()),
        Some("tab\there\u{1}")
    );
    // An empty one is none.
    let (_, c) = parsed(&minimal_with(&["redis_auth: \"\""]));
    assert_eq!(c.password, None);
    // A number is text to twemproxy.
    let (_, c) = parsed(&minimal_with(&["redis_auth: 12345"]));
    assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("12345"));
}

#[test]
fn what_is_not_carried_over_is_said() {
    let (out, _) = parsed(&minimal_with(&[
        "auto_eject_hosts: true",
        "server_failure_limit: 3",
        "backlog: 1024",
        "preconnect: true",
        "client_connections: 100",
        "tcpkeepalive: true",
        "colour: blue",
    ]));
    assert!(
        out.contains("# auto_eject_hosts: true is not carried over"),
        "{out}"
    );
    for key in [
        "server_failure_limit",
        "backlog",
        "preconnect",
        "client_connections",
        "tcpkeepalive",
    ] {
        assert!(out.contains(&format!("# Ignored: {key}: ")), "{key}: {out}");
    }
    assert!(
        out.contains("# Ignored: colour: not a twemproxy 0.5.0 setting."),
        "{out}"
    );
}

#[test]
fn several_pools_make_several_configurations() {
    let yaml = concat!(
        "alpha:\n",
        "  listen: 127.0.0.1:22121\n",
        "  redis: true\n",
        "  servers:\n",
        "   - 127.0.0.1:6379:1 a\n",
        "beta:\n",
        "  listen: 127.0.0.1:22122\n",
        "  redis: true\n",
        "  hash: md5\n",
        "  servers:\n",
        "   - 127.0.0.1:6479:1 b\n",
        "   - 127.0.0.1:6480:1 c\n",
    );
    let out = convert(yaml).unwrap().toml;
    let parts: Vec<&str> = out.split("\n# ---\n").collect();
    assert_eq!(parts.len(), 2, "{out}");
    assert!(out.starts_with("# 2 twemproxy pools"), "{out}");
    assert!(parts[0].contains("\n# pool alpha\n"), "{out}");
    assert!(parts[1].starts_with("# pool beta\n"), "{out}");
    // A blank line before each separator.
    assert!(out.contains("weight = 1\n\n# ---\n# pool beta\n"), "{out}");
    let a = Config::from_toml(parts[0]).unwrap();
    let b = Config::from_toml(parts[1]).unwrap();
    assert_eq!(a.listen, "127.0.0.1:22121".parse().unwrap());
    assert_eq!(names(&a), ["a"]);
    assert_eq!(b.listen, "127.0.0.1:22122".parse().unwrap());
    assert_eq!(b.hash, HashFn::Md5);
    assert_eq!(names(&b), ["b", "c"]);
}

#[test]
fn memcached_pools_are_refused() {
    let e = err(&alpha(&[LISTEN, "redis: false", SERVERS]));
    assert!(e.starts_with("pool alpha: redis:"), "{e}");
    assert!(e.contains("memcached"), "{e}");
    // twemproxy's default is memcached.
    let e = err(&alpha(&[LISTEN, SERVERS]));
    assert!(e.starts_with("pool alpha: redis:"), "{e}");
    let e = err(&alpha(&[LISTEN, "redis: yes", SERVERS]));
    assert!(
        e.starts_with("pool alpha: redis: expected true or false"),
        "{e}"
    );
}

#[test]
fn a_mixed_file_converts_its_redis_pools_and_names_the_skipped_ones() {
    let yaml = concat!(
        "alpha:\n",
        "  listen: 127.0.0.1:22121\n",
        "  redis: true\n",
        "  servers:\n",
        "   - 127.0.0.1:6379:1 a\n",
        // What shardis would refuse in a Redis pool does not matter in a memcached one.
        "gamma:\n",
        "  listen: /tmp/gamma\n",
        "  hash: hsieh\n",
        "  servers:\n",
        "   - 127.0.0.1:11212:1\n",
        "beta:\n",
        "  listen: 127.0.0.1:22122\n",
        "  redis: true\n",
        "  servers:\n",
        "   - 127.0.0.1:6479:1 b\n",
        "delta:\n",
        "  listen: 127.0.0.1:22124\n",
        "  redis: false\n",
        "  servers:\n",
        "   - 127.0.0.1:11214:1\n",
    );
    let converted = convert(yaml).unwrap();
    let parts: Vec<&str> = converted.toml.split("\n# ---\n").collect();
    assert_eq!(parts.len(), 2, "{}", converted.toml);
    assert!(converted.toml.starts_with("# 2 twemproxy pools"));
    assert_eq!(names(&Config::from_toml(parts[0]).unwrap()), ["a"]);
    assert_eq!(names(&Config::from_toml(parts[1]).unwrap()), ["b"]);
    assert_eq!(converted.skipped.len(), 2, "{:?}", converted.skipped);
    for (line, pool) in converted.skipped.iter().zip(["gamma", "delta"]) {
        assert!(
            line.starts_with(&format!("pool {pool} skipped: redis: not true")),
            "{line}"
        );
        assert!(line.contains("memcached"), "{line}");
    }
    // One Redis pool among memcached ones: a single configuration, ready to use.
    let yaml = format!("{}{}", minimal_with(&[]), "gamma:\n  listen: /tmp/gamma\n");
    let converted = convert(&yaml).unwrap();
    assert!(
        converted.toml.starts_with("# pool alpha\n"),
        "{converted:?}"
    );
    Config::from_toml(&converted.toml).unwrap();
    assert_eq!(converted.skipped.len(), 1, "{converted:?}");
    // A memcached pool's other settings are not read, but its `redis` must be a boolean.
    let yaml = format!("{}{}", minimal_with(&[]), "gamma:\n  redis: maybe\n");
    assert!(err(&yaml).starts_with("pool gamma: redis: expected true or false"));
    // A broken Redis pool still stops the whole conversion.
    let yaml = format!("gamma:\n  listen: /tmp/gamma\n{}", alpha(&[LISTEN, REDIS]));
    assert!(err(&yaml).starts_with("pool alpha: servers: missing"));
}

#[test]
fn a_file_without_a_redis_pool_is_refused() {
    let yaml = "gamma:\n  listen: /tmp/gamma\ndelta:\n  redis: false\n";
    let e = err(yaml);
    assert!(
        e.starts_with("no Redis pool (redis: true) to convert"),
        "{e}"
    );
    assert!(e.ends_with("memcached pools: gamma, delta"), "{e}");
}

#[test]
fn other_hashes_are_refused() {
    for hash in OTHER_HASHES {
        let e = err(&minimal_with(&[format!("hash: {hash}").as_str()]));
        assert!(e.starts_with(&format!("pool alpha: hash: {hash}:")), "{e}");
        assert!(e.contains("fnv1a_64 and md5"), "{e}");
    }
    let e = err(&minimal_with(&["hash: sha256"]));
    assert!(e.contains("not a twemproxy hash"), "{e}");
}

#[test]
fn other_distributions_are_refused() {
    let e = err(&minimal_with(&["distribution: random"]));
    assert!(e.starts_with("pool alpha: distribution: random"), "{e}");
    let e = err(&minimal_with(&["distribution: circle"]));
    assert!(e.starts_with("pool alpha: distribution:"), "{e}");
}

#[test]
fn listen_must_be_ip_port() {
    let e = err(&alpha(&[
        "listen: /var/run/nutcracker.sock 0666",
        REDIS,
        SERVERS,
    ]));
    assert!(e.starts_with("pool alpha: listen:"), "{e}");
    assert!(
        e.contains("/var/run/nutcracker.sock") && e.contains("unix"),
        "{e}"
    );
    let e = err(&alpha(&["listen: localhost:22121", REDIS, SERVERS]));
    assert!(e.starts_with("pool alpha: listen:"), "{e}");
    assert!(e.contains("localhost:22121"), "{e}");
    let e = err(&alpha(&[REDIS, SERVERS]));
    assert!(e.starts_with("pool alpha: listen: missing"), "{e}");
}

#[test]
fn other_databases_are_refused() {
    let e = err(&minimal_with(&["redis_db: 2"]));
    assert!(e.starts_with("pool alpha: redis_db: 2:"), "{e}");
    parsed(&minimal_with(&["redis_db: 0"]));
}

#[test]
fn bad_settings_name_their_key() {
    for (setting, key) in [
        ("hash_tag: \"{\"", "hash_tag"),
        ("hash_tag: \"{}}\"", "hash_tag"),
        ("hash_tag: \"«»\"", "hash_tag"),
        ("server_connections: 0", "server_connections"),
        ("server_connections: many", "server_connections"),
        ("timeout: -1", "timeout"),
        ("timeout: 1.5", "timeout"),
        ("server_retry_timeout: [1]", "server_retry_timeout"),
        ("listen: [1, 2]", "listen"),
    ] {
        let yaml = if key == "listen" {
            alpha(&[setting, REDIS, SERVERS])
        } else {
            minimal_with(&[setting])
        };
        let e = err(&yaml);
        assert!(
            e.starts_with(&format!("pool alpha: {key}:")),
            "{setting}: {e}"
        );
    }
}

#[test]
fn bad_servers_are_refused() {
    let e = err(&alpha(&[LISTEN, REDIS]));
    assert!(e.starts_with("pool alpha: servers: missing"), "{e}");
    let e = err(&alpha(&[LISTEN, REDIS, "servers: []"]));
    assert!(e.starts_with("pool alpha: servers: empty"), "{e}");
    let e = err(&alpha(&[LISTEN, REDIS, "servers:"]));
    assert!(e.starts_with("pool alpha: servers: empty"), "{e}");
    let e = err(&alpha(&[LISTEN, REDIS, "servers: 127.0.0.1:6379:1"]));
    assert!(e.starts_with("pool alpha: servers: expected a list"), "{e}");
    for (server, problem) in [
        ("/tmp/redis.sock:1 a", "unix socket"),
        ("127.0.0.1:6379", "expected \"host:port:weight [name]\""),
        ("127.0.0.1:6379:0", "weight"),
        ("127.0.0.1:6379:x", "weight"),
        ("127.0.0.1:6379:1:2", "expected"),
        ("127.0.0.1:0:1", "port"),
        ("127.0.0.1:70000:1", "port"),
        ("127.0.0.1::1", "port"),
        (":6379:1", "expected"),
        ("127.0.0.1:6379:1  a", "weight"),
    ] {
        let servers = format!("servers: [\"{server}\"]");
        let e = err(&alpha(&[LISTEN, REDIS, servers.as_str()]));
        assert!(
            e.starts_with("pool alpha: servers[0]:") && e.contains(problem),
            "{server}: {e}"
        );
    }
    let e = err(&alpha(&[
        LISTEN,
        REDIS,
        "servers: [\"127.0.0.1:6379:1\", 7]",
    ]));
    assert!(e.starts_with("pool alpha: servers[1]:"), "{e}");
}

#[test]
fn what_shardis_refuses_is_not_printed() {
    // Two servers with one name: twemproxy refuses it too.
    let e = err(&alpha(&[
        LISTEN,
        REDIS,
        "servers:",
        " - 127.0.0.1:6379:1 a",
        " - 127.0.0.1:6380:1 a",
    ]));
    assert!(e.starts_with("pool alpha: shardis refuses"), "{e}");
    assert!(e.contains("shards[1].name"), "{e}");
}

#[test]
fn files_that_are_not_pools_are_refused() {
    assert!(err("").contains("empty"));
    assert!(err("# only a comment\n").contains("empty"));
    assert!(err("{}").contains("empty"));
    assert!(err("alpha: [").starts_with("not valid YAML"));
    assert!(err("- a\n- b\n").contains("mapping of pool names"));
    assert!(err("alpha: 1\n").starts_with("pool alpha: expected a mapping"));
    assert!(err("a: {}\n---\nb: {}\n").contains("several YAML documents"));
    // A later pool's error names that pool.
    let yaml = format!(
        "{}beta:\n  redis: true\n  listen: 127.0.0.1:1\n",
        minimal_with(&[])
    );
    assert!(err(&yaml).starts_with("pool beta: "));
}

#[test]
fn toml_strings_are_escaped() {
    assert_eq!(toml_string("plain"), "\"plain\"");
    assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(toml_string("\n\u{7f}"), "\"\\n\\u007F\"");
    assert_eq!(comment_text("a\nb"), "a\\nb");
}
