//! Operations: the Prometheus endpoint, INFO's matching figures, idle clients and limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, info_field, Cluster, Raw};

/// `GET path` on 127.0.0.1:`port`: the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the sample `name{labels}` (labels exactly as rendered, or "" for none).
fn sample(body: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    body.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// Sum of every sample of `name`, whatever its labels.
fn sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn with_metrics() -> (Cluster, u16) {
    let port = free_port();
    let c = Cluster::start(&format!("metrics_listen = \"127.0.0.1:{port}\""));
    (c, port)
}

#[test]
fn metrics_during_load_count_exactly_the_requests_sent() {
    let (c, mport) = with_metrics();
    let _log = c.proxy.log_on_panic();
    const N: u64 = 20_000;
    let mut bench = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &c.proxy.port().to_string()])
        .args(["-n", &N.to_string(), "-c", "10", "-P", "4", "-r", "10000"])
        .args(["-t", "set,get", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-benchmark is installed by scripts/install-deps.sh");
    // Scrapes while the load runs: counters only grow and never pass what was sent.
    let mut last_set = 0.0;
    let mut scrapes = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while bench.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "redis-benchmark did not finish");
        let (status, body) = http_get(mport, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let set = sample(&body, "shardis_commands_total", "cmd=\"set\"").unwrap_or(0.0);
        assert!(set >= last_set, "set went from {last_set} to {set}");
        assert!(set <= N as f64, "{set} SETs counted, {N} sent");
        last_set = set;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = bench.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(scrapes > 0);

    let (_, body) = http_get(mport, "/metrics");
    for cmd in ["set", "get"] {
        let labels = format!("cmd=\"{cmd}\"");
        assert_eq!(
            sample(&body, "shardis_commands_total", &labels),
            Some(N as f64),
            "{cmd}"
        );
        assert_eq!(
            sample(&body, "shardis_command_errors_total", &labels),
            Some(0.0)
        );
        // Every answered command is in its latency histogram.
        assert_eq!(
            sample(&body, "shardis_command_duration_seconds_count", &labels),
            Some(N as f64),
            "{cmd}"
        );
        assert_eq!(
            sample(
                &body,
                "shardis_command_duration_seconds_bucket",
                &format!("{labels},le=\"+Inf\"")
            ),
            Some(N as f64)
        );
    }
    // Every SET and GET reached a node: the nodes counted at least as many requests, and each
    // node's count is what its own commandstats say it executed.
    let backend = sum(&body, "shardis_backend_requests_total");
    assert!(backend >= 2.0 * N as f64, "{backend} backend requests");
    assert_eq!(sum(&body, "shardis_backend_errors_total"), 0.0);
    let mut executed = 0u64;
    for (i, node) in c.nodes.iter().enumerate() {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut node.conn())
            .unwrap();
        for cmd in ["set", "get"] {
            let calls = info_field(&info, &format!("cmdstat_{cmd}")).map_or(0, |v| {
                v.split(',').next().unwrap()["calls=".len()..]
                    .parse::<u64>()
                    .unwrap()
            });
            executed += calls;
        }
        let name = (b'a' + i as u8) as char;
        let labels = format!("shard=\"{name}\",node=\"{}\"", node.addr());
        assert!(
            sample(&body, "shardis_backend_requests_total", &labels).is_some(),
            "no series for {labels}"
        );
        assert_eq!(
            sample(
                &body,
                "shardis_node_up",
                &format!("{labels},role=\"primary\"")
            ),
            Some(1.0)
        );
        assert!(sample(&body, "shardis_backend_connections", &labels).unwrap() >= 1.0);
    }
    // Beside the clients' commands, each primary got one SET: its epoch record (see the
    // README's fenced locks), written when the fleet was first seen.
    assert_eq!(
        executed,
        2 * N + c.nodes.len() as u64,
        "the nodes ran every SET and GET once"
    );
    assert!(sample(&body, "shardis_net_input_bytes_total", "").unwrap() > 0.0);
    assert!(sample(&body, "shardis_net_output_bytes_total", "").unwrap() > 0.0);
    assert_eq!(
        sample(&body, "shardis_failovers_total", "shard=\"a\""),
        Some(0.0)
    );

    // INFO through the proxy shows the same figures.
    let mut raw = Raw::connect(c.proxy.port());
    let info = String::from_utf8(raw.call(&[b"INFO", b"commandstats"])).unwrap();
    for cmd in ["set", "get"] {
        let line = info_field(&info, &format!("cmdstat_{cmd}")).unwrap();
        assert!(line.starts_with(&format!("calls={N},")), "{cmd}: {line}");
        assert!(line.ends_with(",failed_calls=0"), "{line}");
    }
    let stats = String::from_utf8(raw.call(&[b"INFO", b"stats"])).unwrap();
    let (_, body) = http_get(mport, "/metrics");
    let connections: f64 = info_field(&stats, "total_connections_received")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sample(&body, "shardis_client_connections_total", ""),
        Some(connections)
    );
    // Errors are counted per command.
    assert_eq!(
        raw.call(&[b"GET"]),
        b"-ERR wrong number of arguments for 'get' command\r\n"
    );
    let (_, body) = http_get(mport, "/metrics");
    assert_eq!(
        sample(&body, "shardis_command_errors_total", "cmd=\"get\""),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "shardis_commands_total", "cmd=\"get\""),
        Some(N as f64 + 1.0)
    );
}

#[test]
fn the_metrics_port_answers_only_get_metrics() {
    let (c, mport) = with_metrics();
    let (status, body) = http_get(mport, "/nothing");
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    // A scraper that sends garbage or nothing does not disturb clients.
    let mut junk = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    junk.write_all(&[0xff; 100]).unwrap();
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    let (status, _) = http_get(mport, "/metrics?x=1");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn idle_clients_are_closed_after_the_idle_timeout() {
    let c = Cluster::start("[limits]\nidle_timeout = \"300ms\"");
    let mut idle = Raw::connect(c.proxy.port());
    assert_eq!(idle.call(&[b"PING"]), b"+PONG\r\n");
    // A client that keeps talking stays.
    let mut busy = Raw::connect(c.proxy.port());
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(busy.call(&[b"PING"]), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(idle.is_closed(), "idle client still open");
    assert_eq!(busy.call(&[b"PING"]), b"+PONG\r\n");
    // A client blocked in BLPOP longer than the idle timeout is not idle.
    let mut blocked = Raw::connect(c.proxy.port());
    blocked.send(&common::encode(&[b"BLPOP", b"idle:list", b"1"]));
    assert_eq!(blocked.reply(), b"*-1\r\n");
    assert_eq!(blocked.call(&[b"PING"]), b"+PONG\r\n");
    assert!(
        c.proxy.log().contains("idle for 300ms"),
        "{}",
        c.proxy.log()
    );
}
