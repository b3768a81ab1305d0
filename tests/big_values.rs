//! Big values through the proxy: a huge reply is passed on as it arrives, and a client
//! receiving one does not hold up the replies of other clients that use the same node.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use common::{assert_near_idle, rss_mib, Raw, Redis, Shardis};

/// A TCP relay in front of a node that, once armed, holds back the node's bytes on the first
/// connection that passes `after` bytes from the node, until released. The proxy then sits in
/// the middle of one big reply for as long as the test likes. Released with `cut` set, it
/// closes that connection instead of passing the rest on.
struct Relay {
    port: u16,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    released: Arc<(Mutex<bool>, Condvar)>,
    holding: mpsc::Receiver<()>,
}

impl Relay {
    fn start(node: &str, after: usize) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let (tell, holding) = mpsc::channel();
        let node = node.to_string();
        let (a, r, k) = (armed.clone(), released.clone(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&node) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (armed, released, tell, cut) = (a.clone(), r.clone(), tell.clone(), k.clone());
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut passed = 0;
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        passed += n;
                        if passed >= after && armed.swap(false, Ordering::SeqCst) {
                            let _ = tell.send(());
                            let (lock, cv) = &*released;
                            let mut done = lock.lock().unwrap();
                            while !*done {
                                done = cv.wait(done).unwrap();
                            }
                            if cut.load(Ordering::SeqCst) {
                                let _ = s_in.shutdown(std::net::Shutdown::Both);
                                let _ = c_out.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Relay {
            port,
            armed,
            cut,
            released,
            holding,
        }
    }

    fn release(&self) {
        let (lock, cv) = &*self.released;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

/// Released also when the test fails, so no relay thread is left waiting.
impl Drop for Relay {
    fn drop(&mut self) {
        self.release();
    }
}

/// The value the relay holds back, and how much of it passes first: more than the socket
/// buffers between the relay and the proxy hold, so that when the relay has written this much,
/// the proxy has read tens of MiB of the reply and is in its middle.
const VALUE: usize = 48 << 20;
const AFTER: usize = 32 << 20;

/// A proxy on one node behind a relay that holds a reply of [`VALUE`] bytes back once [`AFTER`]
/// have passed, with `big` set to that value and `small` to `v`. One worker, two connections to
/// the node (the default): a client with nothing in flight takes the first that is not in the
/// middle of a big reply. The timeout leaves the held reply time to finish.
fn held_back() -> (Redis, Relay, Shardis) {
    let node = Redis::start();
    let relay = Relay::start(&node.addr(), AFTER);
    let proxy = Shardis::start_with(&format!(
        "workers = 1\n[backend]\nconnections = 2\ntimeout = \"60s\"\n[[shards]]\nname = \"a\"\nprimary = \"127.0.0.1:{}\"\n",
        relay.port
    ));
    let mut setup = Raw::connect(proxy.port());
    assert_eq!(
        setup.call(&[b"SET", b"big", &vec![b'x'; VALUE]]),
        b"+OK\r\n"
    );
    assert_eq!(setup.call(&[b"SET", b"small", b"v"]), b"+OK\r\n");
    relay.armed.store(true, Ordering::SeqCst);
    (node, relay, proxy)
}

/// A client that has sent GET big, once the relay holds the rest of the reply back.
fn get_big_held(proxy: &Shardis, relay: &Relay) -> Raw {
    let mut big = Raw::connect(proxy.port());
    big.send(&common::encode(&[b"GET", b"big"]));
    relay
        .holding
        .recv_timeout(Duration::from_secs(60))
        .expect("the relay never saw the big reply");
    big
}

#[test]
fn a_small_get_is_not_held_behind_another_clients_big_reply() {
    let (_node, relay, proxy) = held_back();
    let _log = proxy.log_on_panic();
    let mut big = get_big_held(&proxy, &relay);

    // A client that, but for the big reply, would take its connection: the first.
    let mut small = Raw::connect(proxy.port());
    // Answered while the rest of the big reply is still held back (a wait for it would end in
    // the 10 s read timeout).
    for _ in 0..3 {
        assert_eq!(small.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
    }

    relay.release();
    let header = format!("${VALUE}\r\n");
    assert_eq!(big.read_exact(header.len()), header.as_bytes());
    big.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = big.read_exact(VALUE + 2);
    assert!(
        body[..VALUE].iter().all(|&b| b == b'x'),
        "the big value came back changed"
    );
    assert_eq!(&body[VALUE..], b"\r\n");
    // Both clients go on as before.
    assert_eq!(big.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
    assert_eq!(small.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
}

#[test]
fn a_big_reply_reaches_the_client_while_it_is_still_arriving() {
    let (_node, relay, proxy) = held_back();
    let _log = proxy.log_on_panic();
    let pid = proxy.proc.pid();
    let idle = rss_mib(pid);
    let mut big = get_big_held(&proxy, &relay);
    // 32 MiB left the node, less what the socket buffers on the way hold: at least 16 MiB of
    // the value reach the client before the rest has left the node. A proxy that gathers the
    // whole reply first sends nothing, and the read ends in its 10 s timeout.
    let header = format!("${VALUE}\r\n");
    assert_eq!(big.read_exact(header.len()), header.as_bytes());
    // Everything the proxy passes on before the rest comes: read until nothing more comes for
    // a second.
    big.stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut first = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n @ 1..) = big.stream.read(&mut buf) {
        first.extend_from_slice(&buf[..n]);
    }
    assert!(
        first.len() >= 16 << 20,
        "{} bytes of the value came before the rest left the node",
        first.len()
    );
    assert!(
        first.iter().all(|&b| b == b'x'),
        "the value came out changed"
    );
    // What the client has taken is not held by the proxy any more.
    let when = format!("after passing {} MiB on", first.len() >> 20);
    let now = assert_near_idle(pid, idle, &when);
    // The rest follows, and the connection carries on.
    relay.release();
    big.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let rest = big.read_exact(VALUE - first.len() + 2);
    assert!(
        rest[..rest.len() - 2].iter().all(|&b| b == b'x'),
        "the value came out changed"
    );
    assert_eq!(&rest[rest.len() - 2..], b"\r\n");
    assert_eq!(big.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
    eprintln!(
        "48 MiB reply: {} MiB passed on before its end left the node; shardis resident {idle} MiB idle, {now} MiB then",
        first.len() >> 20
    );
}

#[test]
fn a_big_reply_that_breaks_off_closes_the_client_connection() {
    let (_node, relay, proxy) = held_back();
    let _log = proxy.log_on_panic();
    let mut big = get_big_held(&proxy, &relay);
    // The node's connection is lost in the middle of the reply.
    relay.cut.store(true, Ordering::SeqCst);
    relay.release();
    // The client has part of a bulk string: no error can follow it, so the proxy closes the
    // connection before the value is complete, rather than answer the next request in its
    // place.
    let mut got = Vec::new();
    let closed = big.stream.read_to_end(&mut got);
    assert!(closed.is_ok(), "no end of stream: {closed:?}");
    let header = format!("${VALUE}\r\n");
    assert!(
        got.len() < VALUE && got.starts_with(header.as_bytes()),
        "{} bytes came, starting {:?}",
        got.len(),
        String::from_utf8_lossy(&got[..got.len().min(32)])
    );
    assert!(
        got[header.len()..].iter().all(|&b| b == b'x'),
        "something other than the value came"
    );
    // The proxy reconnects to the node, and other clients carry on.
    let mut other = Raw::connect(proxy.port());
    common::wait_for("the node back", Duration::from_secs(10), || {
        match other.call(&[b"GET", b"small"]) {
            reply if reply == b"$1\r\nv\r\n" => Ok(()),
            reply => Err(String::from_utf8_lossy(&reply).into_owned()),
        }
    });
}

/// Reads `n` whole replies, a read of many bytes at a time.
fn read_replies(stream: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut replies = Vec::new();
    while replies.len() < n {
        match shardis::resp::reply::frame_len(&buf).unwrap() {
            Some(len) => replies.push(buf.drain(..len).collect()),
            None => {
                let got = stream.read(&mut chunk).unwrap();
                assert!(got > 0, "closed after {} replies", replies.len());
                buf.extend_from_slice(&chunk[..got]);
            }
        }
    }
    assert!(buf.is_empty(), "more than {n} replies");
    replies
}

#[test]
fn big_replies_of_every_shape_come_out_as_the_node_sends_them_and_in_order() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let mut setup = Raw::connect(node.port());
    let elements: Vec<Vec<u8>> = (0..30_000)
        .map(|i| format!("element-{i}").into_bytes())
        .collect();
    let mut rpush: Vec<&[u8]> = vec![b"RPUSH", b"list"];
    rpush.extend(elements.iter().map(|e| &e[..]));
    assert_eq!(setup.call(&rpush), b":30000\r\n");
    let mut hset: Vec<&[u8]> = vec![b"HSET", b"hash"];
    hset.extend(elements.iter().flat_map(|e| [&e[..], &e[..]]));
    assert_eq!(setup.call(&hset), b":30000\r\n");
    assert_eq!(
        setup.call(&[b"SET", b"big", &vec![b'b'; 3 << 20]]),
        b"+OK\r\n"
    );
    assert_eq!(setup.call(&[b"SET", b"small", b"v"]), b"+OK\r\n");

    // Big replies (an array of many small elements, a map, a bulk string) between small ones,
    // pipelined, in RESP2 and then RESP3: the bytes must be the node's own, in order.
    let commands: &[&[&[u8]]] = &[
        &[b"GET", b"small"],
        &[b"LRANGE", b"list", b"0", b"-1"],
        &[b"GET", b"big"],
        &[b"HGETALL", b"hash"],
        &[b"GET", b"small"],
        &[b"GET", b"big"],
        &[b"GET", b"missing"],
    ];
    let pipeline: Vec<u8> = commands.iter().flat_map(|c| common::encode(c)).collect();
    for hello in [&b"2"[..], b"3"] {
        let mut replies = Vec::new();
        for port in [node.port(), proxy.port()] {
            let mut raw = Raw::connect(port);
            raw.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            raw.call(&[b"HELLO", hello]);
            raw.send(&pipeline);
            replies.push(read_replies(&mut raw.stream, commands.len()));
        }
        for (i, (direct, proxied)) in replies[0].iter().zip(&replies[1]).enumerate() {
            assert!(
                direct == proxied,
                "RESP{}: reply {i} differs: {} bytes from the node, {} through the proxy",
                hello[0] as char,
                direct.len(),
                proxied.len()
            );
        }
    }
}

#[test]
fn a_client_that_leaves_in_the_middle_of_a_big_reply_leaves_nothing_behind() {
    let (_node, relay, proxy) = held_back();
    let _log = proxy.log_on_panic();
    let pid = proxy.proc.pid();
    let idle = rss_mib(pid);
    let mut big = get_big_held(&proxy, &relay);
    // It reads a little of the value, and goes.
    assert_eq!(&big.read_exact(4)[..], b"$503");
    drop(big);
    relay.release();
    // Another client gets its replies, and the rest of the value, which nobody reads, is not
    // kept.
    let mut next = Raw::connect(proxy.port());
    for _ in 0..3 {
        assert_eq!(next.call(&[b"GET", b"small"]), b"$1\r\nv\r\n");
    }
    assert_near_idle(pid, idle, "after the client left");
}

#[test]
fn a_big_error_reply_is_counted_as_an_error() {
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let mut raw = Raw::connect(proxy.port());
    // A script's error of 2 MB, on the key's shard.
    let script = b"return redis.error_reply('BIG ' .. string.rep('x', 2000000))";
    raw.send(&common::encode(&[b"EVAL", script, b"1", b"k"]));
    let reply = read_replies(&mut raw.stream, 1).remove(0);
    assert!(
        reply.starts_with(b"-BIG xxx") && reply.len() > 2_000_000,
        "{:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(32)])
    );
    // Counted as what it is: a failed call, under its error code.
    let stats = common::try_info(proxy.port(), "commandstats").expect("INFO commandstats");
    let eval = common::info_field(&stats, "cmdstat_eval").expect("cmdstat_eval");
    assert!(eval.contains("failed_calls=1"), "{eval}");
    let errors = common::try_info(proxy.port(), "errorstats").expect("INFO errorstats");
    assert!(
        common::info_field(&errors, "errorstat_BIG").is_some(),
        "{errors}"
    );
}
