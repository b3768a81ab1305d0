//! Big requests through the proxy: a write whose value is still arriving is passed on to its
//! node as it comes, on a connection of its own, and the client's other commands keep their
//! order around it. Against real redis-server processes on loopback.

mod common;

use std::time::Duration;

use common::{
    assert_near_idle, encode, info_field, node_has_part, node_qbuf, rss_mib, wait_for, Raw, Redis,
    Shardis,
};

/// The value uploaded, and how much of it the client sends before it stops for a while.
const VALUE: usize = 48 << 20;
const FIRST: usize = 32 << 20;

/// `*3 $3 SET $<key> key $<len>`: a SET up to where its value starts.
fn set_head(key: &str, len: usize) -> Vec<u8> {
    head("SET", key, len)
}

/// `command key value` up to where its value of `len` bytes starts.
fn head(command: &str, key: &str, len: usize) -> Vec<u8> {
    let (c, k) = (command.len(), key.len());
    format!("*3\r\n${c}\r\n{command}\r\n${k}\r\n{key}\r\n${len}\r\n").into_bytes()
}

fn strlen(node: &Redis, key: &str) -> Vec<u8> {
    Raw::connect(node.port()).call(&[b"STRLEN", key.as_bytes()])
}

#[test]
fn a_big_request_reaches_the_node_while_it_is_still_arriving() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let pid = proxy.proc.pid();
    let mut client = Raw::connect(proxy.port());
    assert_eq!(client.call(&[b"PING"]), b"+PONG\r\n");
    let idle = rss_mib(pid);
    client.send(&set_head("big", VALUE));
    client.send(&vec![b'y'; FIRST]);
    // Less what the socket buffers on the way hold, the node has what the client sent. A proxy
    // that gathers the request first sends it nothing.
    let held = node_has_part(&node, 16 << 20);
    // What the node has is not held by the proxy any more.
    let when = format!("with {} MiB of the value passed on", held >> 20);
    let now = assert_near_idle(pid, idle, &when);
    // A client slower than the time an idle upload connection is kept (1 s) is waited for.
    std::thread::sleep(Duration::from_millis(1500));
    let mut rest = vec![b'y'; VALUE - FIRST];
    rest.extend_from_slice(b"\r\n");
    client.send(&rest);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(client.reply(), b"+OK\r\n");
    assert_eq!(strlen(&node, "big"), format!(":{VALUE}\r\n").as_bytes());
    let mut direct = Raw::connect(node.port());
    let last = (VALUE - 1).to_string();
    direct.send(&encode(&[b"GETRANGE", b"big", b"0", last.as_bytes()]));
    let header = format!("${VALUE}\r\n");
    let value = direct.read_exact(header.len() + VALUE + 2);
    assert_eq!(&value[..header.len()], header.as_bytes());
    assert!(
        value[header.len()..header.len() + VALUE]
            .iter()
            .all(|&b| b == b'y'),
        "the value came out changed"
    );
    // The connection goes on as before.
    assert_eq!(
        client.call(&[b"STRLEN", b"big"]),
        format!(":{VALUE}\r\n").as_bytes()
    );
    eprintln!(
        "48 MiB SET: the node held {} MiB before the client sent the rest; shardis resident {idle} MiB idle, {now} MiB then",
        held >> 20
    );
}

#[test]
fn a_client_that_leaves_in_the_middle_of_a_big_request_runs_nothing() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let pid = proxy.proc.pid();
    let mut probe = Raw::connect(proxy.port());
    assert_eq!(probe.call(&[b"SET", b"big", b"before"]), b"+OK\r\n");
    let idle = rss_mib(pid);
    let mut client = Raw::connect(proxy.port());
    client.send(&set_head("big", VALUE));
    client.send(&vec![b'y'; FIRST]);
    node_has_part(&node, 16 << 20);
    drop(client);
    // The node's connection closes with the half command, which the node drops unrun.
    wait_for(
        "the node to drop the half command",
        Duration::from_secs(10),
        || match node_qbuf(&node) {
            q if q < 1 << 20 => Ok(()),
            q => Err(format!("qbuf {q}")),
        },
    );
    assert_eq!(probe.call(&[b"GET", b"big"]), b"$6\r\nbefore\r\n");
    assert_near_idle(pid, idle, "after the client left");
}

#[test]
fn commands_around_a_big_request_run_in_the_order_sent() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    const LEN: usize = 8 << 20;
    for hello in [&b"2"[..], b"3"] {
        let mut client = Raw::connect(proxy.port());
        let hi = client.call(&[b"HELLO", hello]);
        assert!(!hi.starts_with(b"-"), "{}", String::from_utf8_lossy(&hi));
        // Two commands, and a SET whose value comes in two parts: it is passed on once the
        // first two are answered, while the rest of its value is still to come.
        let mut first = [encode(&[b"SET", b"k", b"1"]), encode(&[b"INCR", b"k"])].concat();
        first.extend_from_slice(&set_head("big", LEN));
        first.extend_from_slice(&vec![b'z'; LEN / 2]);
        client.send(&first);
        node_has_part(&node, LEN / 4);
        // The rest, with commands right behind it in the same write. Sent on other
        // connections at once, APPEND could run before the SET, which would then undo it.
        let mut rest = vec![b'z'; LEN - LEN / 2];
        rest.extend_from_slice(b"\r\n");
        rest.extend_from_slice(&encode(&[b"APPEND", b"big", b"tail"]));
        rest.extend_from_slice(&encode(&[b"INCR", b"k"]));
        rest.extend_from_slice(&encode(&[b"STRLEN", b"big"]));
        client.send(&rest);
        let replies: Vec<String> = (0..6)
            .map(|_| String::from_utf8(client.reply()).unwrap())
            .collect();
        let after = format!(":{}\r\n", LEN + 4);
        let expected = ["+OK\r\n", ":2\r\n", "+OK\r\n", &after, ":3\r\n", &after];
        assert_eq!(replies, expected, "RESP{}", String::from_utf8_lossy(hello));
        assert_eq!(client.call(&[b"DEL", b"big", b"k"]), b":2\r\n");
    }
}

#[test]
fn a_big_request_is_checked_like_any_other() {
    let node = Redis::start();
    let users = "[[users]]\nname = \"app\"\npassword = \"app-pw\"\nrole = \"read-write\"\nkey_prefixes = [\"app:\"]\n";
    let proxy = Shardis::in_front_of(&[&node], users);
    let _log = proxy.log_on_panic();
    const LEN: usize = 4 << 20;
    let mut client = Raw::connect(proxy.port());
    assert_eq!(client.call(&[b"AUTH", b"app", b"app-pw"]), b"+OK\r\n");
    // Outside the user's prefix: refused, and nothing reaches the node.
    for (key, refused) in [("other:big", true), ("app:big", false)] {
        client.send(&set_head(key, LEN));
        client.send(&vec![b'v'; LEN / 2]);
        let qbuf = if refused {
            std::thread::sleep(Duration::from_millis(300));
            node_qbuf(&node)
        } else {
            node_has_part(&node, LEN / 4)
        };
        let mut rest = vec![b'v'; LEN - LEN / 2];
        rest.extend_from_slice(b"\r\n");
        client.send(&rest);
        let reply = client.reply();
        if refused {
            assert!(
                qbuf < LEN / 4,
                "the node got {qbuf} bytes of a refused request"
            );
            assert!(
                reply.starts_with(b"-NOPERM"),
                "{}",
                String::from_utf8_lossy(&reply)
            );
            assert_eq!(strlen(&node, key), b":0\r\n");
        } else {
            assert_eq!(reply, b"+OK\r\n");
            assert_eq!(strlen(&node, key), format!(":{LEN}\r\n").as_bytes());
        }
    }
    // A value whose CRLF is wrong: the protocol error, then the connection closes, and the
    // node runs nothing. As for a small request with a bad CRLF, the error is the input's,
    // not a SET's: SET's counts do not move.
    let mut stats = Raw::connect(proxy.port());
    assert_eq!(stats.call(&[b"AUTH", b"app", b"app-pw"]), b"+OK\r\n");
    let set_stats = |stats: &mut Raw| {
        let info = String::from_utf8_lossy(&stats.call(&[b"INFO", b"commandstats"])).into_owned();
        info_field(&info, "cmdstat_set").unwrap_or_else(|| panic!("no cmdstat_set in {info}"))
    };
    let before = set_stats(&mut stats);
    client.send(&set_head("app:bad", LEN));
    client.send(&vec![b'v'; LEN / 2]);
    node_has_part(&node, LEN / 4);
    client.send(&[vec![b'v'; LEN - LEN / 2], b"XX".to_vec()].concat());
    let reply = client.reply();
    assert!(
        reply.starts_with(b"-ERR Protocol error"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(client.is_closed(), "the connection stayed open");
    assert_eq!(strlen(&node, "app:bad"), b":0\r\n");
    assert_eq!(
        set_stats(&mut stats),
        before,
        "the bad input was counted as a SET"
    );
}

#[test]
fn a_node_that_stops_taking_a_big_request_fails_it_in_time() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "[backend]\ntimeout = \"1s\"\n");
    let _log = proxy.log_on_panic();
    let mut client = Raw::connect(proxy.port());
    assert_eq!(client.call(&[b"PING"]), b"+PONG\r\n");
    client.send(&set_head("big", VALUE));
    client.send(&vec![b'y'; 4 << 20]);
    node_has_part(&node, 1 << 20);
    let paused = node.proc.pause();
    // The client sends on while it can: the proxy stops reading it once the node's socket and
    // its own short queue are full, and then gives up on the node.
    let sender = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stream.write_all(&vec![b'y'; VALUE - (4 << 20)]);
        })
    };
    let reply = client.reply();
    assert!(
        reply.starts_with(b"-ERR")
            && String::from_utf8_lossy(&reply)
                .contains("timed out: took none of the request's value"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // The rest of its value would be read as commands: the connection closes.
    assert!(client.is_closed(), "the connection stayed open");
    drop(paused);
    let _ = sender.join();
    // Once the node is back, it has run nothing of it.
    let mut probe = Raw::connect(proxy.port());
    wait_for("the node back", Duration::from_secs(10), || {
        match probe.call(&[b"STRLEN", b"big"]) {
            r if r == b":0\r\n" => Ok(()),
            r => Err(String::from_utf8_lossy(&r).into_owned()),
        }
    });
}

/// An RPUSH of a value of `len` bytes sent in two parts, the second once the node holds part
/// of the first, so that it is passed on as it arrives; its reply.
fn push_in_two(client: &mut Raw, node: &Redis, key: &str, len: usize) -> Vec<u8> {
    client.send(&head("RPUSH", key, len));
    client.send(&vec![b'u'; len / 2]);
    node_has_part(node, len / 4);
    client.send(&[vec![b'u'; len - len / 2], b"\r\n".to_vec()].concat());
    client.reply()
}

/// The node's clients whose last command was an RPUSH, by id: the upload connections, in a
/// test that sends no other RPUSH.
fn pushers(node: &Redis) -> Vec<u64> {
    let mut c = Raw::connect(node.port());
    let list = String::from_utf8(c.call(&[b"CLIENT", b"LIST"])).unwrap();
    list.lines()
        .filter(|l| l.contains(" cmd=rpush "))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn uploads_in_a_row_share_one_connection() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    const LEN: usize = 4 << 20;
    let mut client = Raw::connect(proxy.port());
    assert_eq!(push_in_two(&mut client, &node, "a", LEN), b":1\r\n");
    let first = pushers(&node);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(push_in_two(&mut client, &node, "b", LEN), b":1\r\n");
    assert_eq!(
        pushers(&node),
        first,
        "the second upload opened a connection"
    );
    // Another command in between: the kept connection is closed, and the next upload opens
    // one again.
    assert_eq!(client.call(&[b"GET", b"x"]), b"$-1\r\n");
    assert_eq!(push_in_two(&mut client, &node, "c", LEN), b":1\r\n");
    wait_for(
        "one upload connection, a new one",
        Duration::from_secs(10),
        || match pushers(&node) {
            ids if ids.len() == 1 && ids != first => Ok(()),
            ids => Err(format!("{ids:?}, the first {first:?}")),
        },
    );
    // Left with nothing to do, it closes within a few seconds, and gives its place under
    // max_dedicated back.
    wait_for(
        "the kept connection to close",
        Duration::from_secs(5),
        || match pushers(&node) {
            ids if ids.is_empty() => Ok(()),
            ids => Err(format!("{ids:?}")),
        },
    );
    let info = String::from_utf8(client.call(&[b"INFO", b"shards"])).unwrap();
    assert!(info.contains("dedicated=0"), "{info}");
}
