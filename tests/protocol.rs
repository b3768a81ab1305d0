//! Raw-byte protocol behaviour: pipelining order, partial input, limits, protocol errors.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{encode, Cluster, Raw};

#[test]
fn ten_thousand_pipelined_commands_across_shards_come_back_in_order() {
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    let n = 10_000;
    let mut wire = Vec::new();
    for i in 0..n {
        wire.extend(encode(&[
            b"SET",
            format!("p:{i}").as_bytes(),
            format!("{i}").as_bytes(),
        ]));
        wire.extend(encode(&[b"GET", format!("p:{i}").as_bytes()]));
        if i % 100 == 0 {
            // A local reply and a split one in the middle of the stream.
            wire.extend(encode(&[b"PING"]));
            wire.extend(encode(&[
                b"MGET",
                format!("p:{i}").as_bytes(),
                b"p:0",
                b"nope",
            ]));
        }
    }
    // Everything is written before anything is read.
    raw.send(&wire);
    for i in 0..n {
        assert_eq!(raw.reply(), b"+OK\r\n", "SET {i}");
        let v = format!("{i}");
        assert_eq!(
            raw.reply(),
            format!("${}\r\n{v}\r\n", v.len()).as_bytes(),
            "GET {i}"
        );
        if i % 100 == 0 {
            assert_eq!(raw.reply(), b"+PONG\r\n");
            let want = format!("*3\r\n${}\r\n{v}\r\n$1\r\n0\r\n$-1\r\n", v.len());
            assert_eq!(String::from_utf8(raw.reply()).unwrap(), want, "MGET {i}");
        }
    }
    // The keys really went to all three shards.
    for node in &c.nodes {
        let n: i64 = redis::cmd("DBSIZE").query(&mut node.conn()).unwrap();
        assert!(n > 2_000, "a node holds only {n} keys");
    }
}

#[test]
fn input_split_into_single_bytes_and_inline_commands_work() {
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    let mut wire = encode(&[b"SET", b"k", &vec![b'x'; 100_000]]);
    wire.extend_from_slice(b"PING\r\nEXISTS k\r\nget \"k2\"\r\n");
    for chunk in wire.chunks(1) {
        raw.send(chunk);
    }
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"+PONG\r\n");
    assert_eq!(raw.reply(), b":1\r\n");
    assert_eq!(raw.reply(), b"$-1\r\n");
    let got = raw.call(&[b"STRLEN", b"k"]);
    assert_eq!(got, b":100000\r\n");
}

/// Each bad input gets Redis's protocol error and only that client is closed.
#[test]
fn protocol_errors_close_only_the_offending_client() {
    let c = Cluster::start("");
    let mut bystander = Raw::connect(c.proxy.port());
    assert_eq!(bystander.call(&[b"SET", b"b", b"1"]), b"+OK\r\n");
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$3\r\nGETXX\r\n",
            "-ERR Protocol error: expected CRLF after a bulk string\r\n",
        ),
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-3\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$600000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"SET k \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (wire, want) in cases {
        let mut raw = Raw::connect(c.proxy.port());
        // A good command first: its reply still arrives, before the error.
        let mut bytes = encode(&[b"PING"]);
        bytes.extend_from_slice(wire);
        raw.send(&bytes);
        assert_eq!(raw.reply(), b"+PONG\r\n");
        assert_eq!(String::from_utf8(raw.reply()).unwrap(), *want);
        assert!(raw.is_closed(), "closed after {want}");
        assert_eq!(bystander.call(&[b"GET", b"b"]), b"$1\r\n1\r\n");
    }
}

#[test]
fn oversized_inline_and_nested_input_are_refused_without_harm() {
    let c = Cluster::start("");
    // An inline line longer than 64 KiB.
    let mut raw = Raw::connect(c.proxy.port());
    raw.send(&vec![b'a'; 70 * 1024]);
    assert_eq!(
        raw.reply(),
        b"-ERR Protocol error: too big inline request\r\n"
    );
    assert!(raw.is_closed());
    // Nested arrays a million deep: a request is an array of bulk strings, nothing deeper.
    let mut raw = Raw::connect(c.proxy.port());
    raw.send("*1\r\n".repeat(1_000_000).as_bytes());
    assert_eq!(
        raw.reply(),
        b"-ERR Protocol error: expected '$', got '*'\r\n"
    );
    assert!(raw.is_closed());
    // A client that announces 500 MB and sends nothing just waits; others are served.
    let mut lazy = Raw::connect(c.proxy.port());
    lazy.send(b"*2\r\n$3\r\nGET\r\n$500000000\r\n");
    let mut other = Raw::connect(c.proxy.port());
    assert_eq!(other.call(&[b"PING"]), b"+PONG\r\n");
    lazy.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        lazy.stream.read(&mut buf).is_err(),
        "no reply to an incomplete request"
    );
}

#[test]
fn unknown_commands_and_arity_errors_keep_the_connection() {
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(
        raw.call(&[b"FOO", b"bar"]),
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n"
    );
    assert_eq!(
        raw.call(&[b"GET"]),
        b"-ERR wrong number of arguments for 'get' command\r\n"
    );
    // Redis's own error for a malformed numkeys comes from a shard.
    let direct = Raw::connect(c.nodes[0].port()).call(&[b"ZUNIONSTORE", b"d", b"x", b"a"]);
    assert_eq!(raw.call(&[b"ZUNIONSTORE", b"d", b"x", b"a"]), direct);
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
}

/// A pipeline that switches protocol midway keeps its order: the GET after HELLO 3 runs on a
/// RESP3 backend connection, yet sees the SET sent before it on a RESP2 one.
#[test]
fn protocol_switch_inside_a_pipeline_keeps_order() {
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    let mut wire = Vec::new();
    for i in 0..200 {
        let key = format!("sw:{i}");
        wire.extend(encode(&[b"SET", key.as_bytes(), b"v1"]));
        wire.extend(encode(&[b"HELLO", if i % 2 == 0 { b"3" } else { b"2" }]));
        wire.extend(encode(&[b"GET", key.as_bytes()]));
        wire.extend(encode(&[b"SET", key.as_bytes(), b"v2"]));
    }
    raw.send(&wire);
    for i in 0..200 {
        assert_eq!(raw.reply(), b"+OK\r\n", "SET {i}");
        let hello = raw.reply();
        assert_eq!(hello[0], if i % 2 == 0 { b'%' } else { b'*' });
        assert_eq!(raw.reply(), b"$2\r\nv1\r\n", "GET {i}");
        assert_eq!(raw.reply(), b"+OK\r\n");
    }
}

#[test]
fn clients_past_the_limit_get_the_redis_error() {
    let c = Cluster::start("[limits]\nmax_clients = 3");
    // The harness's readiness probes may still hold places for a moment: wait until this is
    // the only client.
    let mut first = Raw::connect(c.proxy.port());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8(first.call(&[b"INFO", b"clients"]))
        .unwrap()
        .contains("connected_clients:1\r\n")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "probe connections never went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held = vec![
        first,
        Raw::connect(c.proxy.port()),
        Raw::connect(c.proxy.port()),
    ];
    for raw in &mut held {
        assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    }
    let mut extra = Raw::connect(c.proxy.port());
    assert_eq!(extra.reply(), b"-ERR max number of clients reached\r\n");
    assert!(extra.is_closed());
    // A place freed is a place available again.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Raw::connect(c.proxy.port());
        again.send(&encode(&[b"PING"]));
        let reply = again.reply();
        if reply == b"+PONG\r\n" {
            break;
        }
        assert_eq!(reply, b"-ERR max number of clients reached\r\n");
        assert!(
            std::time::Instant::now() < deadline,
            "the freed place never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
