//! shardis as Redis tools see it: INFO, CLIENT INFO / LIST, CONFIG, the commands merged over
//! the primaries, error texts and SCAN pages, compared with a plain redis-server where the
//! answer should match and checked against the nodes' own figures where it cannot.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{info_field, shards_toml, Cluster, Raw, Redis, Shardis};

fn info(port: u16, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut common::connect(port))
        .unwrap()
}

fn number(info: &str, field: &str) -> u64 {
    info_field(info, field)
        .unwrap_or_else(|| panic!("INFO lacks {field}:\n{info}"))
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number:\n{info}"))
}

fn field_names(line: &str) -> Vec<String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, _)| k.to_string())
        .collect()
}

#[test]
fn malformed_numkeys_and_copy_db_get_redis_own_errors() {
    let cluster = Cluster::start("");
    let plain = Redis::start();
    let cases: &[&[&str]] = &[
        &["SINTERCARD", "0", "k"],
        &["SINTERCARD", "-1", "k"],
        &["ZMPOP", "0", "MIN", "COUNT", "1"],
        &["LMPOP", "0", "LEFT", "COUNT", "1"],
        &["BZMPOP", "1", "0", "MIN", "COUNT", "1"],
        &["BLMPOP", "1", "0", "LEFT", "COUNT", "1"],
        &["ZUNION", "0", "a"],
        &["ZINTER", "0", "a"],
        &["ZDIFF", "0", "a"],
        &["ZINTERCARD", "0", "a"],
        &["ZUNIONSTORE", "d", "0", "a"],
        &["COPY", "a", "b", "DB", "x"],
    ];
    let mut proxy = Raw::connect(cluster.proxy.port());
    let mut redis = Raw::connect(plain.port());
    for args in cases {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let want = redis.call(&args);
        assert!(want.starts_with(b"-"), "{args:?} is no error on Redis");
        assert_eq!(
            String::from_utf8_lossy(&proxy.call(&args)),
            String::from_utf8_lossy(&want),
            "{:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        );
    }
    // A database other than 0 is the proxy's refusal, wherever it is among the DB options
    // (Redis takes the last one); 0 is served.
    let reply = proxy.call(&[b"COPY", b"a", b"b", b"DB", b"1"]);
    assert!(reply.starts_with(b"-ERR shardis does not support 'copy' with DB 1"));
    let reply = proxy.call(&[b"COPY", b"a", b"b", b"DB", b"0", b"DB", b"3"]);
    assert!(reply.starts_with(b"-ERR shardis does not support 'copy' with DB 3"));
    proxy.call(&[b"SET", b"{c}a", b"v"]);
    assert_eq!(
        proxy.call(&[b"COPY", b"{c}a", b"{c}b", b"DB", b"0"]),
        b":1\r\n"
    );
}

#[test]
fn client_info_and_list_carry_every_redis_field() {
    let cluster = Cluster::start("");
    let plain = Redis::start();
    let line = |port: u16, cmd: &str| -> String {
        let mut c = common::connect(port);
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("probe")
            .query(&mut c)
            .unwrap();
        redis::cmd("CLIENT").arg(cmd).query(&mut c).unwrap()
    };
    let want = field_names(&line(plain.port(), "INFO"));
    let got = field_names(&line(cluster.proxy.port(), "INFO"));
    // Redis 7.0's fields in its order; the proxy adds 7.2's lib-name and lib-ver at the end.
    assert_eq!(&got[..want.len()], &want[..], "{got:?}");
    let list = line(cluster.proxy.port(), "LIST");
    let mine = list
        .lines()
        .find(|l| l.contains("name=probe") && l.contains("cmd=client|list"))
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(&field_names(mine)[..want.len()], &want[..]);
    // Real figures: its socket, a read buffer, and the command's own arguments.
    let fields: HashMap<&str, &str> = mine
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert!(fields["fd"].parse::<i32>().unwrap() > 2, "{mine}");
    assert!(fields["rbs"].parse::<u64>().unwrap() > 0, "{mine}");
    assert_eq!(fields["argv-mem"], "10", "CLIENT LIST is 10 bytes: {mine}");
    assert!(
        fields["tot-mem"].parse::<u64>().unwrap() >= fields["rbs"].parse::<u64>().unwrap(),
        "{mine}"
    );
    assert_eq!(fields["events"], "r");
}

#[test]
fn info_has_redis_sections_and_sums_the_primaries() {
    let cluster = Cluster::start("");
    // Different limits per node, so a sum is told apart from any one node's value.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg((i as u64 + 1) * 10_000_000)
            .query(&mut node.conn())
            .unwrap();
    }
    let mut c = cluster.proxy.conn();
    common::set_many(&mut c, "k", 200);
    let plain = Redis::start();
    let everything = info(cluster.proxy.port(), "everything");
    let redis_everything = info(plain.port(), "everything");
    let headers = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| l.trim().to_string())
            .collect()
    };
    let ours = headers(&everything);
    for section in headers(&redis_everything) {
        assert!(ours.contains(&section), "no {section} in:\n{everything}");
    }
    for field in ["arch_bits", "process_id", "tcp_port", "blocked_clients"] {
        assert!(info_field(&everything, field).is_some(), "{field}");
    }
    assert_eq!(
        number(&everything, "tcp_port"),
        u64::from(cluster.proxy.port())
    );
    assert_eq!(info_field(&everything, "role").as_deref(), Some("master"));
    assert_eq!(number(&everything, "maxmemory"), 60_000_000);
    let used: u64 = cluster
        .nodes
        .iter()
        .map(|n| number(&info(n.port(), "memory"), "used_memory"))
        .sum();
    let reported = number(&info(cluster.proxy.port(), "memory"), "used_memory");
    // Each node's figure moves a little between the two reads (connections come and go).
    assert!(
        reported.abs_diff(used) < used / 5,
        "used_memory {reported} is not the nodes' sum {used}"
    );
    assert!(number(&everything, "proxy_used_memory_rss") > 0);
    // The client's keys, without shardis' own records on each node.
    let db0 = info_field(&info(cluster.proxy.port(), "keyspace"), "db0").unwrap();
    assert!(db0.starts_with("keys=200,"), "{db0}");
    let stats = info(cluster.proxy.port(), "stats");
    assert!(number(&stats, "total_commands_processed") >= 200);
}

#[test]
fn commandstats_are_shaped_as_redis_7() {
    let cluster = Cluster::start("");
    let mut c = Raw::connect(cluster.proxy.port());
    c.call(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"probe"]);
    c.call(&[b"CLIENT", b"LIST"]);
    c.call(&[b"CLIENT", b"NOSUCH"]);
    c.call(&[b"GET"]);
    c.call(&[b"NOSUCHCOMMAND"]);
    let text = info(cluster.proxy.port(), "commandstats");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("cmdstat_")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cmdstat_client|list:calls=1,")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cmdstat_client|setinfo:calls=")),
        "{text}"
    );
    // No parent beside its subcommands; an unknown command or subcommand is counted nowhere.
    assert!(
        !lines.iter().any(|l| l.starts_with("cmdstat_client:")),
        "{text}"
    );
    assert!(!lines.iter().any(|l| l.contains("unknown")), "{text}");
    // A refused call is a rejected one, as on Redis.
    assert!(
        lines.iter().any(|l| l.starts_with(
            "cmdstat_get:calls=0,usec=0,usec_per_call=0.00,rejected_calls=1,failed_calls=0"
        )),
        "{text}"
    );
    let errors = info(cluster.proxy.port(), "errorstats");
    assert_eq!(
        info_field(&errors, "errorstat_ERR").as_deref(),
        Some("count=3")
    );
    let latency = info(cluster.proxy.port(), "latencystats");
    assert!(
        latency.contains("latency_percentiles_usec_client|list:p50="),
        "{latency}"
    );
}

#[test]
fn total_commands_processed_counts_what_redis_counts() {
    // The same requests to a plain redis-server and to shardis, both with a password: Redis
    // counts a command that ran, a failed AUTH or a nested MULTI among them, and not one refused
    // before it ran (not authenticated, unknown, wrong arity).
    let plain = Redis::start_with(&["--requirepass", "pw"]);
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "password = \"pw\"");
    let processed = |port: u16| {
        let mut c = Raw::connect(port);
        assert_eq!(c.call(&[b"AUTH", b"pw"]), b"+OK\r\n");
        let reply = c.call(&[b"INFO", b"stats"]);
        number(&String::from_utf8_lossy(&reply), "total_commands_processed")
    };
    // A fresh server's first reading counts its AUTH and not the INFO that shows it: Redis
    // counts a command once it has answered.
    let first = processed(plain.port());
    assert_eq!(first, 1, "Redis's first reading");
    assert_eq!(processed(proxy.port()), first, "shardis' first reading");
    let counted = |port: u16| {
        let before = processed(port);
        let mut c = Raw::connect(port);
        for args in [
            &[&b"GET"[..], b"k"][..],
            &[b"NOSUCHCOMMAND"],
            &[b"AUTH", b"wrong"],
            &[b"AUTH", b"pw"],
            &[b"NOSUCHCOMMAND"],
            &[b"GET"],
            &[b"SET", b"k", b"v"],
            &[b"GET", b"k"],
            // A transaction's commands count when EXEC runs them; not when it aborts or is
            // discarded.
            &[b"MULTI"],
            &[b"SET", b"k", b"w"],
            &[b"GET", b"k"],
            &[b"EXEC"],
            &[b"MULTI"],
            &[b"NOSUCHCOMMAND"],
            &[b"EXEC"],
            &[b"MULTI"],
            &[b"SET", b"k", b"x"],
            &[b"MULTI"],
            &[b"DISCARD"],
        ] {
            c.call(args);
        }
        // Less the first reading's INFO and the second one's AUTH.
        processed(port) - before - 2
    };
    let theirs = counted(plain.port());
    assert_eq!(theirs, 13, "Redis counted {theirs}");
    assert_eq!(counted(proxy.port()), theirs);
}

#[test]
fn blocked_clients_counts_a_client_waiting_in_a_pop() {
    let cluster = Cluster::start("");
    let port = cluster.proxy.port();
    let mut blocked = Raw::connect(port);
    blocked.send(&common::encode(&[b"BLPOP", b"queue", b"0"]));
    common::wait_for("blocked_clients:1", Duration::from_secs(10), || {
        let n = number(&info(port, "clients"), "blocked_clients");
        (n == 1).then_some(()).ok_or(format!("blocked_clients:{n}"))
    });
    let _: i64 = redis::cmd("RPUSH")
        .arg("queue")
        .arg("x")
        .query(&mut cluster.proxy.conn())
        .unwrap();
    assert!(blocked.reply().starts_with(b"*2\r\n"));
    let settled = |want: u64| {
        common::wait_for(
            &format!("blocked_clients:{want}"),
            Duration::from_secs(10),
            || {
                let n = number(&info(port, "clients"), "blocked_clients");
                (n == want)
                    .then_some(())
                    .ok_or(format!("blocked_clients:{n}"))
            },
        )
    };
    settled(0);
    // A client that leaves while blocked is no longer counted.
    let mut leaving = Raw::connect(port);
    leaving.send(&common::encode(&[b"BLPOP", b"other", b"0"]));
    settled(1);
    drop(leaving);
    settled(0);
}

#[test]
fn redis_cli_stat_shows_real_numbers() {
    let cluster = Cluster::start("");
    let mut c = cluster.proxy.conn();
    common::set_many(&mut c, "k", 50);
    // redis-cli writes --stat rows to a pipe in blocks: line-buffer it so the rows printed
    // before `timeout` stops it are kept.
    let output = Command::new("timeout")
        .args(["-s", "INT", "2", "stdbuf", "-oL", "redis-cli", "-p"])
        .arg(cluster.proxy.port().to_string())
        .args(["--stat", "-i", "0.2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    // keys  mem  clients  blocked  requests  connections
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 6 && f[0].parse::<u64>().is_ok())
        .collect();
    assert!(!rows.is_empty(), "no --stat rows:\n{text}");
    assert!(!text.contains("-9223372036854775808"), "{text}");
    for row in rows {
        assert_eq!(row[0], "50", "keys: {row:?}");
        assert!(
            row[1].ends_with('M') || row[1].ends_with('K'),
            "mem: {row:?}"
        );
        assert!(row[2].parse::<u64>().unwrap() >= 1, "clients: {row:?}");
        assert_eq!(row[3], "0", "blocked: {row:?}");
    }
}

#[test]
fn config_get_answers_from_the_nodes() {
    let cluster = Cluster::start("");
    let plain = Redis::start();
    let get = |port: u16, pattern: &str| -> HashMap<String, String> {
        redis::cmd("CONFIG")
            .arg("GET")
            .arg(pattern)
            .query(&mut common::connect(port))
            .unwrap()
    };
    let all = get(cluster.proxy.port(), "*");
    let names = |m: &HashMap<String, String>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(names(&all), names(&get(plain.port(), "*")));
    assert_eq!(
        get(cluster.proxy.port(), "maxmemory-policy"),
        get(cluster.nodes[0].port(), "maxmemory-policy")
    );
    assert_eq!(all["port"], cluster.proxy.port().to_string());
    assert_eq!(all["databases"], "1");
    let two: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .arg("appendonly")
        .query(&mut cluster.proxy.conn())
        .unwrap();
    assert_eq!(
        two,
        HashMap::from([
            ("save".into(), "".into()),
            ("appendonly".into(), "no".into())
        ])
    );
}

#[test]
fn node_credentials_are_not_shown_by_config_get() {
    let node = Redis::start_with(&[
        "--requirepass",
        "node-secret",
        "--masterauth",
        "node-secret",
        "--tls-key-file-pass",
        "key-secret",
    ]);
    let proxy = Shardis::start_with(&format!(
        "[backend]\npassword = \"node-secret\"\n{}",
        shards_toml(&[&node])
    ));
    let mut c = proxy.conn();
    let all: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query(&mut c)
        .unwrap();
    for name in [
        "requirepass",
        "masterauth",
        "tls-key-file-pass",
        "masteruser",
    ] {
        assert_eq!(all.get(name).map(String::as_str), Some(""), "{name}");
    }
    assert!(!format!("{all:?}").contains("secret"), "{all:?}");
}

#[test]
fn config_set_and_resets_reach_every_node_only_when_allowed() {
    let refused = Cluster::start("");
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1000000")
        .query::<()>(&mut refused.proxy.conn())
        .unwrap_err();
    assert!(err.to_string().contains("allow_node_admin"), "{err}");

    let cluster = Cluster::start("[commands]\nallow_node_admin = true\n");
    let mut c = cluster.proxy.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("7000000")
        .query(&mut c)
        .unwrap();
    for node in &cluster.nodes {
        let got: HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query(&mut node.conn())
            .unwrap();
        assert_eq!(got["maxmemory"], "7000000");
    }
    // Where a node writes its files is not the proxy's to change.
    // Nor its files, its credentials, or what the proxy answers for itself.
    for (name, value) in [
        ("dir", "/tmp"),
        ("requirepass", "x"),
        ("tls-key-file-pass", "x"),
        ("timeout", "1"),
        ("maxclients", "10"),
    ] {
        let err = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query::<()>(&mut c)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("shardis does not support 'config|set'"),
            "{name}: {err}"
        );
    }
    // RESETSTAT zeroes the proxy's own figures as well as the nodes'.
    let before = info(cluster.proxy.port(), "commandstats");
    assert!(before.contains("cmdstat_config|set:"), "{before}");
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let after = info(cluster.proxy.port(), "commandstats");
    assert!(!after.contains("cmdstat_config|set:"), "{after}");
    assert!(!after.contains("cmdstat_slowlog|reset:"), "{after}");
    let _: i64 = redis::cmd("LATENCY").arg("RESET").query(&mut c).unwrap();

    // A node refusing the value is named, with Redis's reason.
    let mut cluster = cluster;
    let down = cluster.nodes[2].addr();
    cluster.nodes[2].proc.kill();
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("8000000")
        .query::<()>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(err.contains("failed on 1 of 3 nodes"), "{err}");
    assert!(err.contains(&down), "{err}");
    // CONFIG GET still answers, from the shards that can.
    let got: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut c)
        .unwrap();
    assert_eq!(got["maxmemory"], "8000000");
}

#[test]
fn slowlog_latency_memory_function_stats_and_lastsave_merge_the_primaries() {
    let cluster = Cluster::start("");
    for node in &cluster.nodes {
        let mut n = node.conn();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .query(&mut n)
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("latency-monitor-threshold")
            .arg(1)
            .query(&mut n)
            .unwrap();
        // A 20 ms script: a latency spike of the `command` event.
        let _: () = redis::cmd("EVAL")
            .arg("local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 20000")
            .arg(0)
            .query(&mut n)
            .unwrap();
    }
    let mut c = cluster.proxy.conn();
    common::set_many(&mut c, "k", 30);
    let lens: i64 = cluster
        .nodes
        .iter()
        .map(|n| {
            redis::cmd("SLOWLOG")
                .arg("LEN")
                .query::<i64>(&mut n.conn())
                .unwrap()
        })
        .sum();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    // The proxy's own SLOWLOG LEN may be logged on each node between the two reads.
    assert!(len >= lens && len <= lens + 3, "{len} vs {lens}");
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    let times: Vec<i64> = entries
        .iter()
        .map(|e| match e {
            redis::Value::Array(f) => redis::from_redis_value(f[1].clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(times.len() as i64 >= lens, "{} entries", times.len());
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let ten: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").query(&mut c).unwrap();
    assert_eq!(ten.len(), 10);

    let latest: Vec<(String, i64, i64, i64)> =
        redis::cmd("LATENCY").arg("LATEST").query(&mut c).unwrap();
    let command = latest.iter().find(|e| e.0 == "command").expect("a spike");
    assert!(command.3 >= 20, "{latest:?}");

    let stats: HashMap<String, redis::Value> =
        redis::cmd("MEMORY").arg("STATS").query(&mut c).unwrap();
    let keys: i64 = redis::from_redis_value(stats["keys.count"].clone()).unwrap();
    let on_nodes: i64 = cluster
        .nodes
        .iter()
        .map(|n| redis::cmd("DBSIZE").query::<i64>(&mut n.conn()).unwrap())
        .sum();
    assert_eq!(keys, on_nodes);

    let functions: HashMap<String, redis::Value> =
        redis::cmd("FUNCTION").arg("STATS").query(&mut c).unwrap();
    assert!(functions.contains_key("engines"), "{functions:?}");

    let saved: i64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    let oldest: i64 = cluster
        .nodes
        .iter()
        .map(|n| redis::cmd("LASTSAVE").query::<i64>(&mut n.conn()).unwrap())
        .min()
        .unwrap();
    assert_eq!(saved, oldest);
}

#[test]
fn role_and_acl_queries_are_answered() {
    let cluster = Cluster::start("");
    let plain = Redis::start();
    let mut c = cluster.proxy.conn();
    let role: (String, i64, Vec<String>) = redis::cmd("ROLE").query(&mut c).unwrap();
    assert_eq!(role.0, "master");
    let me: String = redis::cmd("ACL").arg("WHOAMI").query(&mut c).unwrap();
    assert_eq!(me, "default");
    let cats: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut c).unwrap();
    let want: Vec<String> = redis::cmd("ACL")
        .arg("CAT")
        .query(&mut plain.conn())
        .unwrap();
    assert_eq!(cats, want);
    let pass: String = redis::cmd("ACL").arg("GENPASS").query(&mut c).unwrap();
    assert_eq!(pass.len(), 64);
    assert!(pass.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn scan_fills_count_across_shards() {
    let cluster = Cluster::start("");
    let router = common::router(&shards_toml(&cluster.nodes.iter().collect::<Vec<_>>()));
    let mut c = cluster.proxy.conn();
    for key in common::keys_on(&router, 0, "first", 40) {
        let _: () = redis::cmd("SET").arg(key).arg(1).query(&mut c).unwrap();
    }
    // Every key is on the first shard: one call with a COUNT that covers them ends the scan.
    let (cursor, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!((cursor, keys.len()), (0, 40));
    // A small COUNT walks every shard and returns each key exactly once.
    common::set_many(&mut c, "spread", 20);
    let seen = common::scan_all(&mut c, &["COUNT", "7"]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (60, 60));
}

/// The same keys in a plain redis-server and behind the proxy: a full SCAN walk with MATCH,
/// COUNT and TYPE returns the same keys from both, each once.
#[test]
fn scan_walks_return_what_redis_returns() {
    let cluster = Cluster::start("");
    let plain = Redis::start();
    let mut c = cluster.proxy.conn();
    let mut r = plain.conn();
    for conn in [&mut c, &mut r] {
        common::set_many(conn, "s:", 40);
        for i in 0..25 {
            let _: () = redis::cmd("HSET")
                .arg(format!("h:{i}"))
                .arg("f")
                .arg(i)
                .query(conn)
                .unwrap();
        }
    }
    for options in [
        &[][..],
        &["COUNT", "3"],
        &["MATCH", "s:1*"],
        &["MATCH", "h:*", "COUNT", "1000"],
        &["TYPE", "hash"],
        &["TYPE", "string", "COUNT", "7"],
    ] {
        let through = common::scan_all(&mut c, options);
        let direct = common::scan_all(&mut r, options);
        let unique: BTreeSet<&String> = through.iter().collect();
        assert_eq!(unique.len(), through.len(), "{options:?}: a key twice");
        assert_eq!(
            unique,
            direct.iter().collect::<BTreeSet<_>>(),
            "{options:?}"
        );
    }
}
