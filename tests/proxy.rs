//! Commands through shardis in front of three real redis-server processes.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Raw, Redis, Shardis};
use redis::{Commands, Value};

#[test]
fn single_key_commands_land_on_one_shard_and_spread() {
    let c = Cluster::start("");
    let mut conn = c.proxy.conn();
    for i in 0..300 {
        let _: () = conn.set(format!("key:{i}"), i).unwrap();
    }
    let mut per_node = [0usize; 3];
    for i in 0..300 {
        let v: i64 = conn.get(format!("key:{i}")).unwrap();
        assert_eq!(v, i);
        let holders = c.holder(&format!("key:{i}"));
        assert_eq!(holders.len(), 1, "key:{i} on exactly one node");
        per_node[holders[0]] += 1;
    }
    for (node, n) in per_node.iter().enumerate() {
        assert!((60..=140).contains(n), "node {node} holds {n} of 300 keys");
    }
    // Every data type works through the proxy.
    let _: () = conn.hset("h", "f", "v").unwrap();
    let _: () = conn.rpush("l", &[1, 2, 3]).unwrap();
    let _: () = conn.sadd("s", "m").unwrap();
    let _: () = conn.zadd("z", "m", 1.5).unwrap();
    let r: Vec<i64> = conn.lrange("l", 0, -1).unwrap();
    assert_eq!(r, vec![1, 2, 3]);
    let score: f64 = conn.zscore("z", "m").unwrap();
    assert_eq!(score, 1.5);
}

#[test]
fn multi_key_commands_split_and_merge() {
    let c = Cluster::start("");
    let mut conn = c.proxy.conn();
    let keys: Vec<String> = (0..50).map(|i| format!("mk:{i}")).collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let _: () = conn.mset(&pairs).unwrap();
    // The keys really are spread over all three nodes.
    let holders: std::collections::HashSet<usize> = keys.iter().flat_map(|k| c.holder(k)).collect();
    assert_eq!(holders.len(), 3);

    // MGET in order, with missing keys and duplicates in place.
    let mut ask: Vec<String> = keys.clone();
    ask.insert(10, "missing".into());
    ask.push(keys[3].clone());
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&ask).query(&mut conn).unwrap();
    let want: Vec<Option<String>> = ask
        .iter()
        .map(|k| (k != "missing").then(|| format!("v-{k}")))
        .collect();
    assert_eq!(got, want);

    let n: i64 = redis::cmd("EXISTS")
        .arg(&keys)
        .arg("missing")
        .arg(&keys[0])
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 51);
    let n: i64 = redis::cmd("TOUCH")
        .arg(&keys[..10])
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 10);
    let n: i64 = redis::cmd("DEL")
        .arg(&keys[..20])
        .arg("missing")
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 20);
    let n: i64 = redis::cmd("UNLINK")
        .arg(&keys[20..])
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 30);
    let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(n, 0);
}

/// A pipeline's replies go to the client as they come, in order: replies ready while others
/// are on their way are held for a turn or two of the proxy's event loop at most, never until
/// the rest are in. Here a SET's reply is out while a script on another shard still runs.
#[test]
fn a_pipelined_reply_is_not_held_behind_a_slow_one_on_another_shard() {
    let c = Cluster::start("");
    let on = |node: usize, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| c.holder_after_set(k) == node)
            .unwrap()
    };
    let (fast, slow) = (on(0, "hold:fast:"), on(1, "hold:slow:"));
    // Keeps its node busy for 1.2 s (the backend timeout is 2 s).
    let script = b"local function now() local t = redis.call('TIME') \
        return t[1] * 1000000 + t[2] end \
        local s = now() while now() - s < 1200000 do end return 1";
    let mut raw = Raw::connect(c.proxy.port());
    let mut pipeline = common::encode(&[b"SET", fast.as_bytes(), b"v"]);
    pipeline.extend(common::encode(&[b"EVAL", script, b"1", slow.as_bytes()]));
    let sent = Instant::now();
    raw.send(&pipeline);
    assert_eq!(raw.reply(), b"+OK\r\n");
    let first = sent.elapsed();
    assert_eq!(raw.reply(), b":1\r\n");
    let second = sent.elapsed();
    assert!(
        second >= Duration::from_millis(1200) && first < Duration::from_millis(600),
        "the SET's reply came after {first:?}, the script's after {second:?}"
    );
}

/// A split command's parts and a plain command after it take two ways to a node's connection
/// (its queue, and the write side the session adds to itself, `backend::conn::write_side`):
/// the second must not overtake the first, or a GET pipelined after an MSET reads the value
/// from before it.
#[test]
fn a_pipelined_read_sees_the_split_write_before_it() {
    let c = Cluster::start("");
    let mut conn = c.proxy.conn();
    for round in 0..4 {
        let mut pipe = redis::pipe();
        for i in 0..500 {
            let (a, b) = (format!("po:a:{i}"), format!("po:b:{i}"));
            let v = round * 1000 + i;
            pipe.cmd("MSET").arg(&a).arg(v).arg(&b).arg(v);
            pipe.cmd("GET").arg(&a).cmd("GET").arg(&b);
        }
        let replies: Vec<Value> = pipe.query(&mut conn).unwrap();
        for (i, r) in replies.chunks(3).enumerate() {
            let v = (round * 1000 + i).to_string().into_bytes();
            let want = [
                Value::Okay,
                Value::BulkString(v.clone()),
                Value::BulkString(v),
            ];
            assert_eq!(r, &want[..], "round {round}, MSET {i} then GET both keys");
        }
    }
}

#[test]
fn keys_that_must_live_together_need_one_shard() {
    let c = Cluster::start("");
    let mut conn = c.proxy.conn();
    // Find two keys on different shards (by where the proxy put them).
    let _: () = conn.set("a0", 1).unwrap();
    let home = c.holder("a0")[0];
    let other = (1..)
        .map(|i| format!("a{i}"))
        .find(|k| {
            let _: () = conn.set(k, 1).unwrap();
            c.holder(k)[0] != home
        })
        .unwrap();
    for cmd in [
        vec!["RENAME", "a0", &other],
        vec!["SMOVE", "a0", &other, "m"],
        vec!["SINTERSTORE", "a0", &other],
        vec!["ZUNIONSTORE", "d", "2", "a0", &other],
        vec!["LMOVE", "a0", &other, "LEFT", "LEFT"],
        vec!["BITOP", "AND", "a0", "a0", &other],
        vec!["PFMERGE", "a0", &other],
        vec!["COPY", "a0", &other],
        vec!["MSETNX", "a0", "1", &other, "2"],
    ] {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query::<Value>(&mut conn)
            .unwrap_err();
        assert_eq!(err.code(), Some("CROSSSLOT"), "{cmd:?}: {err}");
    }
    // With a hash tag they share a shard and run for real.
    let _: () = conn.set("{user:1}:name", "ann").unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("{user:1}:name")
        .arg("{user:1}:alias")
        .query(&mut conn)
        .unwrap();
    let v: String = conn.get("{user:1}:alias").unwrap();
    assert_eq!(v, "ann");
    let _: () = conn.sadd("{t}a", &["x", "y"]).unwrap();
    let _: () = conn.sadd("{t}b", &["y", "z"]).unwrap();
    let n: i64 = redis::cmd("SINTERSTORE")
        .arg("{t}c")
        .arg("{t}a")
        .arg("{t}b")
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 1);
    // The connection is still usable after the refusals.
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn proxy_answers_connection_commands() {
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(raw.call(&[b"PING", b"hi"]), b"$2\r\nhi\r\n");
    assert_eq!(raw.call(&[b"ECHO", b"x y"]), b"$3\r\nx y\r\n");
    assert_eq!(raw.call(&[b"SELECT", b"0"]), b"+OK\r\n");
    assert!(raw
        .call(&[b"SELECT", b"1"])
        .starts_with(b"-ERR SELECT is not allowed"));
    assert_eq!(raw.call(&[b"CLIENT", b"SETNAME", b"me"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"CLIENT", b"GETNAME"]), b"$2\r\nme\r\n");
    assert!(raw.call(&[b"CLIENT", b"ID"]).starts_with(b":"));
    assert_eq!(
        raw.call(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"]),
        b"+OK\r\n"
    );
    assert_eq!(
        raw.call(&[b"CLIENT", b"SETINFO", b"LIB-VER", b"5.0.0"]),
        b"+OK\r\n"
    );
    assert_eq!(
        raw.call(&[b"CLIENT", b"SETINFO", b"LIB-COLOR", b"red"]),
        b"-ERR Unrecognized option 'LIB-COLOR'\r\n"
    );
    assert_eq!(
        raw.call(&[b"CLIENT", b"SETINFO", b"lib-name", b"a b"]),
        b"-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        raw.call(&[b"CONFIG", b"GET", b"save"]),
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    assert_eq!(
        raw.call(&[b"CONFIG", b"GET", b"appendonly"]),
        b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
    assert!(raw
        .call(&[b"AUTH", b"x"])
        .starts_with(b"-ERR AUTH <password> called without"));
    // COMMAND subcommands are answered by a real Redis: exact counts and docs.
    let count = raw.call(&[b"COMMAND", b"COUNT"]);
    let direct = Raw::connect(c.nodes[0].port()).call(&[b"COMMAND", b"COUNT"]);
    assert_eq!(count, direct);
    assert!(raw
        .call(&[b"COMMAND", b"DOCS", b"get"])
        .starts_with(b"*2\r\n$3\r\nget\r\n"));
    // Unsupported commands: a clear error naming them, and the connection stays usable.
    let unsupported: &[(&[&[u8]], &str)] = &[
        (&[b"FLUSHALL"], "flushall"),
        (&[b"SCRIPT", b"DEBUG", b"YES"], "script|debug"),
        (&[b"CLUSTER", b"INFO"], "cluster|info"),
        (&[b"MOVE", b"k", b"1"], "move"),
    ];
    for (cmd, name) in unsupported {
        let text = String::from_utf8_lossy(&raw.call(cmd)).to_string();
        assert!(
            text.starts_with(&format!("-ERR shardis does not support '{name}'")),
            "{text}"
        );
    }
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(raw.call(&[b"QUIT"]), b"+OK\r\n");
    assert!(raw.is_closed());
}

#[test]
fn info_and_dbsize_sum_over_shards() {
    let c = Cluster::start("");
    let mut conn = c.proxy.conn();
    for i in 0..100 {
        let _: () = conn.set(format!("i:{i}"), i).unwrap();
    }
    let _: () = conn.set_ex("ttl", 1, 100).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(n, 101);
    let info: String = redis::cmd("INFO").query(&mut conn).unwrap();
    assert!(info.contains("db0:keys=101,expires=1,"), "{info}");
    assert!(info.contains("# Shards\r\nshards:3\r\n"), "{info}");
    assert!(info.contains("state=up"));
    let ks: String = redis::cmd("INFO").arg("keyspace").query(&mut conn).unwrap();
    assert!(ks.starts_with("# Keyspace\r\ndb0:keys=101,"), "{ks}");
    assert!(!ks.contains("# Server"));
}

#[test]
fn resp3_replies_match_redis_byte_for_byte() {
    let c = Cluster::start("");
    let single = Redis::start();
    let setup: &[&[&[u8]]] = &[
        &[b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"],
        &[b"SADD", b"s", b"m"],
        &[b"ZADD", b"z", b"1.5", b"m"],
        &[b"SET", b"str", b"x"],
    ];
    let probes: &[&[&[u8]]] = &[
        &[b"HGETALL", b"h"],
        &[b"SMEMBERS", b"s"],
        &[b"ZSCORE", b"z", b"m"],
        &[b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"],
        &[b"GET", b"missing"],
        &[b"GET", b"str"],
        &[b"HGET", b"h", b"nope"],
        &[b"MGET", b"str", b"missing", b"h"],
        &[b"INCR", b"str"],
        &[b"ECHO", b"e"],
        &[b"PING"],
        &[b"TYPE", b"z"],
    ];
    for proto in [&b"2"[..], b"3"] {
        let mut via = Raw::connect(c.proxy.port());
        let mut direct = Raw::connect(single.port());
        let h_via = via.call(&[b"HELLO", proto]);
        let h_direct = direct.call(&[b"HELLO", proto]);
        assert_eq!(h_via[0], h_direct[0], "HELLO reply type");
        for cmd in setup {
            assert_eq!(via.call(cmd), direct.call(cmd));
        }
        for cmd in probes {
            let (a, b) = (via.call(cmd), direct.call(cmd));
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "RESP{} {:?}",
                String::from_utf8_lossy(proto),
                cmd.iter()
                    .map(|a| String::from_utf8_lossy(a))
                    .collect::<Vec<_>>()
            );
        }
        via.call(&[b"DEL", b"h", b"s", b"z", b"str"]);
        direct.call(&[b"DEL", b"h", b"s", b"z", b"str"]);
    }
}

#[test]
fn key_positions_agree_with_redis_command_getkeys() {
    let c = Cluster::start("");
    let mut direct = c.nodes[0].conn();
    let lines = [
        "GET k",
        "SET k v EX 10",
        "MSET a 1 b 2 c 3",
        "ZUNIONSTORE d 3 a b c WEIGHTS 1 2 3",
        "ZINTER 2 a b WITHSCORES",
        "SINTERCARD 2 a b LIMIT 3",
        "LMPOP 2 a b LEFT COUNT 2",
        "XREAD COUNT 1 STREAMS s1 s2 0 0",
        "XREADGROUP GROUP g c STREAMS s1 s2 > >",
        "GEORADIUS g 0 0 10 km STORE d",
        "GEORADIUSBYMEMBER g m 10 km STOREDIST d",
        "BITOP OR d a b c",
        "LMOVE a b LEFT RIGHT",
        "BLMOVE a b LEFT RIGHT 0",
        "SORT s BY nosort STORE d",
        "OBJECT ENCODING k",
        "MEMORY USAGE k",
        "XINFO STREAM s",
        "XGROUP CREATE s g $",
        "EVAL return 2 a b c",
        "PFCOUNT a b c",
        "GETEX k PERSIST",
        "COPY a b REPLACE",
        "MIGRATE h 1 k 0 5",
    ];
    for line in lines {
        let args: Vec<bytes::Bytes> = line
            .split(' ')
            .map(|a| bytes::Bytes::from(a.to_string()))
            .collect();
        let mut spec = shardis::command::lookup(&args[0]).unwrap();
        if spec.has(shardis::command::spec::flags::CONTAINER) {
            spec = shardis::command::lookup_sub(spec, &args[1]).unwrap();
        }
        let ours: Vec<String> = shardis::command::key_positions(spec, &args)
            .unwrap()
            .into_iter()
            .map(|i| line.split(' ').nth(i).unwrap().to_string())
            .collect();
        let theirs: Vec<String> = redis::cmd("COMMAND")
            .arg("GETKEYS")
            .arg(line.split(' ').collect::<Vec<_>>())
            .query(&mut direct)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(ours, theirs, "{line}");
    }
}

#[test]
fn password_protects_the_proxy() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "password = \"s3cret\"");
    let mut raw = Raw::connect(proxy.port());
    assert_eq!(
        raw.call(&[b"GET", b"k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw.call(&[b"AUTH", b"wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(raw.call(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"GET", b"k"]), b"$-1\r\n");
    // HELLO with AUTH and SETNAME, as clients send it.
    let mut raw = Raw::connect(proxy.port());
    let hello = raw.call(&[
        b"HELLO", b"3", b"AUTH", b"default", b"s3cret", b"SETNAME", b"app",
    ]);
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(raw.call(&[b"CLIENT", b"GETNAME"]), b"$3\r\napp\r\n");
    assert_eq!(raw.call(&[b"GET", b"k"]), b"_\r\n");
    let mut raw = Raw::connect(proxy.port());
    assert!(raw
        .call(&[b"HELLO", b"3", b"AUTH", b"default", b"nope"])
        .starts_with(b"-WRONGPASS"));
    assert!(raw.call(&[b"HELLO", b"4"]).starts_with(b"-NOPROTO"));
}
