//! Stateful commands through shardis: blocking commands on their own connections, pub/sub,
//! transactions across clients, SCAN over every shard, fan-out commands, WAIT and CLIENT.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Cluster, Raw, Redis, Shardis};
use redis::Commands;

#[test]
fn blocking_pops_never_stall_other_clients() {
    let c = Arc::new(Cluster::start(""));
    let port = c.proxy.port();
    // 50 clients block for 2 s on empty lists while 50 others run GET/SET.
    let start = Arc::new(Barrier::new(100));
    let mut poppers = Vec::new();
    for i in 0..50 {
        let start = start.clone();
        poppers.push(std::thread::spawn(move || {
            let mut conn = common::connect(port);
            start.wait();
            let t = Instant::now();
            let got: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(format!("empty:{i}"))
                .arg(2)
                .query(&mut conn)
                .unwrap();
            (got, t.elapsed())
        }));
    }
    let mut workers = Vec::new();
    for i in 0..50 {
        let start = start.clone();
        workers.push(std::thread::spawn(move || {
            let mut conn = common::connect(port);
            start.wait();
            let mut latencies = Vec::new();
            for j in 0..100 {
                let key = format!("busy:{i}:{j}");
                let t = Instant::now();
                let _: () = conn.set(&key, j).unwrap();
                let v: i64 = conn.get(&key).unwrap();
                latencies.push(t.elapsed());
                assert_eq!(v, j);
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    for p in poppers {
        let (got, waited) = p.join().unwrap();
        assert_eq!(got, None);
        assert!(
            waited >= Duration::from_millis(1900),
            "BLPOP returned after {waited:?}"
        );
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100];
    println!(
        "GET+SET pairs beside 50 blocked BLPOPs: {} pairs, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        pct(50),
        pct(99),
        pct(100)
    );
    // Not a speed target: a pair stuck behind a pop would take the pop's full 2 s.
    assert!(
        pct(100) < Duration::from_secs(1),
        "slowest pair {:?}",
        pct(100)
    );

    // A pop is served by a push from another client, and a pipelined command after a
    // blocking one runs after it, as on Redis.
    let mut popper = Raw::connect(port);
    popper.send(&common::encode(&[b"BLPOP", b"q", b"5"]));
    popper.send(&common::encode(&[b"LLEN", b"q"]));
    std::thread::sleep(Duration::from_millis(200));
    let mut pusher = c.proxy.conn();
    let _: () = pusher.rpush("q", &["a", "b"]).unwrap();
    assert_eq!(popper.reply(), b"*2\r\n$1\r\nq\r\n$1\r\na\r\n");
    assert_eq!(popper.reply(), b":1\r\n");
}

/// The same exchange with a plain Redis and with shardis, byte for byte.
fn same_as_redis(exchange: &[&[&[u8]]]) {
    let reference = Redis::start();
    let c = Cluster::start("");
    let mut direct = Raw::connect(reference.port());
    let mut proxied = Raw::connect(c.proxy.port());
    for cmd in exchange {
        let want = direct.call(cmd);
        let got = proxied.call(cmd);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{:?}",
            cmd.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn resp2_subscriber_mode_behaves_as_redis() {
    // Confirmations carry client-wide counts; other commands are refused while subscribed;
    // PING answers in the subscriber form; leaving every subscription ends the mode.
    same_as_redis(&[
        &[b"SUBSCRIBE", b"news", b"sport", b"news"],
        &[b"PSUBSCRIBE", b"w*"],
        &[b"GET", b"k"],
        &[b"PING"],
        &[b"PING", b"hi"],
        &[b"SSUBSCRIBE", b"{s}a", b"{s}b"],
        &[b"UNSUBSCRIBE", b"sport", b"nothing"],
        &[b"PUNSUBSCRIBE"],
        &[b"UNSUBSCRIBE", b"news"],
        &[b"GET", b"k"],
        &[b"SUNSUBSCRIBE", b"{s}a", b"{s}b"],
        &[b"UNSUBSCRIBE"],
        &[b"GET", b"k"],
        &[b"PING"],
    ]);
}

#[test]
fn a_subscriber_reset_in_the_same_pipeline_as_its_unsubscribe_is_answered_as_on_redis() {
    // RESET forgets the subscriptions; the unsubscriptions sent before it are still each
    // confirmed first, in order, as Redis confirms them.
    let reference = Redis::start();
    let c = Cluster::start("");
    for hello in [&b"2"[..], b"3"] {
        let exchange = |port: u16| -> Vec<String> {
            let mut raw = Raw::connect(port);
            let mut got = vec![raw.call(&[b"HELLO", hello])[..1].to_vec()];
            raw.send(&common::encode(&[b"SUBSCRIBE", b"a", b"b"]));
            raw.send(&common::encode(&[b"PSUBSCRIBE", b"p*"]));
            got.extend((0..3).map(|_| raw.reply()));
            let pipeline = [
                common::encode(&[b"UNSUBSCRIBE", b"a", b"b"]),
                common::encode(&[b"PUNSUBSCRIBE"]),
                common::encode(&[b"RESET"]),
                common::encode(&[b"PING"]),
            ];
            raw.send(&pipeline.concat());
            got.extend((0..5).map(|_| raw.reply()));
            got.iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect()
        };
        assert_eq!(
            exchange(c.proxy.port()),
            exchange(reference.port()),
            "HELLO {}",
            String::from_utf8_lossy(hello)
        );
    }
}

#[test]
fn messages_reach_each_subscriber_once_in_its_own_protocol() {
    let c = Cluster::start("");
    let mut resp2 = Raw::connect(c.proxy.port());
    let mut resp3 = Raw::connect(c.proxy.port());
    resp3.call(&[b"HELLO", b"3"]);
    // Channels spread over the shards, plus a pattern that covers all of them.
    let channels: Vec<String> = (0..12).map(|i| format!("ch{i}")).collect();
    for raw in [&mut resp2, &mut resp3] {
        let mut cmd: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        cmd.extend(channels.iter().map(|c| c.as_bytes()));
        raw.send(&common::encode(&cmd));
        for _ in &channels {
            raw.reply();
        }
        raw.call(&[b"PSUBSCRIBE", b"ch1*"]);
    }
    let mut publisher = c.proxy.conn();
    for ch in &channels {
        let receivers: i64 = publisher.publish(ch, format!("m-{ch}")).unwrap();
        // Two subscribers, and both patterns match ch1, ch10, ch11.
        let expected = if ch.starts_with("ch1") { 4 } else { 2 };
        assert_eq!(receivers, expected, "{ch}");
    }
    // RESP3 gets push frames and can still run commands in between.
    resp3.send(&common::encode(&[b"GET", b"nothing"]));
    for (raw, head) in [(&mut resp2, "*3\r\n"), (&mut resp3, ">3\r\n")] {
        let mut seen = HashSet::new();
        while seen.len() < 12 + 3 {
            let frame = String::from_utf8(raw.reply()).unwrap();
            if frame == "_\r\n" && head.starts_with('>') {
                continue; // the GET's reply
            }
            assert!(
                frame.starts_with(head) || frame.starts_with(&head.replace('3', "4")),
                "{frame:?}"
            );
            assert!(seen.insert(frame.clone()), "delivered twice: {frame:?}");
        }
        assert_eq!(seen.iter().filter(|f| f.contains("pmessage")).count(), 3);
    }
}

/// A RESP3 subscriber that never stops sending commands still gets its messages: a socket
/// that is always readable must not keep the session from its subscription's pushes.
#[test]
fn a_subscriber_that_keeps_sending_still_gets_its_messages() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    raw.call(&[b"HELLO", b"3"]);
    raw.call(&[b"SUBSCRIBE", b"busy"]);
    // A stream of PINGs, written as fast as the proxy reads them, for at most 20 s.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = raw.stream.try_clone().unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let pings = common::encode(&[b"PING"]).repeat(2000);
            let until = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if stream.write_all(&pings).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut publisher = c.proxy.conn();
    for i in 0..10 {
        let _: i64 = publisher.publish("busy", format!("m{i}")).unwrap();
    }
    // Every reply is a PONG or one of the messages; all ten must come while the PINGs do.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut messages = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages < 10 && Instant::now() < deadline {
        let n = raw.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(len)) = shardis::resp::reply::frame_len(&buf) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            if frame.starts_with(b">3\r\n$7\r\nmessage") {
                messages += 1;
            } else {
                assert_eq!(frame, b"+PONG\r\n", "{}", String::from_utf8_lossy(&frame));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = raw.stream.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    assert_eq!(
        messages, 10,
        "messages held back while the client kept sending"
    );
}

/// An unsubscription is confirmed to the client once the node has confirmed it, so another
/// client's PUBSUB NUMSUB right after it no longer counts the channel. (Before, the proxy
/// confirmed it at once, and a NUMSUB that overtook the UNSUBSCRIBE still counted it.)
#[test]
fn an_unsubscription_is_confirmed_once_the_node_has_done_it() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let mut observer = Raw::connect(proxy.port());
    for proto in [&b"2"[..], b"3"] {
        let mut subscriber = Raw::connect(proxy.port());
        subscriber.call(&[b"HELLO", proto]);
        subscriber.call(&[b"SUBSCRIBE", b"leaving"]);
        {
            let _paused = node.proc.pause();
            subscriber.send(&common::encode(&[b"UNSUBSCRIBE", b"leaving"]));
            subscriber
                .stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut early = [0u8; 64];
            let read = std::io::Read::read(&mut subscriber.stream, &mut early);
            assert!(
                read.is_err(),
                "RESP{}: confirmed while the node was stopped: {:?}",
                proto[0] as char,
                read.map(|n| String::from_utf8_lossy(&early[..n]).into_owned())
            );
        }
        subscriber
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let left = String::from_utf8(subscriber.reply()).unwrap();
        assert!(left.contains("unsubscribe"), "{left:?}");
        let counted = observer.call(&[b"PUBSUB", b"NUMSUB", b"leaving"]);
        assert_eq!(counted, b"*2\r\n$7\r\nleaving\r\n:0\r\n");
    }
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_not_buffered() {
    let nodes: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = nodes.iter().collect();
    let proxy = Shardis::in_front_of(&refs, "[limits]\nmax_output_buffer = 1048576\n");
    let mut slow = Raw::connect(proxy.port());
    slow.call(&[b"SUBSCRIBE", b"firehose"]);
    let mut publisher = proxy.conn();
    let payload = vec![b'x'; 64 * 1024];
    // 64 MiB published at a subscriber that never reads: far more than socket buffers and
    // the 1 MiB limit.
    let mut closed_after = None;
    for i in 0..1024 {
        let receivers: i64 = publisher.publish("firehose", &payload).unwrap();
        if receivers == 0 {
            closed_after = Some(i);
            break;
        }
    }
    assert!(
        closed_after.is_some(),
        "the slow subscriber was never dropped"
    );
    assert!(proxy
        .log()
        .contains("subscriber closed: its unread messages passed max_output_buffer"));
    let _: () = publisher.set("still", "serving").unwrap();
}

#[test]
fn transactions_keep_redis_semantics_across_shards_and_clients() {
    let c = Cluster::start("");
    // Two keys on different shards.
    let a = "k0".to_string();
    let on_a = c.holder_after_set(&a);
    let b = (1..)
        .map(|i| format!("k{i}"))
        .find(|k| c.holder_after_set(k) != on_a)
        .unwrap();
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", a.as_bytes(), b"1"]), b"+QUEUED\r\n");
    assert!(raw
        .call(&[b"SET", b.as_bytes(), b"1"])
        .starts_with(b"-CROSSSLOT"));
    assert_eq!(
        raw.call(&[b"EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    // WATCH, then another client changes the key: EXEC fails with a null reply.
    assert_eq!(raw.call(&[b"WATCH", a.as_bytes()]), b"+OK\r\n");
    let mut other = c.proxy.conn();
    let _: () = other.set(&a, "changed").unwrap();
    raw.call(&[b"MULTI"]);
    raw.call(&[b"SET", a.as_bytes(), b"mine"]);
    assert_eq!(raw.call(&[b"EXEC"]), b"*-1\r\n");
    let v: String = other.get(&a).unwrap();
    assert_eq!(v, "changed");
    // WATCH on one shard fixes the transaction's shard.
    raw.call(&[b"WATCH", a.as_bytes()]);
    assert!(raw
        .call(&[b"WATCH", b.as_bytes()])
        .starts_with(b"-CROSSSLOT"));
    raw.call(&[b"MULTI"]);
    assert!(raw.call(&[b"GET", b.as_bytes()]).starts_with(b"-CROSSSLOT"));
    assert_eq!(raw.call(&[b"DISCARD"]), b"+OK\r\n");
    // Without interference it commits, on the watched shard.
    raw.call(&[b"WATCH", a.as_bytes()]);
    raw.call(&[b"MULTI"]);
    raw.call(&[b"SET", a.as_bytes(), b"mine"]);
    assert_eq!(raw.call(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    assert_eq!(raw.call(&[b"GET", a.as_bytes()]), b"$4\r\nmine\r\n");
}

#[test]
fn scripts_and_functions_reach_every_shard() {
    let c = Cluster::start("");
    let mut conn = c.proxy.conn();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('SET', KEYS[1], ARGV[1])")
        .query(&mut conn)
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000")
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
    let lib = "#!lua name=shardislib\nredis.register_function('getset2', function(keys, args) redis.call('SET', keys[1], args[1]) return redis.call('GET', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(lib)
        .query(&mut conn)
        .unwrap();
    assert_eq!(name, "shardislib");
    for i in 0..60 {
        let key = format!("s:{i}");
        let _: () = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(&key)
            .arg(i)
            .query(&mut conn)
            .unwrap();
        let v: i64 = redis::cmd("FCALL")
            .arg("getset2")
            .arg(1)
            .arg(&key)
            .arg(i + 1)
            .query(&mut conn)
            .unwrap();
        assert_eq!(v, i + 1);
    }
    // Every shard ran some of them.
    for node in &c.nodes {
        let n: i64 = redis::cmd("DBSIZE").query(&mut node.conn()).unwrap();
        assert!(n > 5, "a shard ran only {n}");
    }
}

#[test]
fn scan_keys_randomkey_and_flush_cover_every_shard() {
    let c = Cluster::start("[commands]\nallow_keys = true");
    let mut conn = c.proxy.conn();
    let random: Option<String> = redis::cmd("RANDOMKEY").query(&mut conn).unwrap();
    assert_eq!(random, None);
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.set(format!("scan:{i}"), i).ignore();
    }
    let _: () = pipe
        .hset("scan:h", "f", "v")
        .ignore()
        .query(&mut conn)
        .unwrap();
    // redis-cli --scan walks the shard cursors until 0.
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &c.proxy.port().to_string(),
            "--scan",
            "--pattern",
            "scan:*",
        ])
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), 3001, "every key once");
    assert_eq!(unique.len(), 3001);
    // TYPE and MATCH pass through.
    let hashes: Vec<String> = conn
        .scan_options(
            redis::ScanOptions::default()
                .with_pattern("scan:*")
                .with_type("hash"),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(hashes, vec!["scan:h".to_string()]);
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(raw.call(&[b"SCAN", b"x"]), b"-ERR invalid cursor\r\n");
    let keys: Vec<String> = conn.keys("scan:1??").unwrap();
    assert_eq!(keys.len(), 100);
    // Keys on one shard only: RANDOMKEY still finds one every time.
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut c.nodes[0].conn())
        .unwrap();
    for _ in 0..20 {
        let k: Option<String> = redis::cmd("RANDOMKEY").query(&mut conn).unwrap();
        assert!(k.is_some());
    }
    // FLUSHALL is refused unless the configuration allows it.
    assert!(raw
        .call(&[b"FLUSHALL"])
        .starts_with(b"-ERR shardis does not support 'flushall'"));
    let allowed = Shardis::in_front_of(
        &c.nodes.iter().collect::<Vec<_>>(),
        "[commands]\nallow_flush = true\n",
    );
    let mut raw = Raw::connect(allowed.port());
    assert_eq!(raw.call(&[b"FLUSHALL"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"DBSIZE"]), b":0\r\n");
}

/// A key, `prefix` and a number, that shardis places on `node` (set through the proxy to find
/// out).
fn key_on(proxy: &Shardis, node: &Redis, prefix: &str) -> String {
    let mut setter = proxy.conn();
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| {
            let _: () = setter.set(k, 1).unwrap();
            let n: i64 = redis::cmd("EXISTS").arg(k).query(&mut node.conn()).unwrap();
            n == 1
        })
        .unwrap()
}

#[test]
fn wait_counts_the_clients_own_writes_on_every_shard() {
    let primary = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let other = Redis::start();
    let proxy = Shardis::in_front_of(&[&primary, &other], "");
    // Wait for the replica to sync.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A key on the shard with the replica.
    let key = key_on(&proxy, &primary, "w");
    // This client writes to that shard only; nothing it wrote is unreplicated.
    let mut raw = Raw::connect(proxy.port());
    raw.call(&[b"SET", key.as_bytes(), b"1"]);
    assert_eq!(raw.call(&[b"WAIT", b"1", b"2000"]), b":1\r\n");
    // A replica that cannot acknowledge: the client's new write is not confirmed.
    replica.proc.signal("STOP");
    raw.call(&[b"SET", key.as_bytes(), b"2"]);
    let t = Instant::now();
    assert_eq!(raw.call(&[b"WAIT", b"1", b"300"]), b":0\r\n");
    assert!(t.elapsed() >= Duration::from_millis(250));
    replica.proc.signal("CONT");
    assert_eq!(raw.call(&[b"WAIT", b"1", b"5000"]), b":1\r\n");
    // Writes on a shard with no replica: WAIT 1 cannot be met there.
    let elsewhere = key_on(&proxy, &other, "o");
    raw.call(&[b"SET", elsewhere.as_bytes(), b"1"]);
    assert_eq!(raw.call(&[b"WAIT", b"1", b"200"]), b":0\r\n");
}

#[test]
fn client_list_info_and_kill_see_the_proxys_clients() {
    let c = Cluster::start("");
    let mut a = Raw::connect(c.proxy.port());
    let mut b = Raw::connect(c.proxy.port());
    a.call(&[b"CLIENT", b"SETNAME", b"alpha"]);
    a.call(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"mylib"]);
    b.call(&[b"SUBSCRIBE", b"x"]);
    let list = String::from_utf8(a.call(&[b"CLIENT", b"LIST"])).unwrap();
    assert!(list.contains("name=alpha"), "{list}");
    assert!(list.contains("lib-name=mylib"), "{list}");
    assert!(list.contains("cmd=client|list"), "{list}");
    assert!(list.contains("flags=P") && list.contains("sub=1"), "{list}");
    let info = String::from_utf8(a.call(&[b"CLIENT", b"INFO"])).unwrap();
    assert!(
        info.contains("name=alpha") && !info.contains("sub=1"),
        "{info}"
    );
    let pubsub = String::from_utf8(a.call(&[b"CLIENT", b"LIST", b"TYPE", b"pubsub"])).unwrap();
    assert_eq!(pubsub.matches("id=").count(), 1, "{pubsub}");
    assert_eq!(a.call(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]), b":1\r\n");
    assert!(b.is_closed());
    assert_eq!(
        a.call(&[b"CLIENT", b"KILL", b"1.2.3.4:5"]),
        b"-ERR No such client\r\n"
    );
    assert!(a
        .call(&[b"CLIENT", b"TRACKING", b"on"])
        .starts_with(b"-ERR shardis does not support 'client|tracking'"));
    assert_eq!(a.call(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn session_state_edges_behave_as_on_redis() {
    let c = Cluster::start("");
    let port = c.proxy.port();
    let mut other = c.proxy.conn();

    // A client that leaves while blocked takes nothing with it: the next push stays.
    let mut popper = Raw::connect(port);
    popper.send(&common::encode(&[b"BLPOP", b"left", b"0"]));
    std::thread::sleep(Duration::from_millis(200));
    drop(popper);
    std::thread::sleep(Duration::from_millis(300));
    let _: () = other.rpush("left", "v").unwrap();
    let len: i64 = other.llen("left").unwrap();
    assert_eq!(len, 1, "a departed client's BLPOP took the element");

    // Malformed timeouts get Redis's error, and the connection stays.
    let mut raw = Raw::connect(port);
    assert_eq!(
        raw.call(&[b"BLPOP", b"k", b"nan"]),
        b"-ERR timeout is not a float or out of range\r\n"
    );

    // The client's own connections follow its protocol.
    raw.call(&[b"HELLO", b"3"]);
    assert_eq!(raw.call(&[b"BLPOP", b"k", b"0.05"]), b"_\r\n");
    raw.call(&[b"RESET"]);
    assert_eq!(raw.call(&[b"BLPOP", b"k", b"0.05"]), b"*-1\r\n");

    // A RESP3 subscriber gets its messages while one of its commands is blocked.
    raw.call(&[b"HELLO", b"3"]);
    raw.call(&[b"SUBSCRIBE", b"live"]);
    raw.send(&common::encode(&[b"BLPOP", b"k", b"2"]));
    std::thread::sleep(Duration::from_millis(100));
    let _: () = other.publish("live", "now").unwrap();
    let first = raw.reply();
    assert!(
        first.starts_with(b">3\r\n$7\r\nmessage"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    assert_eq!(raw.reply(), b"_\r\n");

    // QUIT inside MULTI closes; CLIENT KILL of oneself answers first.
    let mut q = Raw::connect(port);
    q.call(&[b"MULTI"]);
    assert_eq!(q.call(&[b"QUIT"]), b"+OK\r\n");
    assert!(q.is_closed());
    let mut k = Raw::connect(port);
    assert_eq!(
        k.call(&[b"CLIENT", b"KILL", b"SKIPME", b"no", b"TYPE", b"normal", b"MAXAGE", b"1000"]),
        b":0\r\n"
    );
    let id = k.client_id().to_string();
    assert_eq!(
        k.call(&[b"CLIENT", b"KILL", b"ID", id.as_bytes(), b"SKIPME", b"no"]),
        b":1\r\n"
    );
    assert!(k.is_closed());
}

/// A client that never stops sending does not hold its worker: another client connects and is
/// answered, and its CLIENT KILL closes the flood, whose session sees the kill between
/// requests, not only when it has nothing else to do.
#[test]
fn client_kill_closes_a_client_that_never_stops_sending() {
    use std::io::{Read, Write};
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let mut flood = Raw::connect(proxy.port());
    let id = flood.client_id().to_string();
    // Pipelined PINGs, written without pause for at most 30 s, and their replies read.
    let mut writer = flood.stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let batch = common::encode(&[b"PING"]).repeat(500);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && writer.write_all(&batch).is_ok() {}
    });
    let mut reader = flood.stream;
    let reading = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got += n,
                // A reset is a close too; a timeout is not.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
                Err(e) => return Err(format!("{e} after {got} bytes")),
            }
        }
    });
    // Let the flood run before the kill.
    std::thread::sleep(Duration::from_millis(300));
    // A client that connects during the flood is served: its worker is not held by the flood.
    let mut admin = Raw::connect(proxy.port());
    assert_eq!(
        admin.call(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()]),
        b":1\r\n"
    );
    let got = reading
        .join()
        .unwrap()
        .expect("the flooding client was not closed within the 10 s read timeout");
    assert!(got > 0, "the flood got no replies before the kill");
    sending.join().unwrap();
    assert_eq!(admin.call(&[b"PING"]), b"+PONG\r\n");
}
