//! Limits under hostile or careless clients and backends: many idle clients, huge declared
//! lengths, deep nesting, a client that never reads. Memory bounds are read from the proxy's
//! /proc status (VmRSS), so they are real resident memory, not estimates.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{encode, rss_mib, status_mib, Cluster, Raw, Redis, Shardis};

#[test]
fn five_thousand_idle_clients_then_one_more_than_max_clients() {
    const MAX: usize = 5_000;
    let c = Cluster::start(&format!("[limits]\nmax_clients = {MAX}"));
    let _log = c.proxy.log_on_panic();
    let port = c.proxy.port();
    // The harness's readiness probe may hold a place for a moment.
    common::wait_for("no other client", Duration::from_secs(5), || {
        let info = common::try_info(port, "clients").ok_or("no INFO")?;
        (common::info_field(&info, "connected_clients").as_deref() == Some("1"))
            .then_some(())
            .ok_or(info)
    });
    // One of the clients asks INFO; the others only connect.
    let mut probe = Raw::connect(port);
    let mut idle: Vec<TcpStream> = (1..MAX)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Every one of them is a served client: the last one answers.
    let last = idle.last_mut().unwrap();
    last.write_all(&encode(&[b"PING"])).unwrap();
    let mut buf = [0u8; 7];
    last.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
    let info = String::from_utf8(probe.call(&[b"INFO", b"clients"])).unwrap();
    assert_eq!(
        common::info_field(&info, "connected_clients"),
        Some(MAX.to_string())
    );
    let mut extra = Raw::connect(port);
    assert_eq!(extra.reply(), b"-ERR max number of clients reached\r\n");
    assert!(extra.is_closed());
    // The idle ones are still served, and the proxy's memory per idle client is small.
    let first = &mut idle[0];
    first.write_all(&encode(&[b"PING"])).unwrap();
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
    let rss = rss_mib(c.proxy.proc.pid());
    assert!(rss < 256, "{rss} MiB resident with {MAX} idle clients");
    eprintln!("{MAX} idle clients: shardis resident {rss} MiB");
}

#[test]
fn a_declared_gigabyte_bulk_is_not_allocated() {
    let c = Cluster::start("[limits]\nmax_bulk_len = 2147483648");
    let _log = c.proxy.log_on_panic();
    let pid = c.proxy.proc.pid();
    let before = rss_mib(pid);
    let mut lazy: Vec<Raw> = (0..8).map(|_| Raw::connect(c.proxy.port())).collect();
    for raw in &mut lazy {
        raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\nonly a few bytes");
    }
    // Others are served meanwhile.
    let mut other = Raw::connect(c.proxy.port());
    assert_eq!(other.call(&[b"PING"]), b"+PONG\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_mib(pid);
    assert!(
        after < before + 64,
        "8 clients each declaring 1 GiB: resident {before} MiB -> {after} MiB"
    );
    eprintln!("8 declared 1 GiB bulks: shardis resident {before} MiB -> {after} MiB");
}

/// A backend that answers every request with an array nested a million deep.
#[test]
fn a_reply_nested_a_million_deep_fails_that_request_only() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    if stream
                        .write_all("*1\r\n".repeat(1_000_000).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let good = Redis::start();
    let proxy = Shardis::start_with(&format!(
        "[health]\ninterval = \"60s\"\n[[shards]]\nname = \"deep\"\nprimary = \"{addr}\"\n[[shards]]\nname = \"good\"\nprimary = \"{}\"\n",
        good.addr()
    ));
    let _log = proxy.log_on_panic();
    let ring = common::router(&format!(
        "[[shards]]\nname = \"deep\"\nprimary = \"{addr}\"\n[[shards]]\nname = \"good\"\nprimary = \"{}\"\n",
        good.addr()
    ));
    let on = |shard: usize| common::keys_on(&ring, shard, "deep:", 1).remove(0);
    let mut raw = Raw::connect(proxy.port());
    // The framer refuses the reply at its depth limit and drops that connection: the request
    // fails ("connection lost", or "unavailable" while the node's connections reconnect).
    let reply = String::from_utf8(raw.call(&[b"GET", on(0).as_bytes()])).unwrap();
    assert!(reply.starts_with("-ERR shard 'deep' node"), "{reply}");
    assert!(
        proxy.log().contains("nested"),
        "no depth error logged:\n{}",
        proxy.log()
    );
    // The same client, and the other shard, go on.
    assert_eq!(raw.call(&[b"GET", on(1).as_bytes()]), b"$-1\r\n");
    let rss = rss_mib(proxy.proc.pid());
    assert!(rss < 128, "{rss} MiB resident");
}

#[test]
fn a_client_that_pipelines_without_reading_keeps_the_proxy_bounded() {
    // What the proxy may hold for one client is its output buffer plus the replies to the
    // requests it has in flight: 4 MiB + 64 x 256 KiB = 20 MiB here.
    let c = Cluster::start("[limits]\nmax_output_buffer = 4194304\nmax_pipeline = 64");
    let _log = c.proxy.log_on_panic();
    let pid = c.proxy.proc.pid();
    // A 256 KiB value: every GET of it is a quarter MiB of reply.
    let mut setup = c.proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'x'; 256 * 1024])
        .query(&mut setup)
        .unwrap();
    let before = rss_mib(pid);
    let mut hog = TcpStream::connect(("127.0.0.1", c.proxy.port())).unwrap();
    hog.set_nonblocking(true).unwrap();
    let get = encode(&[b"GET", b"big"]);
    let batch: Vec<u8> = get.iter().copied().cycle().take(get.len() * 1000).collect();
    // Write until the proxy stops taking requests for a full second. The kernel's socket
    // buffers take a few MiB of requests whatever the proxy does; 1,000,000 GETs (22 MB of
    // requests, 250 GB of replies) is far past them.
    let mut sent = 0usize;
    let mut stalled_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < get.len() * 1_000_000 && Instant::now() < deadline {
        match hog.write(&batch[sent % batch.len()..]) {
            Ok(n) => {
                sent += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    let requests = sent / get.len();
    let after = rss_mib(pid);
    eprintln!(
        "non-reading pipeliner: {requests} GETs sent ({} MiB of replies owed), shardis resident {before} -> {after} MiB",
        requests / 4
    );
    assert!(
        requests < 1_000_000,
        "the proxy kept reading: {requests} requests"
    );
    assert!(
        after < before + 64,
        "resident {before} MiB -> {after} MiB with {requests} GETs unread"
    );
    // Another client is served meanwhile.
    let mut other = Raw::connect(c.proxy.port());
    assert_eq!(other.call(&[b"PING"]), b"+PONG\r\n");
}

/// A long run of requests leaves nothing behind: with no one scraping /metrics, a million more
/// requests do not make the proxy larger. (The latency histograms kept each request's latency
/// until a scrape folded it in: about 17 bytes per request, for good.)
#[test]
fn a_million_requests_leave_no_memory_behind() {
    let c = Cluster::start("");
    let _log = c.proxy.log_on_panic();
    let port = c.proxy.port().to_string();
    let pid = c.proxy.proc.pid();
    // `n` SETs then `n` GETs, 16 to a pipeline.
    let bench = |n: &str| {
        let out = std::process::Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-c",
                "20",
                "-P",
                "16",
                "-r",
                "1000",
            ])
            .args(["-t", "set,get", "-q", "-n", n])
            .output()
            .expect("redis-benchmark is installed by scripts/install-deps.sh");
        assert!(out.status.success(), "{out:?}");
    };
    // Buffers and the allocator's pools reach their working size first.
    bench("100000");
    let before = rss_mib(pid);
    bench("500000");
    let after = rss_mib(pid);
    assert!(
        after <= before + 6,
        "resident memory grew from {before} MiB to {after} MiB over 1,000,000 requests"
    );
}

/// A big value passes through the proxy without being copied: its SET and its GETs take the
/// proxy about the value's size in memory, not twice that, and it is given back afterwards.
#[test]
fn a_big_value_is_held_once_not_copied() {
    const MIB: u64 = 64;
    let node = Redis::start();
    let proxy = Shardis::in_front_of(&[&node], "");
    let _log = proxy.log_on_panic();
    let pid = proxy.proc.pid();
    let value = vec![b'x'; (MIB << 20) as usize];
    let mut raw = Raw::connect(proxy.port());
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let idle = rss_mib(pid);
    // Writing 5 resets the peak (VmHWM) to what is resident now.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    assert_eq!(raw.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    let header = format!("${}\r\n", value.len());
    for _ in 0..2 {
        raw.send(&encode(&[b"GET", b"big"]));
        assert_eq!(raw.read_exact(header.len()), header.as_bytes());
        let body = raw.read_exact(value.len() + 2);
        assert!(
            body[..value.len()] == value[..],
            "the value came back changed"
        );
    }
    // Its peak since the reset.
    let peak = status_mib(pid, "VmHWM");
    assert!(
        peak <= idle + MIB * 3 / 2,
        "a {MIB} MiB value made the proxy grow from {idle} MiB to a peak of {peak} MiB"
    );
    eprintln!("{MIB} MiB value: shardis resident {idle} MiB, peak {peak} MiB");
}
