//! The command line and stock tools: redis-benchmark, redis-cli, --check-config, `shardis dev`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{shardis_bin, Cluster};

#[test]
fn redis_benchmark_default_suite_runs_without_errors() {
    let c = Cluster::start("");
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &c.proxy.port().to_string()])
        .args(["-n", "20000", "-q", "-c", "20"])
        .stdin(Stdio::null())
        .output()
        .expect("redis-benchmark is installed by scripts/install-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Every test of the default suite reports a rate, and none an error.
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "ZPOPMIN",
        "LRANGE_100",
        "LRANGE_600",
        "MSET",
    ] {
        assert!(
            stdout.split(['\r', '\n']).map(str::trim_start).any(|l| l
                .strip_prefix(test)
                .is_some_and(|rest| rest.starts_with([':', ' ']))
                && l.contains("requests per second")),
            "{test} missing from:\n{stdout}"
        );
    }
    let combined = format!("{stdout}{stderr}").to_lowercase();
    assert!(!combined.contains("error"), "{stdout}\n{stderr}");
}

#[test]
fn redis_cli_works_through_the_proxy() {
    let c = Cluster::start("");
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &c.proxy.port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello");
    assert_eq!(cli(&["--no-raw", "-3", "HGETALL", "nope"]), "(empty hash)");
    assert!(cli(&["INFO", "server"]).contains("redis_version:"));
    assert_eq!(cli(&["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
    assert_eq!(cli(&["MGET", "a", "b", "c"]), "1\n2\n3");
}

/// redis-cli 7 in interactive mode sends COMMAND DOCS at start (its hints; the reply itself is
/// checked byte-wise in tests/proxy.rs); through shardis it starts, shows hints and runs
/// commands without errors. tmux gives it a terminal.
#[test]
fn interactive_redis_cli_starts_and_shows_hints() {
    let c = Cluster::start("");
    // A tmux server of this test's own (-L), so no other tmux user or test run shares it.
    let session = format!("shardis-test-{}", c.proxy.port());
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .output()
            .expect("tmux is installed by scripts/install-deps.sh");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    struct Kill<'a>(&'a str);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", self.0, "kill-server"])
                .output();
        }
    }
    let cli = format!("redis-cli -p {}", c.proxy.port());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &cli,
    ]);
    let _kill = Kill(&session);
    let screen = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = tmux(&["capture-pane", "-t", &session, "-p"]);
            if text.contains(want) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {want:?}; screen:\n{text}\nshardis log:\n{}",
                c.proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    screen(&format!("127.0.0.1:{}>", c.proxy.port()));
    // A hint from COMMAND DOCS appears while typing.
    tmux(&["send-keys", "-t", &session, "zadd "]);
    screen("score member [score member ...]");
    tmux(&["send-keys", "-t", &session, "C-u"]);
    // One command at a time: redis-cli flushes typed-ahead input when it returns to its
    // prompt (linenoise sets raw mode with TCSAFLUSH), so a line typed early is lost.
    let mut text = String::new();
    for (cmd, answer) in [
        ("set greeting hi", "OK"),
        ("get greeting", "\"hi\""),
        ("mget greeting nope", "2) (nil)"),
    ] {
        tmux(&["send-keys", "-t", &session, cmd, "Enter"]);
        text = screen(answer);
    }
    assert!(!text.contains("(error)"), "{text}");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[routing]\nhash = \"crc32\"\n[[shards]]\nprimary = \"127.0.0.1:7001\"\n",
    )
    .unwrap();
    let out = Command::new(shardis_bin())
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routing.hash") && err.contains("crc32"),
        "{err}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/shardis.toml");
    let out = Command::new(shardis_bin())
        .args(["--check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An environment override is validated too.
    let out = Command::new(shardis_bin())
        .args(["--check-config", "--config", example])
        .env("SHARDIS__BACKEND__CONNECTIONS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend.connections"));
}

/// `--check-config` on `body` (after a shard line) with `env` set: its stderr, after checking
/// that it failed.
fn check_config_fails(body: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("shardis.toml");
    std::fs::write(
        &file,
        format!("{body}\n[[shards]]\nprimary = \"127.0.0.1:7001\"\n"),
    )
    .unwrap();
    let out = Command::new(shardis_bin())
        .args(["--check-config", "--config"])
        .arg(&file)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{body} {env:?} was accepted: {err}");
    err
}

#[test]
fn check_config_names_the_environment_variable_at_fault() {
    // An unknown key from the environment is the variable's, not the file's.
    let err = check_config_fails("", &[("SHARDIS__BACKEND__TIMEOUTT", "1s")]);
    assert!(
        err.starts_with("shardis: environment variable SHARDIS__BACKEND__TIMEOUTT: "),
        "{err}"
    );
    assert!(err.contains("timeoutt"), "{err}");
    assert!(!err.contains("shardis.toml"), "{err}");
    // So is a bad value it sets, and a value validation refuses.
    let err = check_config_fails("", &[("SHARDIS__BACKEND__TIMEOUT", "500")]);
    assert!(
        err.starts_with("shardis: environment variable SHARDIS__BACKEND__TIMEOUT: "),
        "{err}"
    );
    let err = check_config_fails("", &[("SHARDIS__BACKEND__CONNECTIONS", "0")]);
    assert!(
        err.starts_with("shardis: environment variable SHARDIS__BACKEND__CONNECTIONS: "),
        "{err}"
    );
    assert!(err.contains("backend.connections"), "{err}");
    // A variable that is fine does not take the blame for the file's error.
    let err = check_config_fails(
        "[routing]\nhsah = 1",
        &[("SHARDIS__BACKEND__TIMEOUT", "1s")],
    );
    assert!(!err.contains("environment"), "{err}");
    assert!(
        err.contains("shardis.toml") && err.contains("hsah"),
        "{err}"
    );
}

#[test]
fn check_config_says_what_a_duration_looks_like() {
    let hint = r#"expected a duration with a unit, such as "500ms", "2s" or "1m""#;
    let err = check_config_fails("[backend]\ntimeout = 500", &[]);
    assert!(
        err.contains(hint) && err.contains("backend.timeout"),
        "{err}"
    );
    assert!(err.contains("shardis.toml"), "{err}");
    let err = check_config_fails("", &[("SHARDIS__HEALTH__INTERVAL", "250")]);
    assert!(
        err.contains(hint) && err.contains("health.interval"),
        "{err}"
    );
    assert!(err.contains("SHARDIS__HEALTH__INTERVAL"), "{err}");
}

fn pids_of_children(parent: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `shardis dev` serves real nodes, and its children never outlive it: not after SIGTERM,
/// not after SIGKILL.
#[test]
fn dev_mode_serves_and_leaves_no_orphans() {
    for signal in ["TERM", "KILL"] {
        let mut dev = common::start_on_free_port("shardis dev", |port| {
            let mut c = Command::new(shardis_bin());
            c.args(["dev", "--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        });
        let port = dev.port;
        // Its nodes' directory: it removes it itself on SIGTERM; after SIGKILL (or if the test
        // fails first) this guard does.
        let _dir = RemoveOnDrop(std::env::temp_dir().join(format!("shardis-dev-{}", dev.pid())));
        let mut raw = common::Raw::connect(port);
        assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
        let info = String::from_utf8(raw.call(&[b"INFO", b"shards"])).unwrap();
        assert!(info.contains("shards:3"), "{info}");
        let children = pids_of_children(dev.pid());
        assert_eq!(children.len(), 3, "three redis-server children");
        dev.signal(signal);
        let status = dev.child.wait().unwrap();
        if signal == "TERM" {
            assert!(status.success(), "exit status after SIGTERM: {status}");
        }
        for pid in children {
            wait_until(&format!("child {pid} to exit after SIG{signal}"), || {
                !alive(pid)
            });
        }
        dev.kill();
    }
}

/// A directory removed when this drops.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn listen_flag_overrides_the_config() {
    let node = common::Redis::start();
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("shardis.toml");
    // The file's listen address is taken (by the node itself); --listen wins.
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\n{}",
            node.addr(),
            common::shards_toml(&[&node])
        ),
    )
    .unwrap();
    let proxy = common::start_on_free_port("shardis --listen", |port| {
        let mut c = Command::new(shardis_bin());
        c.arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null());
        c
    });
    let port = proxy.port;
    let mut raw = common::Raw::connect(port);
    let info = String::from_utf8(raw.call(&[b"INFO", b"server"])).unwrap();
    assert!(info.contains(&format!("tcp_port:{port}")), "{info}");
}

#[test]
fn dev_mode_says_how_to_install_a_missing_redis() {
    let out = Command::new(shardis_bin())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("redis-server not found") && err.contains("apt-get install -y redis-server"),
        "{err}"
    );
}

/// SIGTERM: no new clients, but a request already in flight still gets its reply, then the
/// proxy exits 0.
#[test]
fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let node = common::Redis::start();
    let mut proxy = common::Shardis::in_front_of(&[&node], "");
    let mut client = common::Raw::connect(proxy.port());
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // Hold the node for a moment so the next request is in flight when SIGTERM arrives.
    let mut direct = common::Raw::connect(node.port());
    assert_eq!(
        direct.call(&[b"CLIENT", b"PAUSE", b"700", b"ALL"]),
        b"+OK\r\n"
    );
    client.send(&common::encode(&[b"GET", b"k"]));
    std::thread::sleep(Duration::from_millis(150));
    proxy.proc.signal("TERM");
    // The listener is gone at once...
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", proxy.port())).is_err()
    });
    // ...and the reply to the request in flight still arrives, then the connection closes.
    assert_eq!(client.reply(), b"$1\r\nv\r\n");
    assert!(client.is_closed());
    let status = proxy.proc.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        proxy.log().contains("all clients finished"),
        "{}",
        proxy.log()
    );
}

/// `scripts/demo.sh --listen ...` says the port it serves, not the default 6380. The script
/// runs from a copy of the repository's layout in which its two heavy steps are stubbed:
/// `scripts/install-deps.sh` (which may install packages) and `cargo build --release`, whose
/// binary is this build's. The rest of the script, and `shardis dev`, run for real.
#[test]
fn demo_script_prints_the_port_it_serves() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::TempDir::new().unwrap();
    let path = |p: &str| root.path().join(p);
    for dir in ["scripts", "cargo/bin", "target/release"] {
        std::fs::create_dir_all(path(dir)).unwrap();
    }
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
    std::fs::copy(demo, path("scripts/demo.sh")).unwrap();
    std::fs::write(path("scripts/install-deps.sh"), "exit 0\n").unwrap();
    std::fs::write(path("cargo/bin/cargo"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        path("cargo/bin/cargo"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink(shardis_bin(), path("target/release/shardis")).unwrap();

    let mut demo = common::start_on_free_port("scripts/demo.sh", |port| {
        let mut c = Command::new("bash");
        c.arg(path("scripts/demo.sh"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CARGO_HOME", path("cargo"))
            .env_remove("CARGO_TARGET_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    });
    let port = demo.port;
    // The script execs shardis dev, which prints where it serves once it listens.
    let lines = std::io::BufReader::new(demo.child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|l: &String| l.contains("Try: redis-cli")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line saying where the demo serves; saw {seen:?}"),
        }
    }
    demo.signal("TERM");
    let _ = demo.child.wait();
    let mut told = 0;
    for line in &seen {
        for (_, rest) in line
            .match_indices("redis-cli -p ")
            .map(|(i, m)| line.split_at(i + m.len()))
        {
            let said: String = rest.chars().take_while(char::is_ascii_digit).collect();
            assert_eq!(said, port.to_string(), "{line}");
            told += 1;
        }
    }
    assert!(told > 0, "{seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains("6380")),
        "the default port is not served here: {seen:?}"
    );
}
