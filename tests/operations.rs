//! Operations: the Prometheus endpoint, INFO's matching figures, idle clients and limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, info_field, wait_for, Cluster, Raw, Redis, Shardis};

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

/// redis-benchmark's SET and GET tests against 127.0.0.1:`port`, started in the background.
fn benchmark(port: u16, args: &[&str]) -> std::process::Child {
    Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .args(["-t", "set,get", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-benchmark is installed by scripts/install-deps.sh")
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
    let n = N.to_string();
    let mut bench = benchmark(
        c.proxy.port(),
        &["-n", &n, "-c", "10", "-P", "4", "-r", "10000"],
    );
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
    let counted: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("shardis_command"))
        .filter(|l| !l.contains("_bucket"))
        .collect();
    for cmd in ["set", "get"] {
        let labels = format!("cmd=\"{cmd}\"");
        assert_eq!(
            sample(&body, "shardis_commands_total", &labels),
            Some(N as f64),
            "{cmd}; the commands counted:\n{}",
            counted.join("\n")
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
        assert_eq!(sample(&body, "shardis_node_up", &labels), Some(1.0));
        assert_eq!(sample(&body, "shardis_node_primary", &labels), Some(1.0));
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

/// A child process killed (and reaped) on drop unless taken out, so a failing assertion does not
/// leave it running.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `promtool check metrics` on `body`: its exit status and what it printed.
fn promtool_check(body: &str) -> (std::process::ExitStatus, String) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/install-deps.sh");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

/// Each family in `body` (a `# TYPE` line) has exactly one `# TYPE` and one `# HELP` line,
/// the HELP text `telemetry::names` gives it. Returns the families' names.
fn families_with_help(body: &str) -> Vec<String> {
    let mut families = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap().to_string());
        }
    }
    for name in &families {
        let family = shardis::telemetry::names::ALL
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} is not in telemetry::names::ALL"));
        let types = families.iter().filter(|f| *f == name).count();
        assert_eq!(types, 1, "{name} has {types} TYPE lines");
        let help: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
            .collect();
        assert_eq!(help, [family.help()], "{name}");
    }
    families
}

#[test]
fn promtool_accepts_scrapes_taken_during_load() {
    let (c, mport) = with_metrics();
    let _log = c.proxy.log_on_panic();
    let mut bench = KillOnDrop(Some(benchmark(
        c.proxy.port(),
        &["-n", "5000", "-c", "5", "-r", "1000"],
    )));
    // Scrapes taken while commands were being counted, not before or after. They are taken
    // quickly and checked afterwards: promtool takes long enough on a loaded machine for the
    // whole load to pass between two scrapes otherwise.
    let mut scrapes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = bench.0.as_mut().unwrap().try_wait().unwrap().is_some();
        assert!(Instant::now() < deadline, "redis-benchmark did not finish");
        let (status, body) = http_get(mport, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        scrapes.push(body);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = bench.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during: Vec<&String> = scrapes
        .iter()
        .filter(|body| {
            let answered = sum(body, "shardis_commands_total");
            answered > 0.0 && answered < 10_000.0
        })
        .collect();
    eprintln!(
        "{} scrapes, {} of them during the load",
        scrapes.len(),
        during.len()
    );
    assert!(
        !during.is_empty(),
        "none of {} scrapes came during the load",
        scrapes.len()
    );
    // At most 16 of those, spread over the load, and the first and last scrapes.
    let step = during.len().div_ceil(16);
    let checked = during
        .iter()
        .copied()
        .step_by(step)
        .chain([&scrapes[0], &scrapes[scrapes.len() - 1]]);
    for body in checked {
        let (exit, said) = promtool_check(body);
        assert!(exit.success(), "promtool: {exit}: {said}\n{body}");
        families_with_help(body);
    }
    // After the load every family is there, but the shard problem one (no shard has one).
    let (_, body) = http_get(mport, "/metrics");
    let families = families_with_help(&body);
    for family in shardis::telemetry::names::ALL {
        let expected = family.name != shardis::telemetry::names::SHARD_PROBLEM;
        assert_eq!(
            families.iter().any(|f| f == family.name),
            expected,
            "{}",
            family.name
        );
    }
    assert_eq!(
        sample(&body, "shardis_commands_total", "cmd=\"set\""),
        Some(5000.0)
    );
}

/// Health checks fast enough for a test to see a node go down within a second.
const QUICK_HEALTH: &str = "[health]\ninterval = \"100ms\"\nfailure_threshold = 3\n";

#[test]
fn ready_only_while_every_shard_has_its_primary_and_live_throughout() {
    let a = Redis::start();
    let mut b = Redis::start();
    let mport = free_port();
    let proxy = Shardis::in_front_of(
        &[&a, &b],
        &format!("metrics_listen = \"127.0.0.1:{mport}\"\n{QUICK_HEALTH}"),
    );
    let _log = proxy.log_on_panic();
    // The body of `/ready` once it answers `want`, polled for at most 10 s.
    let ready = |want: &str, body_has: &str| {
        wait_for(&format!("/ready {want}"), Duration::from_secs(10), || {
            let (status, body) = http_get(mport, "/ready");
            if status.contains(want) && body.contains(body_has) {
                Ok(body)
            } else {
                Err(format!("{status}: {body}"))
            }
        })
    };
    let body = ready("200 OK", "");
    assert_eq!(body, "ready: 2 of 2 shards serve\n");
    assert_eq!(http_get(mport, "/live").0, "HTTP/1.1 200 OK");

    b.proc.kill();
    let started = Instant::now();
    // First the lost data connections say so, then the health checks hold the primary down.
    let body = ready("503 Service Unavailable", "");
    eprintln!("/ready went 503 {:?} after the kill", started.elapsed());
    assert!(
        body.starts_with("not ready: 1 of 2 shards cannot serve\nshard 'b': "),
        "{body}"
    );
    let body = ready("503 Service Unavailable", "problem=");
    assert_eq!(
        body,
        format!(
            "not ready: 1 of 2 shards cannot serve\nshard 'b': primary {} is down (problem=primary_down)\n",
            b.addr()
        )
    );
    // The process still runs: live, and PING is answered by the proxy itself, whatever the
    // shards do (which is why PING is no readiness check).
    assert_eq!(http_get(mport, "/live").0, "HTTP/1.1 200 OK");
    assert_eq!(Raw::connect(proxy.port()).call(&[b"PING"]), b"+PONG\r\n");
    // The problem's family has HELP text too, and promtool takes the scrape.
    let (_, metrics) = http_get(mport, "/metrics");
    let (exit, said) = promtool_check(&metrics);
    assert!(exit.success(), "promtool: {exit}: {said}\n{metrics}");
    assert!(families_with_help(&metrics)
        .iter()
        .any(|f| f == "shardis_shard_problem"));

    b.restart();
    let started = Instant::now();
    let body = ready("200 OK", "");
    eprintln!("/ready went 200 {:?} after the restart", started.elapsed());
    assert_eq!(body, "ready: 2 of 2 shards serve\n");
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
    // Idle time counts from the reply, not from the BLPOP sent a second ago.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(blocked.call(&[b"PING"]), b"+PONG\r\n");
    assert!(
        c.proxy.log().contains("idle for 300ms"),
        "{}",
        c.proxy.log()
    );
}

/// Rewrites the running proxy's configuration file: its `listen` line, then `body`.
fn rewrite_config(proxy: &common::Shardis, body: &str) {
    let path = proxy.dir.path().join("shardis.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let listen = text.lines().next().unwrap();
    std::fs::write(&path, format!("{listen}\n{body}")).unwrap();
}

fn admin_reload(port: u16) -> Result<String, String> {
    let reply = Raw::connect(port).call(&[b"SHARDIS", b"RELOAD"]);
    let text = String::from_utf8(reply).unwrap();
    match text.strip_prefix('-') {
        Some(err) => Err(err.trim_end().to_string()),
        None => Ok(text),
    }
}

/// A SCAN cursor handed out before a reload that changed the shards is refused with a clear
/// error, not read against the new shard count (which would skip or repeat keys); a scan begun
/// after the reload walks every key once.
#[test]
fn a_scan_cursor_from_before_a_shard_change_is_refused() {
    let nodes: Vec<common::Redis> = (0..3).map(|_| common::Redis::start()).collect();
    let refs: Vec<&common::Redis> = nodes.iter().collect();
    let proxy = common::Shardis::start_with(&common::shards_toml(&refs[..2]));
    let _log = proxy.log_on_panic();
    let mut c = proxy.conn();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let (cursor, _): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_ne!(cursor, 0);
    // The same cursor goes on while the shards stay the same.
    let _: (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).query(&mut c).unwrap();
    rewrite_config(&proxy, &common::shards_toml(&refs));
    admin_reload(proxy.port()).unwrap();
    let err = redis::cmd("SCAN")
        .arg(cursor)
        .query::<(u64, Vec<String>)>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid cursor") && err.contains("start the scan again"),
        "{err}"
    );
    let walk = common::scan_all(&mut c, &["COUNT", "5"]);
    let seen: std::collections::BTreeSet<&String> = walk.iter().collect();
    assert_eq!(seen.len(), walk.len(), "a key twice: {walk:?}");
    // A walk reads every node: the keys the new ring would place elsewhere are still where
    // they were written, and are returned too, each once.
    assert_eq!(seen.len(), 100);
}

/// `N of 100000 sample keys move` in a reload report.
fn moved(report: &str) -> usize {
    let (before, _) = report.split_once(" of 100000 sample keys move").unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn reload_under_load_adds_a_shard_without_an_error_or_a_dropped_client() {
    let nodes: Vec<common::Redis> = (0..3).map(|_| common::Redis::start()).collect();
    let refs: Vec<&common::Redis> = nodes.iter().collect();
    let two = common::shards_toml(&refs[..2]);
    let three = common::shards_toml(&refs);
    let proxy = common::Shardis::start_with(&two);
    let _log = proxy.log_on_panic();
    // A client connected before the reload keeps its connection and its identity.
    let mut before = Raw::connect(proxy.port());
    let id = before.call(&[b"CLIENT", b"ID"]);

    let bench = benchmark(
        proxy.port(),
        &["-n", "300000", "-c", "20", "-P", "8", "-r", "100000", "-e"],
    );
    std::thread::sleep(Duration::from_millis(300));
    // An invalid file is refused with the reason; the running configuration stays.
    rewrite_config(
        &proxy,
        &format!("{three}\n[[shards]]\nprimary = \"nowhere\"\n"),
    );
    let err = admin_reload(proxy.port()).unwrap_err();
    assert!(
        err.starts_with("ERR reload refused: ") && err.contains("shards[3].primary"),
        "{err}"
    );
    // SIGHUP applies a third shard while the load runs.
    rewrite_config(&proxy, &three);
    proxy.proc.signal("HUP");
    common::wait_for("the reload", Duration::from_secs(10), || {
        let log = proxy.log();
        log.contains("configuration reloaded: 3 shards")
            .then_some(())
            .ok_or(log)
    });
    let out = bench.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        !stdout.to_lowercase().contains("error"),
        "redis-benchmark saw errors:\n{stdout}"
    );
    // Keys written after the reload reached the new shard.
    let on_third: i64 = redis::cmd("DBSIZE").query(&mut nodes[2].conn()).unwrap();
    assert!(on_third > 0, "nothing reached the added shard");
    assert_eq!(before.call(&[b"CLIENT", b"ID"]), id);
    let info = String::from_utf8(before.call(&[b"INFO", b"stats"])).unwrap();
    assert_eq!(info_field(&info, "config_reloads").as_deref(), Some("1"));
    assert_eq!(
        info_field(&info, "config_reload_failures").as_deref(),
        Some("1")
    );
    // Two equal shards to three: about a third of the sample keys move.
    let log = proxy.log();
    let report = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    let n = moved(report);
    assert!((25_000..42_000).contains(&n), "{report}");
    eprintln!("{report}\nredis-benchmark during the reload:\n{stdout}");
}

#[test]
fn reload_changes_weights_and_limits_and_refuses_what_needs_a_restart() {
    let nodes: Vec<common::Redis> = (0..2).map(|_| common::Redis::start()).collect();
    let refs: Vec<&common::Redis> = nodes.iter().collect();
    let shards = common::shards_toml(&refs);
    let proxy = common::Shardis::start_with(&shards);
    let _log = proxy.log_on_panic();
    // Connected before every reload below: a new idle_timeout reaches it too.
    let mut early = Raw::connect(proxy.port());
    assert_eq!(early.call(&[b"PING"]), b"+PONG\r\n");
    // Nothing changed: nothing moves.
    let report = admin_reload(proxy.port()).unwrap();
    assert!(report.contains("2 shards: 2 kept, 0 rebuilt"), "{report}");
    assert_eq!(moved(&report), 0);
    // A heavier second shard takes keys from the first; both are kept.
    let heavier = shards.replacen(
        &format!("primary = \"{}\"\n", nodes[1].addr()),
        &format!("primary = \"{}\"\nweight = 3\n", nodes[1].addr()),
        1,
    );
    // A subscriber's channel may now live on the other shard: it is closed, so its library
    // subscribes again; a plain client stays.
    let mut sub = Raw::connect(proxy.port());
    assert!(sub.call(&[b"SUBSCRIBE", b"news"]).starts_with(b"*3\r\n"));
    rewrite_config(&proxy, &heavier);
    let report = admin_reload(proxy.port()).unwrap();
    assert!(report.contains("2 shards: 2 kept"), "{report}");
    assert!(moved(&report) > 20_000, "{report}");
    assert!(sub.is_closed(), "the subscriber was not closed");
    assert_eq!(early.call(&[b"PING"]), b"+PONG\r\n");
    let info = String::from_utf8(Raw::connect(proxy.port()).call(&[b"INFO", b"shards"])).unwrap();
    assert!(info.contains(",weight=3,"), "{info}");
    // A new backend timeout rebuilds the shards' connections, keeping their epochs.
    rewrite_config(&proxy, &format!("[backend]\ntimeout = \"3s\"\n{heavier}"));
    let report = admin_reload(proxy.port()).unwrap();
    assert!(report.contains("2 shards: 0 kept, 2 rebuilt"), "{report}");
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    // A lower client limit applies to the next client.
    rewrite_config(
        &proxy,
        &format!("[limits]\nmax_clients = 2\nidle_timeout = \"300ms\"\n[backend]\ntimeout = \"3s\"\n{heavier}"),
    );
    admin_reload(proxy.port()).unwrap();
    // `early` and `c` hold the two places.
    let mut extra = Raw::connect(proxy.port());
    assert_eq!(extra.reply(), b"-ERR max number of clients reached\r\n");
    drop(c);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        early.is_closed(),
        "the new idle_timeout did not reach a connected client"
    );
    // What needs a restart is refused, naming the key.
    let text = std::fs::read_to_string(proxy.dir.path().join("shardis.toml")).unwrap();
    std::fs::write(
        proxy.dir.path().join("shardis.toml"),
        format!(
            "listen = \"127.0.0.1:1\"\n{}",
            text.split_once('\n').unwrap().1
        ),
    )
    .unwrap();
    common::wait_for("a free place", Duration::from_secs(5), || {
        admin_reload(proxy.port())
            .map_err(|e| e.to_string())
            .or_else(|e| {
                if e.contains("listen cannot change without a restart") {
                    Ok(e)
                } else {
                    Err(e)
                }
            })
    });
}

#[test]
fn a_reload_that_changes_the_ring_keeps_lock_tokens_growing() {
    let nodes: Vec<common::Redis> = (0..3).map(|_| common::Redis::start()).collect();
    let refs: Vec<&common::Redis> = nodes.iter().collect();
    let locks = "[locks]\nmax_ttl = \"1s\"\nfreeze_margin = \"200ms\"\n";
    let proxy = common::Shardis::start_with(&format!("{locks}{}", common::shards_toml(&refs[..2])));
    let _log = proxy.log_on_panic();
    let mut c = proxy.conn();
    let acquire = |c: &mut redis::Connection, key: &str| -> redis::Value {
        redis::cmd("LOCK.ACQUIRE")
            .arg(key)
            .arg("me")
            .arg(500)
            .query(c)
            .unwrap_or_else(|e| redis::Value::SimpleString(e.to_string()))
    };
    let token = |v: &redis::Value| -> Option<i64> {
        match v {
            redis::Value::Array(items) => match items[0] {
                redis::Value::Int(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    };
    // Each lock granted (and released) a few times on the two shards.
    let keys: Vec<String> = (0..200).map(|i| format!("lock:{{r{i}}}")).collect();
    let mut before = Vec::new();
    for key in &keys {
        let mut last = 0;
        for _ in 0..3 {
            let t = token(&acquire(&mut c, key)).unwrap();
            let _: i64 = redis::cmd("LOCK.RELEASE")
                .arg(key)
                .arg("me")
                .arg(t)
                .query(&mut c)
                .unwrap();
            last = t;
        }
        before.push(last);
    }
    let three = format!("{locks}{}", common::shards_toml(&refs));
    rewrite_config(&proxy, &three);
    let report = admin_reload(proxy.port()).unwrap();
    assert!(report.contains("epochs raised on a, b, c"), "{report}");
    // Any key may have moved: every shard waits out the freeze, then grants tokens above any
    // before, on the keys that moved (to c) and on those that stayed.
    let ring = common::router(&three);
    let moved = (0..keys.len())
        .filter(|&i| ring.shard_of(keys[i].as_bytes()) == 2)
        .count();
    assert!(moved > 0 && moved < keys.len());
    let frozen = acquire(&mut c, &keys[0]);
    assert!(
        matches!(&frozen, redis::Value::SimpleString(e) if e.contains("is in a new epoch")),
        "{frozen:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..keys.len() {
        let t = common::wait_for("a grant after the freeze", Duration::from_secs(5), || {
            token(&acquire(&mut c, &keys[i])).ok_or_else(|| keys[i].clone())
        });
        assert!(t > before[i], "{}: {t} after {}", keys[i], before[i]);
    }
}

/// Nodes that require an ACL user: shardis authenticates every connection (data, health
/// checks), and the password shows nowhere.
#[test]
fn backend_credentials_are_sent_and_never_shown() {
    const SECRET: &str = "b4ck3nd-s3cret";
    let password = format!(">{SECRET}");
    let acl = ["--user", "shardis", "on", &password, "~*", "&*", "+@all"];
    let nodes: Vec<common::Redis> = (0..2)
        .map(|_| {
            common::Redis::start_with(&[&["--requirepass", "not-this-one"][..], &acl].concat())
        })
        .collect();
    let refs: Vec<&common::Redis> = nodes.iter().collect();
    let shards = common::shards_toml(&refs);
    let proxy = common::Shardis::start_with(&format!(
        "[backend]\nusername = \"shardis\"\npassword = \"{SECRET}\"\n{shards}"
    ));
    let _log = proxy.log_on_panic();
    let mut c = proxy.conn();
    common::set_and_read_back(&mut c, 50);
    // The health checks authenticate too: both nodes are seen up.
    common::wait_for("nodes up", Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("shards").query(&mut c).unwrap();
        (info.matches("health=up").count() == 2)
            .then_some(())
            .ok_or(info)
    });
    let info: String = redis::cmd("INFO").arg("everything").query(&mut c).unwrap();
    assert!(!info.contains(SECRET));
    // A wrong password: the node's own error, naming no secret, reaches the client.
    let wrong = common::Shardis::start_with(&format!(
        "[backend]\nusername = \"shardis\"\npassword = \"wrong-{SECRET}\"\n{shards}"
    ));
    let err = redis::cmd("GET")
        .arg("k1")
        .query::<Option<String>>(&mut wrong.conn())
        .unwrap_err()
        .to_string();
    assert!(err.contains("WRONGPASS"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    for log in [proxy.log(), wrong.log()] {
        assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
    }
}

/// Dangerous and admin commands are refused with one error shape, naming what allows them
/// where something does; the connection stays usable.
#[test]
fn dangerous_commands_are_refused_unless_allowed() {
    let c = Cluster::start("");
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(
        raw.call(&[b"KEYS", b"*"]),
        b"-ERR shardis does not support 'keys': it walks every key of every shard, blocking each; use SCAN, or set [commands] allow_keys = true to allow it\r\n".to_vec()
    );
    assert_eq!(
        raw.call(&[b"FLUSHALL"]),
        b"-ERR shardis does not support 'flushall': it empties every shard; set [commands] allow_flush = true to allow it\r\n".to_vec()
    );
    for cmd in [
        &[&b"CONFIG"[..], b"SET", b"maxmemory", b"1"][..],
        &[b"DEBUG", b"SLEEP", b"0"],
        &[b"SHUTDOWN"],
    ] {
        let reply = String::from_utf8(raw.call(cmd)).unwrap();
        let name = String::from_utf8_lossy(cmd[0]).to_lowercase();
        assert!(
            reply.starts_with(&format!("-ERR shardis does not support '{name}")),
            "{reply}"
        );
    }
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    // Allowed, KEYS runs on every shard.
    let c = Cluster::start("[commands]\nallow_keys = true\nallow_flush = true");
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(raw.call(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"KEYS", b"*"]), b"*1\r\n$1\r\na\r\n");
    assert_eq!(raw.call(&[b"FLUSHALL"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"KEYS", b"*"]), b"*0\r\n");
}

#[test]
fn users_have_roles_and_key_prefixes() {
    let c = Cluster::start(
        "[[users]]\nname = \"reader\"\npassword = \"r-pass\"\nrole = \"read-only\"\n\
         [[users]]\nname = \"app\"\npassword = \"a-pass\"\nrole = \"read-write\"\nkey_prefixes = [\"app:\", \"lock:{app}\"]\n\
         [[users]]\nname = \"ops\"\npassword = \"o-pass\"\nrole = \"admin\"\n",
    );
    let _log = c.proxy.log_on_panic();
    let mut raw = Raw::connect(c.proxy.port());
    assert_eq!(
        raw.call(&[b"GET", b"app:1"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(raw.call(&[b"AUTH", b"app", b"nope"]), wrongpass);
    // With users and no top-level password, the default user is disabled.
    assert_eq!(raw.call(&[b"AUTH", b"anything"]), wrongpass);

    assert_eq!(raw.call(&[b"AUTH", b"reader", b"r-pass"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"GET", b"x"]), b"$-1\r\n");
    assert_eq!(raw.call(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(
        raw.call(&[b"SET", b"x", b"1"]),
        b"-NOPERM User reader has no permissions to run the 'set' command\r\n"
    );
    assert_eq!(
        raw.call(&[b"SHARDIS", b"RELOAD"]),
        b"-NOPERM User reader has no permissions to run the 'shardis' command\r\n"
    );

    assert_eq!(raw.call(&[b"AUTH", b"app", b"a-pass"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"app:1", b"v"]), b"+OK\r\n");
    let nokey =
        b"-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";
    assert_eq!(raw.call(&[b"SET", b"other", b"v"]), nokey);
    assert_eq!(raw.call(&[b"MSET", b"app:2", b"v", b"other", b"v"]), nokey);
    assert_eq!(
        raw.call(&[b"MGET", b"app:1", b"app:2"]),
        b"*2\r\n$1\r\nv\r\n$-1\r\n"
    );
    let scan = String::from_utf8(raw.call(&[b"SCAN", b"0"])).unwrap();
    assert!(
        scan.starts_with("-NOPERM User app has no permissions to run the 'scan'"),
        "{scan}"
    );
    assert_eq!(
        raw.call(&[b"CLIENT", b"KILL", b"ID", b"1"]),
        b"-NOPERM User app has no permissions to run the 'client|kill' command\r\n"
    );
    // Lock commands check the lock key, and FENCED the keys of what it wraps.
    let granted = raw.call(&[b"LOCK.ACQUIRE", b"lock:{app}", b"me", b"5000"]);
    assert!(granted.starts_with(b"*2\r\n:"), "{granted:?}");
    assert_eq!(
        raw.call(&[b"LOCK.ACQUIRE", b"lock:{x}", b"me", b"5000"]),
        nokey
    );
    assert_eq!(
        raw.call(&[b"FENCED", b"lock:{app}", b"1", b"SET", b"other{app}", b"v"]),
        nokey
    );
    // Inside a transaction the check is made when the command is queued.
    assert_eq!(raw.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"other", b"v"]), nokey);
    assert_eq!(raw.call(&[b"DISCARD"]), b"+OK\r\n");
    // HELLO's AUTH authenticates as the user too.
    let mut resp3 = Raw::connect(c.proxy.port());
    let hello = resp3.call(&[b"HELLO", b"3", b"AUTH", b"app", b"a-pass"]);
    assert_eq!(hello[0], b'%');
    assert_eq!(resp3.call(&[b"SET", b"other", b"v"]), nokey);

    assert_eq!(raw.call(&[b"AUTH", b"ops", b"o-pass"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"other", b"v"]), b"+OK\r\n");
    let reload = raw.call(&[b"SHARDIS", b"RELOAD"]);
    assert!(
        reload.starts_with(b"$"),
        "{}",
        String::from_utf8_lossy(&reload)
    );
}
