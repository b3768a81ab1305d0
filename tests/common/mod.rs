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

/// Waits until something accepts on `port`, or the child exits (`false`). Something else may
/// have taken the port between `free_port` and the child's bind (another test's server, on a
/// port the kernel handed out twice): then the child exits at once, which the short wait after
/// the first accepted connection catches, and the caller tries another port.
fn wait_listening(port: u16, child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            return matches!(child.try_wait(), Ok(None));
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

    /// SIGSTOPs the process until the returned guard drops (SIGCONT), also on a panic.
    pub fn pause(&self) -> Paused {
        self.signal("STOP");
        Paused { pid: self.pid() }
    }
}

/// A stopped process, continued when this drops.
#[must_use = "the process continues as soon as this drops"]
pub struct Paused {
    pid: u32,
}

impl Drop for Paused {
    fn drop(&mut self) {
        // No assert: this may run while a panic unwinds, and the process may be gone.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
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
    /// The arguments given to `start_with`, kept so that `restart` starts the same server.
    args: Vec<String>,
    dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    /// A redis-server with extra arguments, e.g. `["--replicaof", "127.0.0.1", "7000"]`.
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = TempDir::new().unwrap();
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let proc = start_on_free_port("redis-server", |port| {
            redis_command(dir.path(), port, &args)
        });
        Redis { proc, args, dir }
    }

    /// A redis-server replicating `primary` from the start.
    pub fn replica_of(primary: &Redis) -> Redis {
        Self::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()])
    }

    /// Kills the server (if it still runs) and starts it again on the same port, with the same
    /// arguments and directory. With `--save ''` and no AOF it comes back empty. Retried for a
    /// few seconds when the port is not yet free again.
    pub fn restart(&mut self) {
        self.proc.kill();
        let port = self.port();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut child = redis_command(self.dir.path(), port, &self.args)
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
            if wait_listening(port, &mut child, Duration::from_secs(5)) {
                self.proc = Proc { child, port };
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {port}");
    }

    /// The server's working directory (its `redis.log` is there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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

fn redis_command(dir: &Path, port: u16, extra: &[String]) -> Command {
    let mut c = Command::new("redis-server");
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", "redis.log"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
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

/// The shardis binary under test: this build's, or `SHARDIS_BIN` when set (to run a test
/// against another build, e.g. to show that it fails on the code before a change).
pub fn shardis_bin() -> String {
    std::env::var("SHARDIS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardis").to_string())
}

impl Shardis {
    /// Starts shardis with `body` as the configuration, after a `listen` line it adds.
    pub fn start_with(body: &str) -> Shardis {
        Self::start_as(body, None)
    }

    /// [`Shardis::start_with`] under a wrapper that execs it (`prlimit --nofile=N:N --`).
    pub fn start_wrapped(body: &str, wrapper: &[&str]) -> Shardis {
        Self::start_inner(body, None, wrapper)
    }

    /// [`Shardis::start_with`], running the process with group id `gid` when given, so that
    /// packet filter rules can single out its connections (see [`Partition`]).
    pub fn start_as(body: &str, gid: Option<u32>) -> Shardis {
        Self::start_inner(body, gid, &[])
    }

    fn start_inner(body: &str, gid: Option<u32>, wrapper: &[&str]) -> Shardis {
        let dir = TempDir::new().unwrap();
        let config = dir.path().join("shardis.toml");
        let log = dir.path().join("shardis.log");
        let proc = start_on_free_port("shardis", |port| {
            std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n{body}")).unwrap();
            let mut c = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(shardis_bin());
                    c
                }
                None => Command::new(shardis_bin()),
            };
            // scripts/test.sh runs the suite a second time with SHARDIS__WORKERS set; a test
            // that sets `workers` itself keeps its own.
            if body.lines().any(|l| l.trim_start().starts_with("workers")) {
                c.env_remove("SHARDIS__WORKERS");
            }
            c.arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            if let Some(gid) = gid {
                std::os::unix::process::CommandExt::gid(&mut c, gid);
            }
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

    /// A guard that prints the end of this shardis' log if the test panics before it drops.
    /// Bind it after the `Shardis`, so that it drops first.
    pub fn log_on_panic(&self) -> LogOnPanic {
        LogOnPanic {
            label: format!("shardis on port {}", self.port()),
            path: self.dir.path().join("shardis.log"),
        }
    }
}

/// Prints the last lines of a log file when dropped during a panic.
#[must_use = "the log is printed only if this lives until the panic"]
pub struct LogOnPanic {
    label: String,
    path: PathBuf,
}

impl LogOnPanic {
    pub fn new(label: &str, path: &Path) -> LogOnPanic {
        LogOnPanic {
            label: label.to_string(),
            path: path.to_path_buf(),
        }
    }
}

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = std::fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "---- last {} lines of the log of {} ----\n{}",
            tail.len(),
            self.label,
            tail.join("\n")
        );
    }
}

/// `[[shards]]` entries named a, b, c ... for `nodes`.
pub fn shards_toml(nodes: &[&Redis]) -> String {
    shards_at(nodes.iter().map(|n| n.addr()))
}

/// `[[shards]]` entries named a, b, c ... with these primaries (`host:port`).
pub fn shards_at(primaries: impl IntoIterator<Item = String>) -> String {
    primaries
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            format!(
                "[[shards]]\nname = \"{}\"\nprimary = \"{addr}\"\n",
                (b'a' + i as u8) as char
            )
        })
        .collect()
}

/// Every key a full SCAN walk through `c` returns, cursor by cursor, with these options (in
/// the order returned, repeats kept), within 10,000 calls.
pub fn scan_all(c: &mut redis::Connection, options: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..10_000 {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor);
        for o in options {
            cmd.arg(*o);
        }
        let (next, keys): (u64, Vec<String>) = cmd.query(c).unwrap();
        seen.extend(keys);
        if next == 0 {
            return seen;
        }
        cursor = next;
    }
    panic!("SCAN {options:?} did not end within 10,000 calls");
}

/// SETs `{prefix}0` .. `{prefix}{n-1}` to their numbers through `c`.
pub fn set_many(c: &mut redis::Connection, prefix: &str, n: usize) {
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(i)
            .query(c)
            .unwrap();
    }
}

/// SETs `k0` .. `k{n-1}` to their numbers through `c`, and reads them back with one MGET.
pub fn set_and_read_back(c: &mut redis::Connection, n: i64) {
    set_many(c, "k", n as usize);
    let got: Vec<i64> = redis::cmd("MGET")
        .arg((0..n).map(|i| format!("k{i}")).collect::<Vec<_>>())
        .query(c)
        .unwrap();
    assert_eq!(got, (0..n).collect::<Vec<i64>>());
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

    /// This connection's CLIENT ID.
    pub fn client_id(&mut self) -> u64 {
        let reply = String::from_utf8(self.call(&[b"CLIENT", b"ID"])).unwrap();
        reply.trim_start_matches(':').trim_end().parse().unwrap()
    }

    /// Whether the proxy closed the connection (end of stream or a reset), waiting up to the
    /// read timeout. A timeout is not a close, and neither is data.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
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

/// A connection to a node that may be down: `None` when it does not accept within a second.
/// Replies must come within 5 s.
pub fn try_connect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(conn)
}

/// `INFO <section>` of a node, `None` if it is down or does not answer.
pub fn try_info(port: u16, section: &str) -> Option<String> {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut try_connect(port)?)
        .ok()
}

/// One `field:value` line of an INFO text.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

/// Polls `check` every 50 ms until it returns `Ok`, for at most `within`; then panics with
/// `what` and the last `Err` it returned.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => {
                if started.elapsed() > within {
                    panic!("{what}: not within {within:?}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One shard of shardis' `INFO shards`: its `shard{i}` line and its nodes' `shard{i}_node{j}`
/// lines (node 0 is the current primary, then the replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub name: String,
    pub epoch: u64,
    pub primary: String,
    pub state: String,
    /// What keeps the shard from serving, `none` when nothing does.
    pub problem: String,
    pub failovers: u64,
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub addr: String,
    pub role: String,
    pub health: String,
    pub offset: i64,
    pub lag_ms: u64,
    pub readable: bool,
}

impl ShardInfo {
    pub fn node(&self, addr: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.addr == addr)
    }

    pub fn replicas(&self) -> &[NodeInfo] {
        &self.nodes[1.min(self.nodes.len())..]
    }
}

/// Parses the `shard...` lines of `INFO shards`, in shard order.
pub fn parse_info_shards(text: &str) -> Vec<ShardInfo> {
    use std::collections::{BTreeMap, HashMap};
    type Fields = HashMap<String, String>;
    let mut shards: BTreeMap<usize, (Fields, BTreeMap<usize, Fields>)> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(rest) = key.strip_prefix("shard") else {
            continue;
        };
        // Skips `shards:N`: the shard's number must follow.
        let (shard, node) = match rest.split_once("_node") {
            Some((s, n)) => (s, Some(n)),
            None => (rest, None),
        };
        let Ok(shard) = shard.parse::<usize>() else {
            continue;
        };
        let fields: Fields = value
            .split(',')
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let entry = shards.entry(shard).or_default();
        match node {
            None => entry.0 = fields,
            Some(n) => {
                let n: usize = n
                    .parse()
                    .unwrap_or_else(|_| panic!("bad INFO shards line {line:?}"));
                entry.1.insert(n, fields);
            }
        }
    }
    fn get<'a>(f: &'a HashMap<String, String>, k: &str, what: &str) -> &'a str {
        f.get(k)
            .unwrap_or_else(|| panic!("INFO shards: {what} has no {k}= field: {f:?}"))
    }
    fn num<T: std::str::FromStr>(f: &HashMap<String, String>, k: &str, what: &str) -> T {
        get(f, k, what)
            .parse()
            .unwrap_or_else(|_| panic!("INFO shards: {what}: {k}= is not a number: {f:?}"))
    }
    shards
        .into_iter()
        .map(|(i, (s, nodes))| {
            let what = format!("shard{i}");
            ShardInfo {
                name: get(&s, "name", &what).to_string(),
                epoch: num(&s, "epoch", &what),
                primary: get(&s, "primary", &what).to_string(),
                state: get(&s, "state", &what).to_string(),
                problem: s.get("problem").cloned().unwrap_or_default(),
                failovers: num(&s, "failovers", &what),
                nodes: nodes
                    .into_iter()
                    .map(|(j, n)| {
                        let what = format!("shard{i}_node{j}");
                        NodeInfo {
                            addr: get(&n, "addr", &what).to_string(),
                            role: get(&n, "role", &what).to_string(),
                            health: get(&n, "health", &what).to_string(),
                            offset: num(&n, "offset", &what),
                            lag_ms: num(&n, "lag_ms", &what),
                            readable: get(&n, "readable", &what) == "yes",
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// shardis' `INFO shards`, parsed.
pub fn info_shards(proxy_port: u16) -> Vec<ShardInfo> {
    let mut conn = connect(proxy_port);
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let text: String = redis::cmd("INFO").arg("shards").query(&mut conn).unwrap();
    parse_info_shards(&text)
}

/// The shard called `name` in shardis' `INFO shards`.
pub fn shard_info(proxy_port: u16, name: &str) -> ShardInfo {
    let shards = info_shards(proxy_port);
    shards
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no shard {name:?} in INFO shards: {shards:?}"))
}

/// Waits until shardis' `INFO shards` shows node `addr` of shard `name` as `ok` says, for at
/// most `within`; returns the shard as last seen.
pub fn wait_node(
    proxy_port: u16,
    name: &str,
    addr: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&NodeInfo) -> bool,
) -> ShardInfo {
    wait_for(what, within, || {
        let s = shard_info(proxy_port, name);
        match s.node(addr) {
            Some(n) if ok(n) => Ok(s),
            _ => Err(format!("{s:?}")),
        }
    })
}

/// Waits until shardis shows shard `name` up with `primary`, `replicas` replicas, every node
/// healthy and every replica readable (following the primary, caught up).
pub fn wait_ready(proxy: &Shardis, name: &str, primary: &str, replicas: usize) -> ShardInfo {
    wait_for(
        &format!("shard {name} ready with primary {primary} and {replicas} replicas"),
        Duration::from_secs(15),
        || {
            let s = shard_info(proxy.port(), name);
            let ready = s.primary == primary
                && s.state == "up"
                && s.nodes.len() == replicas + 1
                && s.nodes.iter().all(|n| n.health == "up")
                && s.replicas().iter().all(|n| n.readable);
            if ready {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
}

/// A Redis Sentinel (`redis-server <conf> --sentinel`) on a free port, killed on drop. Its
/// configuration file lives in its own directory: Sentinel rewrites it.
pub struct Sentinel {
    pub proc: Proc,
    dir: TempDir,
}

impl Sentinel {
    /// Monitors `primary` as `master` with `quorum`; `extra` holds further configuration
    /// lines, e.g. `sentinel down-after-milliseconds mymaster 500`.
    pub fn start(master: &str, primary: &Redis, quorum: u32, extra: &str) -> Sentinel {
        let dir = TempDir::new().unwrap();
        let path = dir.path().to_path_buf();
        let conf = path.join("sentinel.conf");
        let primary_port = primary.port();
        let proc = start_on_free_port("redis-server --sentinel", |port| {
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                     sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}\n{extra}\n",
                    dir = path.display()
                ),
            )
            .unwrap();
            let mut c = Command::new("redis-server");
            c.arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        });
        Sentinel { proc, dir }
    }

    pub fn port(&self) -> u16 {
        self.proc.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    /// `SENTINEL MASTER <master>` as field/value pairs; `None` if the sentinel does not answer.
    pub fn master(&self, master: &str) -> Option<std::collections::HashMap<String, String>> {
        let flat: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master)
            .query(&mut try_connect(self.port())?)
            .ok()?;
        Some(
            flat.chunks_exact(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
        )
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME <master>` as `host:port`.
    pub fn master_addr(&self, master: &str) -> Option<String> {
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(master)
            .query(&mut try_connect(self.port())?)
            .ok()?;
        Some(format!("{host}:{port}"))
    }
}

// ---- configurations with replicas, and key placement ----

/// One `[[shards]]` entry; `extra` holds more of its lines (`replication = "mirror"`).
pub fn shard_toml(name: &str, primary: &Redis, replicas: &[&Redis], extra: &str) -> String {
    let replicas: Vec<String> = replicas
        .iter()
        .map(|r| format!("\"{}\"", r.addr()))
        .collect();
    format!(
        "[[shards]]\nname = \"{name}\"\nprimary = \"{}\"\nreplicas = [{}]\n{extra}",
        primary.addr(),
        replicas.join(", ")
    )
}

/// The proxy's placement of keys, from the same configuration.
pub fn router(body: &str) -> shardis::routing::Router {
    shardis::config::Config::from_toml(body)
        .expect("the test's configuration is valid")
        .router()
}

/// `n` keys `{prefix}{i}` that land on shard number `shard`.
pub fn keys_on(
    router: &shardis::routing::Router,
    shard: usize,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| router.shard_of(k.as_bytes()) == shard)
        .take(n)
        .collect()
}

// ---- network faults ----

/// A packet filter rule that drops every TCP packet processes of group `gid` send to
/// 127.0.0.1:`port`: a partition between one proxy (started with [`Shardis::start_as`]) and
/// one node, while everything else still reaches that node. The rule is removed when this
/// drops, also when the test panics. Needs root and iptables (scripts/install-deps.sh).
pub struct Partition {
    rule: Vec<String>,
}

impl Partition {
    pub fn drop_from(gid: u32, port: u16) -> Partition {
        let rule: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &port.to_string(),
            "-m",
            "owner",
            "--gid-owner",
            &gid.to_string(),
            "-m",
            "comment",
            "--comment",
            &format!("shardis-test-partition-{}", std::process::id()),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let status = Command::new(which("iptables").expect("iptables (scripts/install-deps.sh)"))
            .arg("-I")
            .args(&rule)
            .status()
            .expect("cannot run iptables");
        assert!(
            status.success(),
            "iptables -I {rule:?} failed (run as root)"
        );
        Partition { rule }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // No assert: this may run while a panic unwinds.
        if let Some(iptables) = which("iptables") {
            let _ = Command::new(iptables).arg("-D").args(&self.rule).status();
        }
    }
}

/// A group id for a proxy that a [`Partition`] singles out: unused by the system, and
/// different for each test process, so parallel runs do not share rules.
pub fn partition_gid() -> u32 {
    40_000 + std::process::id() % 20_000
}

/// A memory figure of process `pid` from its /proc status (`VmRSS`, or `VmHWM` for its peak), in
/// MiB.
pub fn status_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
    kib / 1024
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> u64 {
    status_mib(pid, "VmRSS")
}

/// Asserts that process `pid` holds at most 8 MiB more than `idle` (MiB) now, saying `when` it
/// did not (`"after the client left"`); returns its resident memory.
pub fn assert_near_idle(pid: u32, idle: u64, when: &str) -> u64 {
    let now = rss_mib(pid);
    assert!(
        now <= idle + 8,
        "the proxy went from {idle} MiB to {now} MiB {when}"
    );
    now
}

/// The most bytes any client of `node` has buffered of a command it has not finished reading
/// (CLIENT LIST's `qbuf`).
pub fn node_qbuf(node: &Redis) -> usize {
    let mut c = Raw::connect(node.port());
    let list = String::from_utf8(c.call(&[b"CLIENT", b"LIST"])).unwrap();
    list.split_whitespace()
        .filter_map(|f| f.strip_prefix("qbuf="))
        .filter_map(|v| v.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Waits until the node holds at least `bytes` of a command still arriving.
pub fn node_has_part(node: &Redis, bytes: usize) -> usize {
    wait_for(
        "the node to hold part of the big request",
        Duration::from_secs(10),
        || match node_qbuf(node) {
            q if q >= bytes => Ok(q),
            q => Err(format!("qbuf {q}")),
        },
    )
}
