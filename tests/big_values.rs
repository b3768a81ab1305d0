//! Big values through the proxy: a client receiving a huge reply does not hold up the replies
//! of other clients that use the same node.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use common::{Raw, Redis, Shardis};

/// A TCP relay in front of a node that, once armed, holds back the node's bytes on the first
/// connection that passes `after` bytes from the node, until released. The proxy then sits in
/// the middle of one big reply for as long as the test likes.
struct Relay {
    port: u16,
    armed: Arc<AtomicBool>,
    released: Arc<(Mutex<bool>, Condvar)>,
    holding: mpsc::Receiver<()>,
}

impl Relay {
    fn start(node: &str, after: usize) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let (tell, holding) = mpsc::channel();
        let node = node.to_string();
        let (a, r) = (armed.clone(), released.clone());
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
                let (armed, released, tell) = (a.clone(), r.clone(), tell.clone());
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
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Relay {
            port,
            armed,
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

#[test]
fn a_small_get_is_not_held_behind_another_clients_big_reply() {
    const VALUE: usize = 48 << 20;
    // More than the socket buffers between the relay and the proxy hold: when the relay has
    // written this much, the proxy has read tens of MiB of the reply and is in its middle.
    const AFTER: usize = 32 << 20;
    let node = Redis::start();
    let relay = Relay::start(&node.addr(), AFTER);
    // One worker, two connections to the node: clients whose ids have the same parity share
    // one. The timeout leaves the held reply time to finish.
    let proxy = Shardis::start_with(&format!(
        "workers = 1\n[backend]\nconnections = 2\ntimeout = \"60s\"\n[[shards]]\nname = \"a\"\nprimary = \"127.0.0.1:{}\"\n",
        relay.port
    ));
    let _log = proxy.log_on_panic();
    let mut setup = Raw::connect(proxy.port());
    let value = vec![b'x'; VALUE];
    assert_eq!(setup.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    assert_eq!(setup.call(&[b"SET", b"small", b"v"]), b"+OK\r\n");
    drop(value);

    relay.armed.store(true, Ordering::SeqCst);
    let mut big = Raw::connect(proxy.port());
    let big_id = big.client_id();
    big.send(&common::encode(&[b"GET", b"big"]));
    relay
        .holding
        .recv_timeout(Duration::from_secs(60))
        .expect("the relay never saw the big reply");

    // A client that would share the big reply's connection.
    let mut small = loop {
        let mut raw = Raw::connect(proxy.port());
        if raw.client_id() % 2 == big_id % 2 {
            break raw;
        }
    };
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
