//! Test harness: real redis-server, nutcracker and shardis processes on free loopback ports.
//!
//! Every process is killed and reaped when its handle drops, also when a test panics, so runs
//! leave nothing behind and can repeat or run in parallel.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port that was free a moment ago. Starting a server on it is retried on a clash.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port held bound but not listening: connecting to it is refused, and no other test can
/// take it until the returned socket is dropped.
pub fn refused_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// Waits until something accepts on `port`, or the child exits (`false`).
fn wait_listening(port: u16, child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Starts `make(port)` on a free port, retrying when the port was taken meanwhile.
pub fn start_on_free_port(name: &str, mut make: impl FnMut(u16) -> Command) -> Proc {
    for _ in 0..10 {
        let port = free_port();
        let mut child = make(port)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (run scripts/install-deps.sh)"));
        if wait_listening(port, &mut child, Duration::from_secs(10)) {
            return Proc { child, port };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{name} did not start on a free port after 10 tries");
}

pub struct Redis {
    pub proc: Proc,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    /// A redis-server with extra arguments, e.g. `["--replicaof", "127.0.0.1", "7000"]`.
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = TempDir::new().unwrap();
        let path = dir.path().to_path_buf();
        let proc = start_on_free_port("redis-server", |port| {
            let mut c = Command::new("redis-server");
            c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&path)
                .args(["--logfile", "redis.log"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        });
        Redis { proc, _dir: dir }
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn conn(&self) -> redis::Connection {
        connect(self.port())
    }
}

pub fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

pub struct Shardis {
    pub proc: Proc,
    pub dir: TempDir,
}

pub fn shardis_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shardis")
}

impl Shardis {
    /// Starts shardis with `body` as the configuration, after a `listen` line it adds.
    pub fn start_with(body: &str) -> Shardis {
        let dir = TempDir::new().unwrap();
        let config = dir.path().join("shardis.toml");
        let log = dir.path().join("shardis.log");
        let proc = start_on_free_port("shardis", |port| {
            std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n{body}")).unwrap();
            let mut c = Command::new(shardis_bin());
            c.arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            c
        });
        Shardis { proc, dir }
    }

    /// shardis in front of `nodes`, shards named a, b, c ... with `extra` config lines before.
    pub fn in_front_of(nodes: &[&Redis], extra: &str) -> Shardis {
        Self::start_with(&format!("{extra}\n{}", shards_toml(nodes)))
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    pub fn conn(&self) -> redis::Connection {
        connect(self.port())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("shardis.log")).unwrap_or_default()
    }
}

/// `[[shards]]` entries named a, b, c ... for `nodes`.
pub fn shards_toml(nodes: &[&Redis]) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "[[shards]]\nname = \"{}\"\nprimary = \"{}\"\n",
                (b'a' + i as u8) as char,
                n.addr()
            )
        })
        .collect()
}

/// Three Redis nodes and shardis in front of them.
pub struct Cluster {
    pub nodes: Vec<Redis>,
    pub proxy: Shardis,
}

impl Cluster {
    pub fn start(extra: &str) -> Cluster {
        let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
        let refs: Vec<&Redis> = nodes.iter().collect();
        let proxy = Shardis::in_front_of(&refs, extra);
        Cluster { nodes, proxy }
    }

    /// Sets `key` through the proxy and says which node it landed on.
    pub fn holder_after_set(&self, key: &str) -> usize {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("x")
            .query(&mut self.proxy.conn())
            .unwrap();
        self.holder(key)[0]
    }

    /// Which node holds `key` (checked on the nodes directly).
    pub fn holder(&self, key: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                let exists: i64 = redis::cmd("EXISTS").arg(key).query(&mut n.conn()).unwrap();
                exists == 1
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// A raw TCP client for byte-exact exchanges.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Reads one complete RESP reply.
    pub fn reply(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if let Ok(Some(len)) = shardis::resp::reply::frame_len(&buf) {
                assert_eq!(len, buf.len());
                return buf;
            }
            let n = self.stream.read(&mut byte).unwrap();
            assert!(
                n > 0,
                "connection closed after {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
        }
    }

    /// Sends a command and returns its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        self.reply()
    }

    /// Whether the peer closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn have(tool: &str) -> bool {
    which(tool).is_some()
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&format!("{path}:/usr/sbin:/usr/local/sbin"))
        .map(|d| d.join(tool))
        .find(|p| Path::new(p).exists())
}
