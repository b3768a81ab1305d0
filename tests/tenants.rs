//! Tenants stay in their key prefixes, and no client can exhaust the proxy or the nodes.
//! Against real redis-server processes on loopback; every process is killed when the test ends.
//!
//! - `tenants_cannot_escape_their_prefixes`: two tenants (`app:` read-write, `ro:` read-only)
//!   and an admin on two shards. Every attack through SORT, SORT_RO, EVAL, EVALSHA, FCALL and
//!   FUNCTION / SCRIPT is refused with the README's error, and the victim's keys, the admin's
//!   functions and shardis' reserved keys are unchanged; the tenants' own SORTs, and scripts of a
//!   tenant allowed them, still work.
//! - `tenants_channels_stay_in_their_prefixes`: a tenant cannot subscribe (by name or pattern),
//!   list, count or publish outside its prefixes, and hears its own channels.
//! - `sort_patterns_across_shards_are_an_error_never_wrong_data`: BY and GET patterns whose keys
//!   live on other shards get Redis Cluster's error; with a shared hash tag, Redis's exact reply.
//! - `blocked_clients_cannot_exhaust_the_proxy_or_the_node`: 1,200 clients in BLPOP through a
//!   proxy held to 2,048 file descriptors, in front of a primary with maxclients 500, then 600
//!   more clients: a probe client's GET keeps answering, every client past a limit gets an error
//!   within a second, nothing hangs, no failover.
//! - `failed_auth_is_slowed`: 10,000 wrong AUTHs pipelined on one connection get a dozen
//!   answers in 10 s; a correct AUTH is answered at once.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{encode, info_field, shard_toml, wait_for, Raw, Redis, Shardis};

const USERS: &str = "[[users]]\nname = \"admin\"\npassword = \"admin-pw\"\nrole = \"admin\"\n\
[[users]]\nname = \"app\"\npassword = \"app-pw\"\nrole = \"read-write\"\nkey_prefixes = [\"app:\"]\n\
[[users]]\nname = \"ro\"\npassword = \"ro-pw\"\nrole = \"read-only\"\nkey_prefixes = [\"ro:\"]\n\
[[users]]\nname = \"scripter\"\npassword = \"scripter-pw\"\nrole = \"read-write\"\nkey_prefixes = [\"app:\"]\nallow_scripts = true\n";

fn as_user(port: u16, user: &str) -> redis::Connection {
    let client =
        redis::Client::open(format!("redis://{user}:{user}-pw@127.0.0.1:{port}/")).unwrap();
    let c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

fn run(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// The reply must be an error starting with `start` (its code and text as the client shows
/// them: `NOPERM ...`, `ERR ...`).
fn refused(c: &mut redis::Connection, args: &[&str], start: &str) {
    match run(c, args) {
        Err(e) => {
            let text = match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                _ => e.to_string(),
            };
            assert!(
                text.starts_with(start),
                "{args:?}: {text:?} does not start with {start:?}"
            );
        }
        Ok(v) => panic!("{args:?} was run: {v:?}"),
    }
}

/// Every key (and its string value, or its type) on a node.
fn node_snapshot(node: &Redis) -> Vec<(String, String)> {
    let mut c = node.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    let mut out: Vec<(String, String)> = keys
        .into_iter()
        .map(|k| {
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
            let v = if t == "string" {
                redis::cmd("GET").arg(&k).query(&mut c).unwrap()
            } else if t == "hash" {
                let h: Vec<String> = redis::cmd("HGETALL").arg(&k).query(&mut c).unwrap();
                h.join(",")
            } else {
                t
            };
            (k, v)
        })
        .collect();
    out.sort();
    out
}

const BILLING: &str = "#!lua name=billing\nredis.register_function('billing_total', function(keys, args) return 'real' end)";
const EVIL: &str = "#!lua name=billing\nredis.register_function('billing_total', function(keys, args) return 'evil' end)";

#[test]
fn tenants_cannot_escape_their_prefixes() {
    let nodes: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let body = format!("{USERS}{}", common::shards_toml(&refs));
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let mut admin = as_user(proxy.port(), "admin");
    let _: () = redis::cmd("SET")
        .arg("bill:card:alice")
        .arg("4111-1111")
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("bill:{h}")
        .arg("card")
        .arg("5500-0000")
        .query(&mut admin)
        .unwrap();
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(BILLING)
        .query(&mut admin)
        .unwrap();
    // A lock of app's, for the FENCED attack below.
    let token: (u64, i64) = redis::cmd("LOCK.ACQUIRE")
        .arg("app:{x}lk")
        .arg("me")
        .arg(10_000)
        .query(&mut admin)
        .unwrap();
    let before: Vec<Vec<(String, String)>> = nodes.iter().map(node_snapshot).collect();
    assert!(
        before
            .iter()
            .flatten()
            .any(|(k, _)| k == "__shardis__:epoch"),
        "the reserved keys are there to be protected: {before:?}"
    );

    let mut app = as_user(proxy.port(), "app");
    let mut ro = as_user(proxy.port(), "ro");
    // Outside the prefixes, and (without the sorted key's tag) on other shards too: refused
    // for one reason or the other.
    let get_denied = "ERR GET option of SORT denied";
    let by_denied = "ERR BY option of SORT denied";
    let get_acl = "ERR GET option of SORT denied due to insufficient ACL permissions.";
    let no_scripts = "NOPERM User app has no permissions to run the";
    // SORT and SORT_RO reading other tenants' keys and shardis' own through their patterns.
    let _: i64 = redis::cmd("RPUSH")
        .arg("app:{bill:card:alice}l")
        .arg("")
        .query(&mut app)
        .unwrap();
    refused(
        &mut app,
        &[
            "SORT",
            "app:{bill:card:alice}l",
            "BY",
            "nosort",
            "GET",
            "bill:card:alice*",
        ],
        get_denied,
    );
    refused(
        &mut app,
        &["SORT", "app:{x}l", "BY", "bill:card:*", "GET", "#"],
        by_denied,
    );
    refused(
        &mut ro,
        &[
            "SORT_RO",
            "ro:{x}l",
            "BY",
            "nosort",
            "GET",
            "bill:card:alice*",
        ],
        get_denied,
    );
    refused(
        &mut ro,
        &["SORT_RO", "ro:{h}l", "BY", "nosort", "GET", "bill:*->card"],
        get_denied,
    );
    refused(
        &mut ro,
        &["SORT_RO", "ro:{x}l", "GET", "__shardis__:*"],
        get_denied,
    );
    // On the sorted key's own shard (its tag), outside the prefix: the ACL's refusal.
    refused(
        &mut app,
        &["SORT", "app:{x}l", "BY", "nosort", "GET", "bill:{x}*"],
        get_acl,
    );
    refused(
        &mut ro,
        &[
            "SORT_RO",
            "ro:{h}l",
            "BY",
            "nosort",
            "GET",
            "bill:{h}*->card",
        ],
        get_acl,
    );
    // The same through FENCED, whose wrapped command gets every check.
    let t = token.0.to_string();
    refused(
        &mut app,
        &[
            "FENCED",
            "app:{x}lk",
            &t,
            "SORT",
            "app:{x}l",
            "BY",
            "nosort",
            "GET",
            "bill:{x}*",
        ],
        get_acl,
    );
    // STORE: every destination is a key the tenant must own, and never shardis' own.
    refused(
        &mut app,
        &[
            "SORT",
            "app:{x}l",
            "STORE",
            "app:{x}d",
            "STORE",
            "bill:{x}card",
        ],
        "NOPERM",
    );
    let mut admin2 = as_user(proxy.port(), "admin");
    for args in [
        vec![
            "SORT",
            "{a}l",
            "STORE",
            "{a}d",
            "STORE",
            "__shardis__:epoch",
        ],
        vec![
            "SORT",
            "{STORE}l",
            "BY",
            "store",
            "STORE",
            "__shardis__:locks",
        ],
    ] {
        refused(&mut admin2, &args, "ERR key '__shardis__:");
    }
    // Scripts and functions: not run for a tenant not allowed them.
    for args in [
        vec!["EVAL", "return redis.call('FLUSHALL')", "1", "app:{x}"],
        vec!["EVAL", "return redis.call('SWAPDB', 0, 1)", "1", "app:{x}"],
        vec!["EVAL", "return redis.call('KEYS', 'bill*')", "1", "app:{x}"],
        vec![
            "EVALSHA",
            "0123456789012345678901234567890123456789",
            "1",
            "app:{x}",
        ],
        vec!["FCALL", "billing_total", "1", "app:{x}"],
        vec!["SCRIPT", "LOAD", "return 1"],
    ] {
        refused(&mut app, &args, no_scripts);
    }
    refused(
        &mut ro,
        &[
            "EVAL_RO",
            "return redis.call('GET', 'bill:card:alice')",
            "1",
            "ro:{x}",
        ],
        "NOPERM",
    );
    refused(
        &mut ro,
        &["FCALL_RO", "billing_total", "1", "ro:{x}"],
        "NOPERM",
    );
    // What other tenants run: admin-only, even for a tenant allowed scripts.
    let mut scripter = as_user(proxy.port(), "scripter");
    for (c, name) in [(&mut app, "app"), (&mut scripter, "scripter")] {
        for args in [
            vec!["FUNCTION", "DUMP"],
            vec!["FUNCTION", "LOAD", "REPLACE", EVIL],
            vec!["FUNCTION", "DELETE", "billing"],
            vec!["FUNCTION", "FLUSH"],
            vec!["FUNCTION", "LIST", "WITHCODE"],
            vec!["FUNCTION", "RESTORE", "payload"],
            vec!["SCRIPT", "FLUSH"],
        ] {
            refused(
                c,
                &args,
                &format!("NOPERM User {name} has no permissions to run the"),
            );
        }
    }

    // Nothing changed: the victim's keys, the functions, shardis' own keys.
    let after: Vec<Vec<(String, String)>> = nodes.iter().map(node_snapshot).collect();
    let strip = |s: &[Vec<(String, String)>]| -> Vec<(String, String)> {
        s.iter()
            .flatten()
            .filter(|(k, _)| !k.starts_with("app:"))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    let total: String = redis::cmd("FCALL")
        .arg("billing_total")
        .arg(0)
        .query(&mut admin)
        .unwrap();
    assert_eq!(total, "real");

    // What the tenants may do still works: SORT on their own tagged keys, scripts for the
    // tenant allowed them, the admin's functions for it.
    for (k, v) in [
        ("app:{a}w_1", "4"),
        ("app:{a}w_2", "5"),
        ("app:{a}w_3", "1"),
    ] {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(&mut app).unwrap();
    }
    for (k, v) in [
        ("app:{a}u:1", "one"),
        ("app:{a}u:2", "two"),
        ("app:{a}u:3", "three"),
    ] {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(&mut app).unwrap();
    }
    let _: i64 = redis::cmd("RPUSH")
        .arg("app:{a}l")
        .arg(&[3, 2, 1])
        .query(&mut app)
        .unwrap();
    let sorted: Vec<String> = redis::cmd("SORT")
        .arg("app:{a}l")
        .arg("BY")
        .arg("app:{a}w_*")
        .arg("GET")
        .arg("app:{a}u:*")
        .arg("GET")
        .arg("#")
        .query(&mut app)
        .unwrap();
    assert_eq!(sorted, ["three", "3", "one", "1", "two", "2"]);
    let own: Option<String> = redis::cmd("EVAL")
        .arg("return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg("app:{a}u:1")
        .query(&mut scripter)
        .unwrap();
    assert_eq!(own.as_deref(), Some("one"));
    let total: String = redis::cmd("FCALL")
        .arg("billing_total")
        .arg(1)
        .arg("app:{a}x")
        .query(&mut scripter)
        .unwrap();
    assert_eq!(total, "real");
}

/// The same commands on a plain redis-server and through shardis: their replies.
fn both(
    direct: &mut redis::Connection,
    proxy: &mut redis::Connection,
    args: &[&str],
) -> (
    redis::RedisResult<redis::Value>,
    redis::RedisResult<redis::Value>,
) {
    (run(direct, args), run(proxy, args))
}

/// A tenant hears and publishes only on its own channels: it cannot subscribe to another's
/// (by name or pattern), list them, or publish into them; on its own it hears what others
/// publish there.
#[test]
fn tenants_channels_stay_in_their_prefixes() {
    let nodes: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let proxy = Shardis::start_with(&format!("{USERS}{}", common::shards_toml(&refs)));
    let _log = proxy.log_on_panic();
    let channels =
        "-NOPERM this user has no permissions to access one of the channels used as arguments\r\n";
    let mut app = Raw::connect(proxy.port());
    assert_eq!(app.call(&[b"AUTH", b"app", b"app-pw"]), b"+OK\r\n");
    for attack in [
        &[&b"SUBSCRIBE"[..], b"bill:news"][..],
        &[b"SUBSCRIBE", b"app:news", b"bill:news"],
        &[b"PSUBSCRIBE", b"*"],
        &[b"PSUBSCRIBE", b"ap*"],
        &[b"SSUBSCRIBE", b"bill:{s}news"],
        &[b"PUBLISH", b"bill:news", b"forged"],
        &[b"PUBSUB", b"CHANNELS"],
        &[b"PUBSUB", b"NUMSUB", b"bill:news"],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&app.call(attack)),
            channels,
            "{:?}",
            attack
                .iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        );
    }
    // Its own channels work, and it hears what the admin publishes there.
    assert!(app
        .call(&[b"SUBSCRIBE", b"app:news"])
        .starts_with(b"*3\r\n$9\r\nsubscribe\r\n"));
    let mut admin = as_user(proxy.port(), "admin");
    let heard: i64 = redis::cmd("PUBLISH")
        .arg("app:news")
        .arg("hello")
        .query(&mut admin)
        .unwrap();
    assert_eq!(heard, 1);
    assert_eq!(
        app.reply(),
        b"*3\r\n$7\r\nmessage\r\n$8\r\napp:news\r\n$5\r\nhello\r\n"
    );
}

#[test]
fn sort_patterns_across_shards_are_an_error_never_wrong_data() {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let proxy = Shardis::start_with(&common::shards_toml(&refs));
    let _log = proxy.log_on_panic();
    let reference = Redis::start();
    let mut direct = reference.conn();
    let mut c = proxy.conn();
    for (t, l) in [("", "a"), ("{t}", "{t}a")] {
        for args in [
            vec![
                "RPUSH".to_string(),
                l.to_string(),
                "3".into(),
                "2".into(),
                "1".into(),
            ],
            vec![
                "MSET".into(),
                format!("{t}weight_1"),
                "4".into(),
                format!("{t}weight_2"),
                "5".into(),
                format!("{t}weight_3"),
                "1".into(),
            ],
            vec!["SET".into(), format!("{t}user:2"), "u2".into()],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (d, p) = both(&mut direct, &mut c, &args);
            assert!(d.is_ok(), "{args:?}: {d:?}");
            // Untagged MSET keys may span shards; shardis splits it.
            assert!(p.is_ok(), "{args:?}: {p:?}");
        }
    }
    // Without a shared tag: Redis Cluster's error, never an answer computed from the wrong
    // shard (1 3 2 and nil u2 nil before).
    for (args, option) in [
        (vec!["SORT", "a", "BY", "weight_*"], "BY"),
        (vec!["SORT", "a", "GET", "user:*"], "GET"),
        (
            vec!["SORT_RO", "a", "BY", "nosort", "GET", "user:*", "GET", "#"],
            "GET",
        ),
    ] {
        refused(
            &mut c,
            &args,
            &format!("ERR {option} option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots."),
        );
    }
    // With the sorted key's tag: exactly Redis's reply.
    for args in [
        vec!["SORT", "{t}a", "BY", "{t}weight_*"],
        vec![
            "SORT",
            "{t}a",
            "BY",
            "{t}weight_*",
            "GET",
            "{t}user:*",
            "GET",
            "#",
        ],
        vec!["SORT_RO", "{t}a", "BY", "nosort", "GET", "{t}user:*"],
        vec![
            "SORT",
            "{t}a",
            "BY",
            "{t}weight_*",
            "DESC",
            "LIMIT",
            "0",
            "2",
        ],
    ] {
        let (d, p) = both(&mut direct, &mut c, &args);
        assert_eq!(p, d, "{args:?}");
        println!("{args:?}: {p:?}");
    }
}

/// A raw client that sent one command and waits for its reply without blocking the test.
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Pending {
    /// Connects (within 5 s: a proxy that stops accepting leaves clients hanging in its
    /// backlog) and sends `args`; `None` when the connection is not made.
    fn send(port: u16, args: &[&[u8]]) -> Option<Pending> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        stream.set_nonblocking(true).ok()?;
        let _ = stream.write_all(&encode(args));
        Some(Pending {
            stream,
            buf: Vec::new(),
        })
    }

    /// Reads what has arrived: `Some(reply bytes)` once a reply or the end came.
    fn poll(&mut self) -> Option<String> {
        let mut chunk = [0u8; 512];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(format!("{}<closed>", String::from_utf8_lossy(&self.buf))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Some(format!("<{e}>")),
            }
        }
        (!self.buf.is_empty() && self.buf.ends_with(b"\r\n"))
            .then(|| String::from_utf8_lossy(&self.buf).into_owned())
    }
}

#[test]
fn blocked_clients_cannot_exhaust_the_proxy_or_the_node() {
    // This process holds 1,800 sockets itself.
    rlimit::increase_nofile_limit(8_192).unwrap();
    // The nodes want a password: at maxclients a node refuses even AUTH, which must still
    // read as a live node.
    let primary = Redis::start_with(&["--maxclients", "500", "--requirepass", "node-pw"]);
    let port = primary.port().to_string();
    let replica = Redis::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--masterauth",
        "node-pw",
        "--requirepass",
        "node-pw",
    ]);
    let body = format!(
        "[backend]\npassword = \"node-pw\"\n[health]\ninterval = \"200ms\"\n{}",
        shard_toml("a", &primary, &[&replica], "")
    );
    let prlimit = common::which("prlimit").expect("prlimit (util-linux)");
    let proxy = Shardis::start_wrapped(
        &body,
        &[prlimit.to_str().unwrap(), "--nofile=2048:2048", "--"],
    );
    let _log = proxy.log_on_panic();
    common::wait_ready(&proxy, "a", &primary.addr(), 1);
    let mut probe = Raw::connect(proxy.port());
    assert_eq!(probe.call(&[b"SET", b"probe", b"1"]), b"+OK\r\n");

    let connecting = Instant::now();
    let mut blocked: Vec<Pending> = (0..1_200)
        .filter_map(|i| Pending::send(proxy.port(), &[b"BLPOP", format!("q{i}").as_bytes(), b"30"]))
        .collect();
    let mut extra: Vec<Pending> = (0..600)
        .filter_map(|_| Pending::send(proxy.port(), &[b"PING"]))
        .collect();
    println!(
        "connections made in {:?}: {} blocking, {} more",
        connecting.elapsed(),
        blocked.len(),
        extra.len()
    );
    assert_eq!(
        (blocked.len(), extra.len()),
        (1_200, 600),
        "connections left hanging in the backlog"
    );
    let started = Instant::now();
    // For 3 s: the probe keeps answering, every client gets its answer (an error, or PONG)
    // within a second or stays blocked.
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    let mut slowest_probe = Duration::ZERO;
    let mut first_seen: Vec<Option<Duration>> = vec![None; blocked.len() + extra.len()];
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(probe.call(&[b"GET", b"probe"]), b"$1\r\n1\r\n");
        slowest_probe = slowest_probe.max(t.elapsed());
        for (i, p) in blocked.iter_mut().chain(extra.iter_mut()).enumerate() {
            if first_seen[i].is_none() {
                if let Some(reply) = p.poll() {
                    first_seen[i] = Some(started.elapsed());
                    let kind = reply
                        .split(" (")
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(70)
                        .collect();
                    *answered.entry(kind).or_default() += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let still_blocked = first_seen[..blocked.len()]
        .iter()
        .filter(|s| s.is_none())
        .count();
    let unanswered_extra = first_seen[blocked.len()..]
        .iter()
        .filter(|s| s.is_none())
        .count();
    let late = first_seen
        .iter()
        .flatten()
        .filter(|d| **d > Duration::from_secs(1))
        .count();
    println!(
        "after 3 s: {still_blocked} clients blocked in BLPOP, {unanswered_extra} PINGs unanswered, \
         {late} answers after 1 s, slowest probe GET {slowest_probe:?}; answers: {answered:#?}"
    );
    assert_eq!(
        unanswered_extra, 0,
        "a client past a limit was left hanging"
    );
    assert_eq!(late, 0, "a client waited more than a second for its error");
    assert!(slowest_probe < Duration::from_secs(1), "{slowest_probe:?}");
    assert!(
        still_blocked > 0 && still_blocked < 1_200,
        "{still_blocked}"
    );
    drop(blocked);
    drop(extra);
    // No failover: the primary at maxclients was busy, not dead.
    let s = common::shard_info(proxy.port(), "a");
    assert_eq!(
        (s.primary.as_str(), s.failovers),
        (primary.addr().as_str(), 0),
        "{s:?}"
    );
    let mut c = redis::Client::open(format!("redis://:node-pw@127.0.0.1:{}/", primary.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
    assert_eq!(info_field(&info, "role").as_deref(), Some("master"));
    // Everything freed: the probe and new clients work, and the node takes clients again.
    wait_for("new clients to be served", Duration::from_secs(10), || {
        let mut c = Raw::connect(proxy.port());
        let r = c.call(&[b"BLPOP", b"free", b"0.1"]);
        if r.starts_with(b"*-1") || r.starts_with(b"_") {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&r).into_owned())
        }
    });
}

#[test]
fn failed_auth_is_slowed() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], USERS);
    let _log = proxy.log_on_panic();
    let mut raw = Raw::connect(proxy.port());
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The right password is the 2,000th guess, and a write follows it: the proxy must not
    // look at it (and so must not run the write) before the delays of the 1,999 before it.
    let mut guesses: Vec<u8> = Vec::new();
    for i in 0..10_000 {
        let password = if i == 1_999 {
            "admin-pw".to_string()
        } else {
            format!("guess-{i}")
        };
        guesses.extend(encode(&[b"AUTH", b"admin", password.as_bytes()]));
        if i == 1_999 {
            guesses.extend(encode(&[b"SET", b"guessed", b"yes"]));
        }
    }
    let started = Instant::now();
    raw.send(&guesses);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(10) {
        match raw.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let answered = got.windows(10).filter(|w| w == b"-WRONGPASS").count();
    // 10 ms, doubling, at most 2 s: every further answer takes 2 s.
    let at_least = Duration::from_secs(2) * (10_000 - answered) as u32;
    println!(
        "10,000 wrong AUTHs pipelined: {answered} answered in 10 s; all of them take at least {:.1} hours",
        at_least.as_secs_f64() / 3600.0
    );
    assert!((5..=20).contains(&answered), "{answered} answered in 10 s");
    // A correct AUTH, on another connection, is answered at once; the pipelined right guess
    // has not been looked at yet: its write has not run.
    let mut right = Raw::connect(proxy.port());
    let t = Instant::now();
    assert_eq!(right.call(&[b"AUTH", b"admin", b"admin-pw"]), b"+OK\r\n");
    assert_eq!(right.call(&[b"GET", b"guessed"]), b"$-1\r\n");
    let took = t.elapsed();
    println!("a correct AUTH answered in {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Wrong ones, then the right one: answered, and the connection serves.
    let mut mixed = Raw::connect(proxy.port());
    for _ in 0..3 {
        assert!(mixed
            .call(&[b"AUTH", b"app", b"nope"])
            .starts_with(b"-WRONGPASS"));
    }
    assert_eq!(mixed.call(&[b"AUTH", b"app", b"app-pw"]), b"+OK\r\n");
    assert_eq!(mixed.call(&[b"SET", b"app:k", b"v"]), b"+OK\r\n");
}

#[test]
fn dedicated_connections_are_capped_and_given_back() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "[backend]\nmax_dedicated = 50\n");
    let _log = proxy.log_on_panic();
    let dedicated = |proxy: &Shardis| -> String {
        let s = common::shard_info(proxy.port(), "a");
        let info: String = redis::cmd("INFO")
            .arg("shards")
            .query(&mut proxy.conn())
            .unwrap();
        let line = info
            .lines()
            .find(|l| l.starts_with("shard0_node0:"))
            .unwrap_or_else(|| panic!("{s:?}"))
            .to_string();
        line.split(',')
            .find_map(|f| f.strip_prefix("dedicated="))
            .unwrap()
            .to_string()
    };
    let mut blocked: Vec<Pending> = (0..60)
        .filter_map(|i| Pending::send(proxy.port(), &[b"BLPOP", format!("c{i}").as_bytes(), b"0"]))
        .collect();
    assert_eq!(blocked.len(), 60);
    let errors = wait_for(
        "ten clients past the cap to be told",
        Duration::from_secs(5),
        || {
            let errors: Vec<String> = blocked.iter_mut().filter_map(Pending::poll).collect();
            if errors.len() >= 10 {
                Ok(errors)
            } else {
                Err(format!("{errors:?}"))
            }
        },
    );
    assert_eq!(errors.len(), 10, "{errors:?}");
    for e in &errors {
        assert!(
            e.contains("max number of dedicated connections (50, [backend] max_dedicated) reached"),
            "{e}"
        );
    }
    assert_eq!(dedicated(&proxy), "50");
    // A subscriber past the cap gets the error too, and its connection stays usable.
    let mut sub = Raw::connect(proxy.port());
    let reply = String::from_utf8(sub.call(&[b"SUBSCRIBE", b"news"])).unwrap();
    assert!(
        reply.starts_with("-ERR") && reply.contains("max_dedicated"),
        "{reply}"
    );
    assert_eq!(sub.call(&[b"PING"]), b"+PONG\r\n");
    // The node restarts: the blocked clients' connections break, and their places come back
    // even while the sessions still hold the broken handles.
    let mut node = node;
    node.restart();
    wait_for(
        "the broken connections to be given back",
        Duration::from_secs(10),
        || {
            let d = dedicated(&proxy);
            if d == "0" {
                Ok(())
            } else {
                Err(d)
            }
        },
    );
    let mut again = Raw::connect(proxy.port());
    let r = again.call(&[b"BLPOP", b"after", b"0.1"]);
    assert!(r.starts_with(b"*-1"), "{}", String::from_utf8_lossy(&r));
    drop(blocked);
}
