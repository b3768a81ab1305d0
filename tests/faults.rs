//! A node that dies, hangs or never existed: its commands fail fast and clearly, others go on.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Raw, Redis, Shardis};

const FAST: &str = "[backend]\ntimeout = \"500ms\"\nconnect_timeout = \"300ms\"\nreconnect_backoff = \"50ms\"\nreconnect_backoff_max = \"200ms\"";

/// Keys that land on each shard, found through the proxy's own placement (via the nodes).
fn keys_by_node(nodes: &[&Redis], proxy: &Shardis, per_node: usize) -> Vec<Vec<String>> {
    let mut by_node = vec![Vec::new(); nodes.len()];
    let mut raw = Raw::connect(proxy.port());
    for i in 0.. {
        if by_node.iter().all(|k: &Vec<String>| k.len() >= per_node) {
            break;
        }
        let key = format!("f:{i}");
        assert_eq!(raw.call(&[b"SET", key.as_bytes(), b"1"]), b"+OK\r\n");
        let holder = nodes
            .iter()
            .position(|n| Raw::connect(n.port()).call(&[b"EXISTS", key.as_bytes()]) == b":1\r\n")
            .unwrap();
        by_node[holder].push(key);
    }
    by_node
}

#[test]
fn a_killed_node_fails_its_commands_fast_and_the_others_go_on() {
    let mut nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let proxy = Shardis::in_front_of(&refs, FAST);
    let keys = keys_by_node(&refs, &proxy, 20);
    let dead_port = nodes[1].port();
    nodes[1].proc.kill();

    let mut raw = Raw::connect(proxy.port());
    let started = Instant::now();
    for (node, node_keys) in keys.iter().enumerate() {
        for key in node_keys {
            let reply = String::from_utf8(raw.call(&[b"GET", key.as_bytes()])).unwrap();
            if node == 1 {
                assert!(
                    reply.starts_with("-ERR shard 'b' node 127.0.0.1:")
                        && reply.contains(&dead_port.to_string()),
                    "{reply}"
                );
            } else {
                assert_eq!(reply, "$1\r\n1\r\n");
            }
        }
    }
    // 60 commands, a third to the dead node: all answered well within one timeout each.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // A split command touching the dead shard fails as a whole, with the reason.
    let mget =
        String::from_utf8(raw.call(&[b"MGET", keys[0][0].as_bytes(), keys[1][0].as_bytes()]))
            .unwrap();
    assert!(mget.starts_with("-ERR shard 'b'"), "{mget}");
    // INFO still answers, and shows the node down.
    let info = String::from_utf8(raw.call(&[b"INFO", b"shards"])).unwrap();
    assert!(
        info.contains("name=b,") && info.contains("state=down"),
        "{info}"
    );
}

#[test]
fn a_node_that_never_answers_times_out_within_the_limit() {
    // Accepts connections and reads, never replies.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            let mut s = stream.try_clone().unwrap();
            held.push(stream);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let good = Redis::start();
    let proxy = Shardis::start_with(&format!(
        "{FAST}\n[[shards]]\nname = \"good\"\nprimary = \"{}\"\n[[shards]]\nname = \"slow\"\nprimary = \"{silent_addr}\"\n",
        good.addr()
    ));
    let mut raw = Raw::connect(proxy.port());
    let mut timed = Vec::new();
    let mut served = 0;
    for i in 0..40 {
        let key = format!("t:{i}");
        let started = Instant::now();
        let reply = String::from_utf8(raw.call(&[b"SET", key.as_bytes(), b"v"])).unwrap();
        if reply == "+OK\r\n" {
            served += 1;
        } else {
            assert!(reply.starts_with("-ERR shard 'slow' node"), "{reply}");
            timed.push(started.elapsed());
        }
    }
    assert!(
        served > 5 && timed.len() > 5,
        "served {served}, timed out {}",
        timed.len()
    );
    // Each failure arrives after about the 500 ms timeout, never hangs.
    for t in &timed {
        assert!(
            *t < Duration::from_secs(3),
            "a request to the silent node took {t:?}"
        );
    }
}

#[test]
fn a_node_down_at_start_is_reported_and_picked_up_when_it_comes() {
    let good = Redis::start();
    let (held, port) = common::refused_port();
    let proxy = Shardis::start_with(&format!(
        "{FAST}\n[[shards]]\nname = \"good\"\nprimary = \"{}\"\n[[shards]]\nname = \"late\"\nprimary = \"127.0.0.1:{port}\"\n",
        good.addr()
    ));
    let mut raw = Raw::connect(proxy.port());
    let mut late_key = None;
    for i in 0..50 {
        let key = format!("l:{i}");
        let reply = String::from_utf8(raw.call(&[b"SET", key.as_bytes(), b"v"])).unwrap();
        if reply.starts_with("-ERR shard 'late'") {
            assert!(reply.contains("unavailable"), "{reply}");
            late_key = Some(key);
        } else {
            assert_eq!(reply, "+OK\r\n");
        }
    }
    let late_key = late_key.expect("some key maps to the missing node");
    // Start a Redis on that port: the proxy reconnects by itself.
    drop(held);
    let dir = tempfile::TempDir::new().unwrap();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _late = common::Proc { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = raw.call(&[b"SET", late_key.as_bytes(), b"v"]);
        if reply == b"+OK\r\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reconnected: {}",
            String::from_utf8_lossy(&reply)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_that_accepts_and_hangs_up_gets_clear_errors() {
    // Accepts every connection and closes it at once (a node at its client limit does that).
    let rude = TcpListener::bind("127.0.0.1:0").unwrap();
    let rude_addr = rude.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in rude.incoming() {
            drop(stream);
        }
    });
    let good = Redis::start();
    let proxy = Shardis::start_with(&format!(
        "{FAST}\n[[shards]]\nname = \"good\"\nprimary = \"{}\"\n[[shards]]\nname = \"rude\"\nprimary = \"{rude_addr}\"\n",
        good.addr()
    ));
    let mut raw = Raw::connect(proxy.port());
    let (mut ok, mut refused) = (0, 0);
    for i in 0..60 {
        let key = format!("r:{i}");
        let reply = String::from_utf8(raw.call(&[b"SET", key.as_bytes(), b"v"])).unwrap();
        if reply == "+OK\r\n" {
            ok += 1;
        } else {
            assert!(reply.starts_with("-ERR shard 'rude' node"), "{reply}");
            refused += 1;
        }
    }
    assert!(ok > 10 && refused > 10, "ok {ok}, refused {refused}");
}

/// A node killed while a pipeline is in flight: every reply still comes back, in order; the
/// dead shard's commands get its error, every other shard's succeed.
#[test]
fn a_node_killed_under_pipelined_load() {
    let mut nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let proxy = Shardis::in_front_of(&refs, FAST);
    // The proxy's placement, from the same configuration.
    let config = format!("{FAST}\n{}", common::shards_toml(&refs));
    let router = shardis::config::Config::from_toml(&config)
        .unwrap()
        .router();

    let mut raw = Raw::connect(proxy.port());
    let n = 20_000;
    let batch = |range: std::ops::Range<usize>| -> Vec<u8> {
        range
            .flat_map(|i| common::encode(&[b"SET", format!("load:{i}").as_bytes(), b"v"]))
            .collect()
    };
    raw.send(&batch(0..n / 2));
    nodes[1].proc.kill();
    raw.send(&batch(n / 2..n));
    let mut errors = 0;
    for i in 0..n {
        let key = format!("load:{i}");
        let reply = String::from_utf8(raw.reply()).unwrap();
        if router.shard_of(key.as_bytes()) == 1 {
            if reply != "+OK\r\n" {
                assert!(reply.starts_with("-ERR shard 'b' node"), "{key}: {reply}");
                errors += 1;
            }
        } else {
            assert_eq!(reply, "+OK\r\n", "{key} on a live shard");
        }
    }
    assert!(
        errors > 1_000,
        "only {errors} commands for the dead shard failed"
    );
}

/// The reply to `GET k` on a new connection, as text.
fn get(port: u16) -> String {
    String::from_utf8(Raw::connect(port).call(&[b"GET", b"k"])).unwrap()
}

/// A shard whose only node refuses connections: once the health checks hold it down, its
/// error still carries the system's words, which scripts written for twemproxy's
/// `-ERR Connection refused` look for.
#[test]
fn a_refused_node_is_reported_in_the_systems_words() {
    let (_held, port) = common::refused_port();
    let proxy = Shardis::start_with(&format!(
        "{FAST}\n[health]\ninterval = \"100ms\"\n[[shards]]\nname = \"a\"\nprimary = \"127.0.0.1:{port}\"\n"
    ));
    let _log = proxy.log_on_panic();
    let down = format!("-ERR shard 'a' unavailable: primary 127.0.0.1:{port} is down");
    let reply = common::wait_for("the node held down", Duration::from_secs(15), || {
        let reply = get(proxy.port());
        // Before that, the node's own connections say it (the same words).
        assert!(reply.starts_with("-ERR shard 'a' "), "{reply}");
        if reply.starts_with(&format!("-ERR shard 'a' node 127.0.0.1:{port} ")) {
            assert!(reply.contains("Connection refused"), "{reply}");
        }
        reply
            .starts_with(&down)
            .then_some(reply.clone())
            .ok_or(reply)
    });
    assert!(reply.contains("Connection refused"), "{reply}");
}

/// A node that stops answering: the request's error says it timed out, and which node.
#[test]
fn a_silent_node_is_reported_as_timed_out() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], FAST);
    let _log = proxy.log_on_panic();
    let mut raw = Raw::connect(proxy.port());
    assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let paused = node.proc.pause();
    let reply = String::from_utf8(raw.call(&[b"GET", b"k"])).unwrap();
    drop(paused);
    assert!(
        reply.starts_with(&format!("-ERR shard 'a' node {} ", node.addr())),
        "{reply}"
    );
    assert!(reply.contains("timed out"), "{reply}");
}

/// One client, one request at a time, after a quiet spell: its session writes the request to
/// the node itself (see `backend::conn::write_side`), and the connection's timer, stopped
/// while nothing was in flight, must be started for it, or a node that stops answering then
/// would leave the client waiting for good.
#[test]
fn a_request_after_a_quiet_spell_times_out_when_the_node_stops_answering() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], FAST);
    let _log = proxy.log_on_panic();
    let mut raw = Raw::connect(proxy.port());
    for _ in 0..3 {
        assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    }
    // Several of the connection's 125 ms ticks with nothing in flight.
    std::thread::sleep(Duration::from_millis(800));
    let paused = node.proc.pause();
    let started = Instant::now();
    let reply = String::from_utf8(raw.call(&[b"GET", b"k"])).unwrap();
    let took = started.elapsed();
    drop(paused);
    assert!(reply.contains("timed out"), "{reply}");
    assert!(took < Duration::from_secs(3), "the request took {took:?}");
}

/// A wrong `[backend] password`: the error names the setup commands the client's own protocol
/// uses: AUTH alone for a RESP2 client, AUTH and HELLO 3 for a RESP3 one.
#[test]
fn a_refused_backend_auth_names_the_clients_protocol() {
    let node = Redis::start_with(&["--requirepass", "right"]);
    // Checks far apart, and few reconnects to wake them, so the node is not held down
    // (another error) during the test.
    let proxy = Shardis::in_front_of(
        &[&node],
        "[backend]\npassword = \"wrong\"\nreconnect_backoff = \"5s\"\nreconnect_backoff_max = \"5s\"\n[health]\ninterval = \"10s\"",
    );
    let _log = proxy.log_on_panic();
    let reply = get(proxy.port());
    assert!(reply.starts_with("-ERR shard 'a' node "), "{reply}");
    assert!(
        reply.contains("connection setup (AUTH) refused: WRONGPASS"),
        "{reply}"
    );
    assert!(!reply.contains("HELLO"), "{reply}");

    let mut resp3 = Raw::connect(proxy.port());
    let hello = resp3.call(&[b"HELLO", b"3"]);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    let reply = String::from_utf8(resp3.call(&[b"GET", b"k"])).unwrap();
    assert!(reply.starts_with("-ERR shard 'a' node "), "{reply}");
    assert!(
        reply.contains("connection setup (AUTH, HELLO 3) refused: WRONGPASS"),
        "{reply}"
    );
}
