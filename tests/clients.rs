//! Real client libraries through shardis: redis-py (installed from PyPI into a virtualenv by
//! this test) and the `redis` crate's async API, each as an application would use them.
//!
//! The redis-py run also covers fenced locks under the default `[locks]` prefix `lock:`:
//! redis-py's `Lock` and the Redis docs' `SET key value NX PX` recipe with its release script
//! work unchanged, and `LOCK.TOKEN` gives each grant a fencing token, later grants higher ones.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cluster;
use futures_util::StreamExt;

const REDIS_PY: &str = "redis==5.2.1";

/// A virtualenv with redis-py, made once per target directory. It is built under a temporary
/// name and renamed into place, so concurrent test runs never see half of one.
fn redis_py_venv() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("redis-py-5.2.1");
    let python = venv.join("bin/python");
    if python.exists() {
        return venv;
    }
    let building = root.join(format!("redis-py-building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .status()
        .expect("python3 runs (scripts/install-deps.sh installs it)");
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(building.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            REDIS_PY,
        ])
        .status()
        .expect("pip runs");
    assert!(
        status.success(),
        "pip install {REDIS_PY} failed (is PyPI reachable?)"
    );
    // A venv's scripts name their own directory; the interpreter itself does not care, and
    // the test only runs `bin/python`.
    if std::fs::rename(&building, &venv).is_err() {
        // Another run got there first.
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(python.exists());
    venv
}

#[test]
fn redis_py_pipelines_transactions_pubsub_scan_and_locks() {
    let venv = redis_py_venv();
    let cluster = Cluster::start("");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/redis_py_check.py"
    );
    let mut child = Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(format!("127.0.0.1:{}", cluster.proxy.port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The script bounds each check itself; this bounds the whole run.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "redis-py check failed:\n{stdout}\n{}\nshardis log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.proxy.log()
    );
    assert!(stdout.contains("all 10 checks passed"), "{stdout}");
}

#[tokio::test]
async fn redis_rs_async_pipelines_and_pubsub() {
    let cluster = Cluster::start("");
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/", cluster.proxy.port())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // A pipeline over keys of many shards, and an atomic one on one hash tag.
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.set(format!("rs:{i}"), i).ignore();
    }
    for i in 0..500 {
        pipe.get(format!("rs:{i}"));
    }
    let values: Vec<i64> = pipe.query_async(&mut conn).await.unwrap();
    assert_eq!(values, (0..500).collect::<Vec<i64>>());
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{acct}:a", 5)
        .incr("{acct}:b", 7)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((a, b), (5, 7));

    // Pub/sub: channels on different shards and a pattern; each message arrives once per
    // subscription.
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channels = ["news", "sport", "weather"];
    for ch in channels {
        pubsub.subscribe(ch).await.unwrap();
    }
    pubsub.psubscribe("s*").await.unwrap();
    for (i, ch) in channels.iter().cycle().take(30).enumerate() {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(*ch)
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
        let expected = if ch.starts_with('s') { 2 } else { 1 };
        assert_eq!(receivers, expected, "PUBLISH {ch}");
    }
    let mut stream = pubsub.on_message();
    let mut got: Vec<(String, String, bool)> = Vec::new();
    // 30 channel messages plus 10 pattern matches ("sport").
    while got.len() < 40 {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("messages arrive")
            .unwrap();
        let payload: String = msg.get_payload().unwrap();
        got.push((
            msg.get_channel_name().to_string(),
            payload,
            msg.from_pattern(),
        ));
    }
    for (i, ch) in channels.iter().cycle().take(30).enumerate() {
        let direct = got
            .iter()
            .filter(|(c, p, pat)| c == ch && *p == i.to_string() && !pat);
        assert_eq!(direct.count(), 1, "{ch} {i}");
    }
    assert_eq!(got.iter().filter(|(_, _, pat)| *pat).count(), 10);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "no message arrives twice"
    );
}
