//! The same fixed list of commands (tests/data/differential.redis, over 600 lines covering every
//! data type, transactions, scripts and functions) sent to one plain redis-server and through
//! shardis to three shards: every reply must be the same bytes, in RESP2 and in RESP3.

mod common;

use bytes::BytesMut;
use common::{Cluster, Raw, Redis};
use shardis::resp::{Limits, RequestParser};

/// The commands of the list, each as a RESP array, parsed with Redis's inline quoting rules.
fn commands() -> Vec<(usize, String, Vec<u8>)> {
    let text = include_str!("data/differential.redis");
    let mut parser = RequestParser::new(Limits::default());
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
        let req = parser
            .next(&mut buf)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1))
            .unwrap_or_else(|| panic!("line {}: incomplete", i + 1));
        let args: Vec<&[u8]> = req.args().iter().map(|a| &a[..]).collect();
        out.push((i + 1, line.to_string(), common::encode(&args)));
    }
    out
}

fn flush(nodes: &[&Redis]) {
    for node in nodes {
        let _: () = redis::cmd("FLUSHALL").query(&mut node.conn()).unwrap();
    }
}

#[test]
fn replies_match_redis_byte_for_byte_in_resp2_and_resp3() {
    let commands = commands();
    assert!(commands.len() >= 300, "{} commands", commands.len());
    let reference = Redis::start();
    let cluster = Cluster::start("");
    let mut mismatches = Vec::new();
    for proto in [2, 3] {
        let mut all: Vec<&Redis> = cluster.nodes.iter().collect();
        all.push(&reference);
        flush(&all);
        let mut direct = Raw::connect(reference.port());
        let mut proxied = Raw::connect(cluster.proxy.port());
        if proto == 3 {
            direct.call(&[b"HELLO", b"3"]);
            proxied.call(&[b"HELLO", b"3"]);
        }
        for (line, text, request) in &commands {
            direct.send(request);
            proxied.send(request);
            let (want, got) = (direct.reply(), proxied.reply());
            if want != got {
                mismatches.push(format!(
                    "RESP{proto} line {line}: {text}\n  redis:   {:?}\n  shardis: {:?}",
                    String::from_utf8_lossy(&want),
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} replies differ:\n{}",
        mismatches.len(),
        commands.len() * 2,
        mismatches.join("\n")
    );
    // The commands really were spread: every shard holds keys.
    for node in &cluster.nodes {
        let n: i64 = redis::cmd("DBSIZE").query(&mut node.conn()).unwrap();
        assert!(n > 10, "a shard holds only {n} keys");
    }
}
