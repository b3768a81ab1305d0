use super::*;

const MINIMAL: &str = r#"
[[shards]]
primary = "127.0.0.1:7001"
"#;

fn err(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn defaults() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(c.listen, "127.0.0.1:6380".parse().unwrap());
    assert_eq!(c.hash, HashFn::Xxh3);
    assert_eq!(c.distribution, Distribution::Ketama);
    assert_eq!(c.hash_tag, HashTag::parse("{}"));
    assert_eq!(c.shards[0].name, "127.0.0.1:7001");
    assert_eq!(c.shards[0].weight, 1);
    assert_eq!(c.protocol, Limits::default());
    assert_eq!(c.backend, BackendSettings::default());
}

#[test]
fn the_example_config_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/shardis.toml")).unwrap();
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(c.shards.len(), 3);
}

#[test]
fn errors_name_the_key() {
    let with = |extra: &str| format!("{extra}\n{MINIMAL}");
    assert!(err(&with("listen = \"nope\"")).starts_with("listen:"));
    assert!(err(&with("[routing]\nhash = \"crc16\"")).starts_with("routing.hash:"));
    assert!(err(&with("[routing]\ndistribution = \"x\"")).starts_with("routing.distribution:"));
    assert!(err(&with("[routing]\nhash_tag = \"{\"")).starts_with("routing.hash_tag:"));
    assert!(err(&with("[backend]\nconnections = 0")).starts_with("backend.connections:"));
    assert!(err(&with("[backend]\ntimeout = \"0s\"")).starts_with("backend.timeout:"));
    assert!(err(&with("[backend]\nusername = \"u\"")).starts_with("backend.username:"));
    assert!(err(&with("[backend]\npassword = \"\"")).starts_with("backend.password:"));
    assert!(err(&with("metrics_listen = \"x\"")).starts_with("metrics_listen:"));
    assert!(err(&with("[log]\nlevel = \"[[\"")).starts_with("log.level:"));
    let user =
        |name: &str| format!("[[users]]\nname = \"{name}\"\npassword = \"p\"\nrole = \"admin\"\n");
    assert!(err(&with(&format!("{}{}", user("a"), user("a")))).starts_with("users[1].name:"));
    assert!(
        err(&with(&format!("password = \"x\"\n{}", user("default")))).starts_with("users[0].name:")
    );
    assert!(err(&with(&user("a b"))).starts_with("users[0].name:"));
    assert!(err(&with(
        "[[users]]\nname = \"a\"\npassword = \"p\"\nrole = \"root\""
    ))
    .contains("root"));
    assert!(err("").starts_with("shards:"));
    assert!(err("[[shards]]\nprimary = \"localhost\"").starts_with("shards[0].primary:"));
    assert!(err("[[shards]]\nprimary = \"a:1\"\nweight = 0").starts_with("shards[0].weight:"));
    assert!(err("[[shards]]\nprimary = \"a:1\"\nreplicas = [\"a:1\"]")
        .starts_with("shards[0].replicas[0]:"));
    assert!(err(
        "[[shards]]\nprimary = \"a:1\"\nname = \"x\"\n[[shards]]\nprimary = \"a:2\"\nname = \"x\""
    )
    .starts_with("shards[1].name:"));
    assert!(
        err("[[shards]]\nprimary = \"a:1\"\n[[shards]]\nprimary = \"a:1\"")
            .starts_with("shards[1]")
    );
    // Unknown keys are refused rather than silently ignored.
    let typo = err(&with("[routing]\nhsah = \"xxh3\""));
    assert!(typo.contains("hsah"), "{typo}");
}

#[test]
fn replication_settings_and_their_errors() {
    let c = Config::from_toml(
        r#"
[replication]
write_ack = "replicas:1"
read_from = "prefer-replica"
[[shards]]
primary = "127.0.0.1:7001"
replicas = ["127.0.0.1:7002"]
[[shards]]
primary = "127.0.0.1:7003"
replicas = ["127.0.0.1:7004", "127.0.0.1:7005"]
replication = "mirror"
write_ack = "replicas:2"
read_from = "primary"
"#,
    )
    .unwrap();
    assert_eq!(c.shards[0].write_ack, WriteAck::Replicas(1));
    assert_eq!(c.shards[0].read_from, ReadFrom::PreferReplica);
    assert_eq!(c.shards[0].replication, ReplicationMode::Redis);
    assert_eq!(c.shards[1].write_ack, WriteAck::Replicas(2));
    assert_eq!(c.shards[1].read_from, ReadFrom::Primary);
    assert_eq!(c.shards[1].replication, ReplicationMode::Mirror);
    assert_eq!(c.health, HealthSettings::default());

    let shard = "[[shards]]\nprimary = \"127.0.0.1:7001\"\nreplicas = [\"127.0.0.1:7002\"]\n";
    assert_eq!(
        err(&format!(
            "[replication]\nwrite_ack = \"replicas:2\"\n{shard}"
        )),
        "shards[0].write_ack: asks for 2 replicas but the shard has 1"
    );
    assert!(err(&format!("[replication]\nwrite_ack = \"all\"\n{shard}"))
        .starts_with("replication.write_ack: \"all\": expected primary or replicas:N"));
    assert!(err(&format!("[replication]\nread_from = \"any\"\n{shard}"))
        .starts_with("replication.read_from:"));
    assert!(err(&format!("[health]\nfailure_threshold = 0\n{shard}")).starts_with("health:"));
    let sentinel = "[[shards]]\nprimary = \"127.0.0.1:7001\"\nreplication = \"mirror\"\nsentinel = { master = \"m\", addresses = [\"127.0.0.1:26379\"] }\n";
    assert_eq!(
        err(sentinel),
        "shards[0].sentinel: Sentinel shards use Redis replication, not mirror"
    );
}

#[test]
fn lock_settings_and_their_errors() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(c.policy.locks, LockSettings::default());
    assert_eq!(c.policy.locks.freeze(), Duration::from_secs(31));
    assert!(c.policy.locks.in_namespace(b"lock:x"));
    assert!(!c.policy.locks.in_namespace(b"locks"));
    let text = format!(
        "[locks]\nprefix = \"mutex/\"\nmax_ttl = \"2s\"\nfreeze_margin = \"250ms\"\n{MINIMAL}"
    );
    let c = Config::from_toml(&text).unwrap();
    assert!(c.policy.locks.in_namespace(b"mutex/a"));
    assert!(!c.policy.locks.in_namespace(b"lock:a"));
    assert_eq!(c.policy.locks.freeze(), Duration::from_millis(2250));
    let off = Config::from_toml(&format!("[locks]\nprefix = \"\"\n{MINIMAL}")).unwrap();
    assert!(!off.policy.locks.in_namespace(b"lock:a"));
    assert!(err(&format!("[locks]\nmax_ttl = \"0s\"\n{MINIMAL}")).contains("locks.max_ttl"));
    assert!(err(&format!("[locks]\nmax_ttl = \"400days\"\n{MINIMAL}")).contains("locks.max_ttl"));
    assert!(err(&format!("[locks]\nttl = \"1s\"\n{MINIMAL}")).contains("ttl"));
}

/// A parse error names the line and column, never the line's text (it may hold a password).
#[test]
fn parse_errors_do_not_quote_the_file() {
    let e = Config::from_toml("password = \"hunter2\n[[shards]]\nprimary = \"a:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

/// A duration without a unit says what a duration looks like, wherever it is.
#[test]
fn durations_need_a_unit_and_errors_say_so() {
    for (text, key) in [
        ("[backend]\ntimeout = 500", "backend.timeout"),
        ("[backend]\ntimeout = \"500\"", "backend.timeout"),
        (
            "[backend]\nconnect_timeout = 1.5",
            "backend.connect_timeout",
        ),
        ("shutdown_grace = \"5 parsecs\"", "shutdown_grace"),
        ("[health]\ninterval = 1", "health.interval"),
        ("[locks]\nmax_ttl = 30", "locks.max_ttl"),
    ] {
        let e = err(&format!("{text}\n{MINIMAL}"));
        assert!(
            e.contains(r#"expected a duration with a unit, such as "500ms", "2s" or "1m""#),
            "{text}: {e}"
        );
        assert!(e.contains(key), "{text}: {e}");
    }
    let c = Config::from_toml(&format!("[backend]\ntimeout = \"1m\"\n{MINIMAL}")).unwrap();
    assert_eq!(c.backend.timeout, Duration::from_secs(60));
}

fn overrides(vars: &[&str]) -> Vec<env::Override> {
    vars.iter().filter_map(|v| env::Override::of(v)).collect()
}

#[test]
fn override_names_are_read_as_the_environment_source_reads_them() {
    let o = env::Override::of("SHARDIS__BACKEND__TIMEOUT").unwrap();
    assert_eq!(
        (o.var.as_str(), o.key.as_str()),
        ("SHARDIS__BACKEND__TIMEOUT", "backend.timeout")
    );
    assert_eq!(env::Override::of("shardis__Listen").unwrap().key, "listen");
    assert_eq!(env::Override::of("SHARDIS_LISTEN"), None);
    assert_eq!(env::Override::of("PATH"), None);
}

/// Errors about what a `SHARDIS__...` variable set name the variable; others are left alone.
/// (The variables' effect through the real environment is tested on the binary in tests/tools.rs.)
#[test]
fn errors_about_overridden_keys_name_the_variable() {
    let vars = overrides(&[
        "SHARDIS__BACKEND__TIMEOUTT",
        "SHARDIS__BACKEND__CONNECTIONS",
    ]);
    let file = |text: &str| {
        Config::from_toml(&format!("{text}\n{MINIMAL}"))
            .map(|_| ())
            .map_err(|e| env::blame(e, &vars).to_string())
    };
    let e = file("[backend]\ntimeoutt = \"1s\"").unwrap_err();
    assert!(
        e.starts_with("environment variable SHARDIS__BACKEND__TIMEOUTT: unknown field `timeoutt`"),
        "{e}"
    );
    let e = file("[backend]\nconnections = 0").unwrap_err();
    assert!(
        e.starts_with("environment variable SHARDIS__BACKEND__CONNECTIONS: backend.connections:"),
        "{e}"
    );
    // Not a key a variable set: the file's error, as it was.
    let e = file("[backend]\ntimeout = 500").unwrap_err();
    assert!(!e.contains("environment"), "{e}");
    let e = file("[routing]\nhsah = \"xxh3\"").unwrap_err();
    assert!(!e.contains("environment"), "{e}");

    // A value, an unknown key at the top, an unknown section.
    let vars = overrides(&[
        "SHARDIS__BACKEND__TIMEOUT",
        "SHARDIS__TYPO",
        "SHARDIS__BACKNED__X",
    ]);
    let blame = |text: &str| env::blame(Config::from_toml(text).unwrap_err(), &vars).to_string();
    let e = blame(&format!("[backend]\ntimeout = 500\n{MINIMAL}"));
    assert!(
        e.starts_with("environment variable SHARDIS__BACKEND__TIMEOUT: invalid duration \"500\""),
        "{e}"
    );
    let e = blame(&format!("typo = 1\n{MINIMAL}"));
    assert!(e.starts_with("environment variable SHARDIS__TYPO: "), "{e}");
    let e = blame(&format!("[backned]\nx = 1\n{MINIMAL}"));
    assert!(
        e.starts_with("environment variable SHARDIS__BACKNED__X: "),
        "{e}"
    );
}
