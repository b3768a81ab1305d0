//! Failover as operators run it: the fleet, not the proxy's memory, says who is primary, and
//! only a dead primary is replaced. Against real redis-server processes on loopback; every
//! process is killed when the test ends, also when it panics.
//!
//! - Stale starts: a proxy restarted without its state file, and a second proxy, both from the
//!   original config after a failover, with the old primary back empty or still waiting for its
//!   first sync: writes work through every proxy within 10 s, the fleet keeps exactly one
//!   primary, no key is lost, and the next fencing token is above every earlier one.
//! - A proxy whose packets to a live primary are dropped (an iptables rule on its group id)
//!   does not fail it over while the primary's replicas still hear from it; after the partition
//!   heals both proxies write within interval x failure_threshold + 2 s and no acknowledged
//!   write is lost.
//! - A primary that is slow, not dead (a 4 s script, a client that never reads 400 replies of
//!   8 MiB) is not failed over; SCRIPT KILL and FUNCTION KILL through the proxy stop a runaway.
//! - A primary stopped 1.2 s and run 1 s, six times, with write_ack = "primary": with the
//!   shipped `down_after` it is not replaced and no acknowledged write is lost; with a short
//!   one it is replaced each time, and no write acknowledged after a failover is lost (before
//!   one, what the promoted replica had not yet received may be, as documented).
//! - A primary that dies while its only replica is in a full resync is not replaced by it.
//! - read_from = "replica" serves reads from replicas from the first request on.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{
    info_field, partition_gid, shard_info, shard_toml, try_connect, try_info, wait_for, wait_ready,
    Partition, Raw, Redis, Shardis,
};

const BACKEND: &str = "[backend]\nconnect_timeout = \"300ms\"\nreconnect_backoff = \"50ms\"\nreconnect_backoff_max = \"200ms\"\n";
const HEALTH: &str = "[health]\ninterval = \"100ms\"\nfailure_threshold = 3\n";
/// interval x failure_threshold + 2 s, for `HEALTH`: how soon proxies must agree again.
const CONVERGE: Duration = Duration::from_millis(100 * 3 + 2_000);
/// Short leases, so the lock freeze after a failover (max_ttl + freeze_margin) is short.
const LOCKS: &str = "[locks]\nmax_ttl = \"1s\"\nfreeze_margin = \"200ms\"\n";
const LOCK_KEY: &str = "lock:{t}";

// ---- the fleet ----

/// A primary and `n` replicas that already replicate from it (as Redis was set up before
/// shardis came).
fn fleet(n: usize, extra: &[&str]) -> (Redis, Vec<Redis>) {
    let primary = Redis::start_with(extra);
    let port = primary.port().to_string();
    let replicas: Vec<Redis> = (0..n)
        .map(|_| {
            let mut args = vec!["--replicaof", "127.0.0.1", port.as_str()];
            args.extend_from_slice(extra);
            Redis::start_with(&args)
        })
        .collect();
    for r in &replicas {
        wait_for(
            "a replica to sync",
            Duration::from_secs(10),
            || match try_info(r.port(), "replication") {
                Some(i) if i.contains("master_link_status:up") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    (primary, replicas)
}

/// The nodes that answer INFO with `role:master`.
fn masters(nodes: &[&Redis]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| {
            try_info(n.port(), "replication")
                .is_some_and(|i| info_field(&i, "role").as_deref() == Some("master"))
        })
        .map(|n| n.addr())
        .collect()
}

/// Samples the fleet for `during`: every sample must show exactly one primary, the same one.
/// Returns it.
fn one_primary_throughout(nodes: &[&Redis], during: Duration) -> String {
    let until = Instant::now() + during;
    let mut seen: Option<String> = None;
    loop {
        let m = masters(nodes);
        assert_eq!(
            m.len(),
            1,
            "the fleet should have exactly one primary: {m:?}"
        );
        if let Some(s) = &seen {
            assert_eq!(s, &m[0], "the primary changed");
        }
        seen = Some(m[0].clone());
        if Instant::now() >= until {
            return m[0].clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

// ---- through the proxy ----

/// SETs `{prefix}{i}` = i for i in 0..n, pipelined; every one must be acknowledged.
fn write_keys(port: u16, prefix: &str, n: usize) {
    let mut raw = Raw::connect(port);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<u8> = chunk
            .iter()
            .flat_map(|i| {
                common::encode(&[
                    b"SET",
                    format!("{prefix}{i}").as_bytes(),
                    i.to_string().as_bytes(),
                ])
            })
            .collect();
        raw.send(&batch);
        for i in chunk {
            let reply = text(raw.reply());
            assert_eq!(reply, "+OK\r\n", "SET {prefix}{i}");
        }
    }
}

/// How many of `{prefix}{i}` for i in 0..n do not read back as i through the proxy.
fn missing_keys(port: u16, prefix: &str, n: usize) -> usize {
    let mut raw = Raw::connect(port);
    let mut missing = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<u8> = chunk
            .iter()
            .flat_map(|i| common::encode(&[b"GET", format!("{prefix}{i}").as_bytes()]))
            .collect();
        raw.send(&batch);
        for i in chunk {
            let want = format!("${}\r\n{i}\r\n", i.to_string().len());
            if text(raw.reply()) != want {
                missing += 1;
            }
        }
    }
    missing
}

/// Waits until a SET through the proxy is acknowledged; returns how long that took.
fn wait_writable(port: u16, within: Duration) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        if let Some(mut c) = try_connect(port) {
            match redis::cmd("SET")
                .arg("probe:w")
                .arg("1")
                .query::<String>(&mut c)
            {
                Ok(_) => return started.elapsed(),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no write acknowledged through port {port} within {within:?}; last: {last}");
}

/// LOCK.ACQUIRE through the proxy, retried through a freeze; the token.
fn acquire(port: u16, owner: &str) -> u64 {
    let started = Instant::now();
    loop {
        let mut c = common::connect(port);
        let r: redis::RedisResult<Option<(u64, i64)>> = redis::cmd("LOCK.ACQUIRE")
            .arg(LOCK_KEY)
            .arg(owner)
            .arg(1_000)
            .query(&mut c);
        match r {
            Ok(Some((token, _))) => return token,
            Ok(None) => {}
            Err(e) if e.code() == Some("TRYAGAIN") => {}
            Err(e) => panic!("LOCK.ACQUIRE: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no lock granted within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn release(port: u16, owner: &str, token: u64) {
    let released: i64 = redis::cmd("LOCK.RELEASE")
        .arg(LOCK_KEY)
        .arg(owner)
        .arg(token)
        .query(&mut common::connect(port))
        .unwrap();
    assert_eq!(released, 1);
}

// ---- stale starts ----

/// A fleet that has failed over once behind `first`: `before:` keys written under the old
/// primary, `after:` keys under the new one, and the lock's tokens so far.
struct AfterFailover {
    old: Redis,
    replicas: Vec<Redis>,
    first: Shardis,
    body: String,
    tokens: Vec<u64>,
    new_primary: String,
}

const KEYS: usize = 3_000;

fn body_with_state(primary: &Redis, replicas: &[&Redis], state: &std::path::Path) -> String {
    format!(
        "{BACKEND}{HEALTH}{LOCKS}[replication]\nwrite_ack = \"replicas:1\"\nstate_file = \"{}\"\n{}",
        state.display(),
        shard_toml("a", primary, replicas, "")
    )
}

fn fail_over_once(state_dir: &tempfile::TempDir) -> AfterFailover {
    let (mut old, replicas) = fleet(2, &[]);
    let refs: Vec<&Redis> = replicas.iter().collect();
    let body = body_with_state(&old, &refs, &state_dir.path().join("first.json"));
    let first = Shardis::start_with(&body);
    wait_ready(&first, "a", &old.addr(), 2);
    write_keys(first.port(), "before:", KEYS);
    let t1 = acquire(first.port(), "one");
    release(first.port(), "one", t1);

    old.proc.kill();
    let after = wait_for("a failover", Duration::from_secs(10), || {
        let s = shard_info(first.port(), "a");
        if s.primary != old.addr() && s.state == "up" {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    wait_writable(first.port(), Duration::from_secs(5));
    write_keys(first.port(), "after:", KEYS);
    let t2 = acquire(first.port(), "two");
    release(first.port(), "two", t2);
    assert!(t2 > t1, "token {t2} after the failover is not above {t1}");
    AfterFailover {
        old,
        replicas,
        first,
        body,
        tokens: vec![t1, t2],
        new_primary: after.primary,
    }
}

/// What every proxy in front of a fleet that was stale-started must show.
fn check_converged(f: &AfterFailover, proxies: &[&Shardis]) {
    for p in proxies {
        let took = wait_writable(p.port(), Duration::from_secs(10));
        println!(
            "writes acknowledged through port {} after {took:?}",
            p.port()
        );
    }
    let nodes: Vec<&Redis> = std::iter::once(&f.old).chain(&f.replicas).collect();
    let primary = one_primary_throughout(&nodes, Duration::from_secs(2));
    assert_eq!(primary, f.new_primary, "the promoted node stays primary");
    for p in proxies {
        assert_eq!(
            missing_keys(p.port(), "before:", KEYS),
            0,
            "before: keys lost"
        );
        assert_eq!(
            missing_keys(p.port(), "after:", KEYS),
            0,
            "after: keys lost"
        );
        wait_for(
            "the proxy to show the shard up",
            Duration::from_secs(5),
            || {
                let s = shard_info(p.port(), "a");
                if s.primary == f.new_primary && s.state == "up" {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            },
        );
    }
    let last = *f.tokens.iter().max().unwrap();
    let next = acquire(proxies[proxies.len() - 1].port(), "three");
    assert!(
        next > last,
        "token {next} granted after the stale start is not above {last}"
    );
    println!("tokens {:?} then {next}", f.tokens);
}

#[test]
fn a_proxy_restarted_without_its_state_file_follows_the_fleet_old_primary_back_empty() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut f = fail_over_once(&dir);
    f.first.proc.kill();
    // The old primary comes back empty and, as its own config says, a primary.
    f.old.restart();
    // The same file, but its state file is gone (a new pod, a lost volume).
    let body = f.body.replace("first.json", "lost.json");
    let again = Shardis::start_with(&body);
    let _log = again.log_on_panic();
    check_converged(&f, &[&again]);
}

#[test]
fn a_proxy_restarted_without_its_state_file_follows_the_fleet_old_primary_syncing() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut f = fail_over_once(&dir);
    f.first.proc.kill();
    // The old primary comes back empty and is pointed at the new one by hand; Redis 7 waits
    // repl-diskless-sync-delay (5 s) before it sends the first sync, so it is still waiting
    // for its data when the proxy starts.
    f.old.restart();
    let (host, port) = f.new_primary.rsplit_once(':').unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query(&mut f.old.conn())
        .unwrap();
    let info = try_info(f.old.port(), "replication").unwrap();
    assert_eq!(
        info_field(&info, "master_link_status").as_deref(),
        Some("down"),
        "{info}"
    );
    let body = f.body.replace("first.json", "lost.json");
    let again = Shardis::start_with(&body);
    let _log = again.log_on_panic();
    check_converged(&f, &[&again]);
}

#[test]
fn a_second_proxy_from_the_original_config_follows_the_fleet() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut f = fail_over_once(&dir);
    let _log1 = f.first.log_on_panic();
    f.old.restart();
    let body = f.body.replace("first.json", "second.json");
    let second = Shardis::start_with(&body);
    let _log2 = second.log_on_panic();
    check_converged(&f, &[&f.first, &second]);
}

// ---- a partition between one proxy and the primary ----

/// A client writing `SET {prefix}{n} n` through one proxy until told to stop; what was
/// acknowledged.
fn writer(port: u16, prefix: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        timed_writer(port, prefix, stop)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    })
}

/// [`writer`]'s loop, with the wall-clock time each acknowledgement came back.
fn timed_writer(port: u16, prefix: String, stop: Arc<AtomicBool>) -> Vec<(usize, SystemTime)> {
    let mut acked = Vec::new();
    let mut n = 0;
    let mut conn: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = try_connect(port);
        }
        let Some(c) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let r: redis::RedisResult<String> = redis::cmd("SET")
            .arg(format!("{prefix}{n}"))
            .arg(n)
            .query(c);
        match r {
            Ok(_) => acked.push((n, SystemTime::now())),
            Err(e) => {
                if e.is_io_error() || e.is_timeout() {
                    conn = None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n += 1;
    }
    acked
}

/// Acknowledged writes that do not read back through the proxy.
fn lost_writes(port: u16, prefix: &str, acked: &[usize]) -> Vec<usize> {
    let mut c = common::connect(port);
    acked
        .chunks(1_000)
        .flat_map(|chunk| {
            let keys: Vec<String> = chunk.iter().map(|n| format!("{prefix}{n}")).collect();
            let values: Vec<Option<usize>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
            chunk
                .iter()
                .zip(values)
                .filter(|(n, v)| *v != Some(**n))
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_proxy_cut_off_from_a_live_primary_does_not_fail_it_over() {
    let (primary, replicas) = fleet(2, &[]);
    let refs: Vec<&Redis> = replicas.iter().collect();
    let body = format!(
        "{BACKEND}{HEALTH}[replication]\nwrite_ack = \"replicas:1\"\nack_timeout = \"1s\"\n{}",
        shard_toml("a", &primary, &refs, "")
    );
    let gid = partition_gid();
    let cut = Shardis::start_as(&body, Some(gid));
    let _log1 = cut.log_on_panic();
    let other = Shardis::start_with(&body);
    let _log2 = other.log_on_panic();
    for p in [&cut, &other] {
        wait_ready(p, "a", &primary.addr(), 2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let w_cut = writer(cut.port(), "cut:".into(), stop.clone());
    let w_other = writer(other.port(), "other:".into(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));

    // Longer than down_after (30 s by default): the cut-off proxy holds the primary down.
    let partition = Partition::drop_from(gid, primary.port());
    std::thread::sleep(Duration::from_secs(32));
    let during = shard_info(cut.port(), "a");
    println!("the cut-off proxy during the partition: {during:?}");
    drop(partition);
    let healed = Instant::now();

    let mut took = Vec::new();
    for p in [&cut, &other] {
        took.push(wait_writable(p.port(), CONVERGE + Duration::from_secs(1)));
    }
    let converged = healed.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acked_cut = w_cut.join().unwrap();
    let acked_other = w_other.join().unwrap();

    let nodes: Vec<&Redis> = std::iter::once(&primary).chain(&replicas).collect();
    let now_primary = one_primary_throughout(&nodes, Duration::from_secs(1));
    assert_eq!(now_primary, primary.addr(), "a live primary was replaced");
    for p in [&cut, &other] {
        let s = shard_info(p.port(), "a");
        assert_eq!(
            (s.primary.as_str(), s.failovers),
            (now_primary.as_str(), 0),
            "{s:?}"
        );
    }
    let lost_cut = lost_writes(other.port(), "cut:", &acked_cut);
    let lost_other = lost_writes(cut.port(), "other:", &acked_other);
    println!(
        "both proxies writing {converged:?} after the partition healed (bound {CONVERGE:?}); \
         acknowledged: {} through the cut-off proxy, {} through the other; lost: {} and {}",
        acked_cut.len(),
        acked_other.len(),
        lost_cut.len(),
        lost_other.len()
    );
    assert!(converged <= CONVERGE, "took {converged:?} ({took:?})");
    assert!(
        lost_cut.is_empty(),
        "lost: {:?}",
        &lost_cut[..lost_cut.len().min(10)]
    );
    assert!(
        lost_other.is_empty(),
        "lost: {:?}",
        &lost_other[..lost_other.len().min(10)]
    );
    assert!(acked_other.len() > 100, "the other proxy kept writing");
}

// ---- slow is not dead ----

/// A proxy with fast health checks in front of `primary` and `replica`, ready; `backend`
/// holds more `[backend]` lines.
fn proxy_for(primary: &Redis, replica: &Redis, backend: &str) -> Shardis {
    let body = format!(
        "{BACKEND}{backend}{HEALTH}\n{}",
        shard_toml("a", primary, &[replica], "")
    );
    let proxy = Shardis::start_with(&body);
    wait_ready(&proxy, "a", &primary.addr(), 1);
    proxy
}

/// The proxy still has `primary` as primary at `epoch`, and never failed over.
fn assert_no_failover(proxy: &Shardis, primary: &Redis, epoch: u64) {
    let s = shard_info(proxy.port(), "a");
    assert_eq!(
        (s.primary.as_str(), s.epoch, s.failovers),
        (primary.addr().as_str(), epoch, 0),
        "{s:?}"
    );
}

/// ... and the node itself is still a primary (asked directly, with time to answer).
fn assert_still_primary(primary: &Redis) {
    let mut c = primary.conn();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
    assert_eq!(
        info_field(&info, "role").as_deref(),
        Some("master"),
        "{info}"
    );
}

#[test]
fn a_primary_busy_in_a_long_script_or_a_huge_reply_is_not_failed_over() {
    let (primary, replicas) = fleet(1, &[]);
    let proxy = proxy_for(&primary, &replicas[0], "");
    let _log = proxy.log_on_panic();
    let epoch = shard_info(proxy.port(), "a").epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(proxy.port(), "w:".into(), stop.clone());

    // A 4-second script, run on the primary by someone else.
    let mut busy = primary.conn();
    busy.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let _: () = redis::cmd("EVAL")
        .arg("local s = tonumber(redis.call('TIME')[1]) + 4 repeat until tonumber(redis.call('TIME')[1]) >= s return nil")
        .arg(0)
        .query(&mut busy)
        .unwrap();
    println!("the script ran {:?}", started.elapsed());
    let took = wait_writable(proxy.port(), Duration::from_secs(2));
    println!("writable {took:?} after the script ended");
    assert_no_failover(&proxy, &primary, epoch);
    assert_still_primary(&primary);

    // One client pipelines 400 GETs of an 8 MiB value and reads nothing.
    let value = vec![b'x'; 8 << 20];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut primary.conn())
        .unwrap();
    let mut hog = std::net::TcpStream::connect(("127.0.0.1", primary.port())).unwrap();
    let gets: Vec<u8> = (0..400)
        .flat_map(|_| common::encode(&[b"GET", b"big"]))
        .collect();
    std::io::Write::write_all(&mut hog, &gets).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_no_failover(&proxy, &primary, epoch);
    drop(hog);

    // The node has 400 replies of 8 MiB queued for the hog (3.2 GB) to free first: on a CI
    // machine running the other tests of this file beside it, that once took more than 10 s.
    wait_writable(proxy.port(), Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let acked = w.join().unwrap();
    let lost = lost_writes(proxy.port(), "w:", &acked);
    println!("{} writes acknowledged, {} lost", acked.len(), lost.len());
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_no_failover(&proxy, &primary, epoch);
    assert_still_primary(&primary);
}

#[test]
fn script_kill_and_function_kill_through_the_proxy_stop_a_runaway() {
    // Redis answers BUSY (and accepts SCRIPT KILL) after half a second instead of five.
    let (primary, replicas) = fleet(1, &["--busy-reply-threshold", "500"]);
    // One connection per node: the kill cannot take another one than the runaway's.
    let proxy = proxy_for(&primary, &replicas[0], "connections = 1\n");
    let _log = proxy.log_on_panic();
    let epoch = shard_info(proxy.port(), "a").epoch;
    let mut c = proxy.conn();
    let idle: redis::RedisResult<String> = redis::cmd("SCRIPT").arg("KILL").query(&mut c);
    assert!(
        idle.as_ref().is_err_and(|e| e.code() == Some("NOTBUSY")),
        "{idle:?}"
    );
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(
            "#!lua name=spinlib\nredis.register_function('spin', function() while true do end end)",
        )
        .query(&mut c)
        .unwrap();

    for (kill, run) in [
        ("SCRIPT", vec!["EVAL", "while true do end", "1", "k"]),
        ("FUNCTION", vec!["FCALL", "spin", "1", "k"]),
    ] {
        // The runaway goes through the proxy, on the connection the kill would share.
        let port = proxy.port();
        let runaway = std::thread::spawn(move || {
            let mut c = common::connect(port);
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut cmd = redis::cmd(run[0]);
            for a in &run[1..] {
                cmd.arg(*a);
            }
            cmd.query::<redis::Value>(&mut c)
        });
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let killed: redis::RedisResult<String> = redis::cmd(kill).arg("KILL").query(&mut c);
        assert_eq!(killed.as_deref(), Ok("OK"), "{kill} KILL");
        let ended = runaway.join().unwrap();
        assert!(ended.is_err(), "the runaway ended by itself: {ended:?}");
        println!("{kill} KILL through the proxy: {ended:?}");
        wait_writable(proxy.port(), Duration::from_secs(5));
        println!("writable {:?} after the kill", started.elapsed());
        assert_no_failover(&proxy, &primary, epoch);
        assert_still_primary(&primary);
    }
}

// ---- a flapping primary ----

/// What a flapping run saw: writes acknowledged, those lost (with when each was acknowledged),
/// and when each failover happened, from the proxy's log.
struct Flap {
    acked: usize,
    lost: Vec<(usize, SystemTime)>,
    failovers: Vec<SystemTime>,
}

/// Stops the current primary 1.2 s and runs it 1 s, six times, while one client writes
/// through the proxy with write_ack = "primary".
fn flap(extra: &str) -> Flap {
    let (primary, replicas) = fleet(2, &[]);
    let refs: Vec<&Redis> = replicas.iter().collect();
    let body = format!(
        "{BACKEND}{HEALTH}{extra}\n[replication]\nwrite_ack = \"primary\"\n{}",
        shard_toml("a", &primary, &refs, "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    wait_ready(&proxy, "a", &primary.addr(), 2);
    let nodes: Vec<&Redis> = std::iter::once(&primary).chain(&replicas).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (port, flag) = (proxy.port(), stop.clone());
    let w = std::thread::spawn(move || timed_writer(port, "f:".into(), flag));
    for _ in 0..6 {
        let current = shard_info(proxy.port(), "a").primary;
        let node = nodes.iter().find(|n| n.addr() == current).unwrap();
        let paused = node.proc.pause();
        std::thread::sleep(Duration::from_millis(1_200));
        drop(paused);
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_writable(proxy.port(), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acked = w.join().unwrap();
    // Every node settles behind one primary before the data is read back.
    one_primary_throughout(&nodes, Duration::from_millis(500));
    let numbers: Vec<usize> = acked.iter().map(|(n, _)| *n).collect();
    let lost: BTreeSet<usize> = lost_writes(proxy.port(), "f:", &numbers)
        .into_iter()
        .collect();
    let log = proxy.log();
    let failovers: Vec<SystemTime> = log
        .lines()
        .filter(|l| l.contains("failover shard=a from="))
        .filter_map(|l| log_time(l.split_whitespace().next()?))
        .collect();
    assert_eq!(
        failovers.len() as u64,
        shard_info(proxy.port(), "a").failovers,
        "every failover is in the log"
    );
    if !lost.is_empty() {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("backend::conn"))
            .collect();
        eprintln!(
            "the proxy's log:\n{}",
            lines[lines.len().saturating_sub(150)..].join("\n")
        );
    }
    Flap {
        acked: acked.len(),
        lost: acked
            .into_iter()
            .filter(|(n, _)| lost.contains(n))
            .collect(),
        failovers,
    }
}

/// The time of a log line (`2026-12-06T05:08:43.274976Z`, UTC).
fn log_time(stamp: &str) -> Option<SystemTime> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<u64>().ok()?,
        t.next()?.parse::<u64>().ok()?,
    );
    let secs: f64 = t.next()?.parse().ok()?;
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let whole = days * 86_400 + h * 3_600 + min * 60;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(whole) + Duration::from_secs_f64(secs))
}

#[test]
fn log_times_read_as_utc() {
    let t = log_time("2026-12-06T05:08:43.250000Z").unwrap();
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(since.as_millis(), 1_796_533_723_250);
    assert_eq!(
        log_time("1970-01-01T00:00:00Z"),
        Some(std::time::UNIX_EPOCH)
    );
}

#[test]
fn a_flapping_primary_loses_no_acknowledged_write() {
    let run = flap("");
    println!(
        "shipped down_after: {} writes acknowledged, {} lost, {} failovers",
        run.acked,
        run.lost.len(),
        run.failovers.len()
    );
    assert!(
        run.lost.is_empty(),
        "lost: {:?}",
        &run.lost[..run.lost.len().min(10)]
    );
    assert!(
        run.failovers.is_empty(),
        "a primary stopped 1.2 s is slow, not dead"
    );
}

/// With down_after shorter than the stops, each stopped primary is replaced. What write_ack =
/// "primary" may lose then is documented: writes the primary acknowledged and had not yet sent
/// to the promoted replica, which was within max_lag (1 s) of it when it last answered (at most
/// down_after, 1 s, before the failover). What it must never lose is a write acknowledged after
/// the failover: a replaced primary that resumes may still answer the writes queued to it, and
/// the gate turns those answers into errors. So every lost write was acknowledged before a
/// failover, by at most down_after + max_lag + a check interval and scheduling slack.
#[test]
fn a_flapping_primary_with_a_short_down_after_loses_only_what_write_ack_primary_allows() {
    let run = flap("down_after = \"1s\"\n");
    println!(
        "down_after 1 s: {} writes acknowledged, {} lost, {} failovers",
        run.acked,
        run.lost.len(),
        run.failovers.len()
    );
    assert!(
        !run.failovers.is_empty(),
        "no failover happened, so nothing was tested"
    );
    let window = Duration::from_millis(1_000 + 1_000 + 100 + 900);
    for &(n, at) in &run.lost {
        let covered = run
            .failovers
            .iter()
            .any(|&f| f.duration_since(at).is_ok_and(|before| before <= window));
        assert!(
            covered,
            "write {n} was acknowledged at {at:?} and lost, but no failover came within {window:?} after it (failovers at {:?})",
            run.failovers
        );
    }
}

// ---- promotion needs a replica in sync ----

#[test]
fn a_replica_in_a_full_resync_is_not_promoted() {
    // The primary keeps its data across a restart (AOF), so the shard can wait for it.
    let mut primary = Redis::start_with(&["--appendonly", "yes"]);
    let mut replica = Redis::replica_of(&primary);
    let proxy = proxy_for(&primary, &replica, "");
    let _log = proxy.log_on_panic();
    write_keys(proxy.port(), "k:", 20_000);
    // The replica restarts empty (without the copy of the data it kept from its first sync)
    // and waits for its full sync: the primary holds it back a minute.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg(60)
        .query(&mut primary.conn())
        .unwrap();
    replica.proc.kill();
    let _ = std::fs::remove_file(replica.dir().join("dump.rdb"));
    replica.restart();
    wait_for(
        "the replica to wait for its full sync",
        Duration::from_secs(10),
        || {
            let i = try_info(replica.port(), "replication").unwrap_or_default();
            let waiting = info_field(&i, "role").as_deref() == Some("slave")
                && info_field(&i, "master_link_status").as_deref() == Some("down");
            if waiting {
                Ok(())
            } else {
                Err(i)
            }
        },
    );
    // The proxy sees it too.
    common::wait_node(
        proxy.port(),
        "a",
        &replica.addr(),
        "the proxy to see the replica out of sync",
        Duration::from_secs(5),
        |n| !n.readable,
    );
    let epoch = shard_info(proxy.port(), "a").epoch;
    primary.proc.kill();
    std::thread::sleep(Duration::from_secs(3));
    let s = shard_info(proxy.port(), "a");
    println!("with the primary dead and its replica resyncing: {s:?}");
    assert_eq!(
        (s.primary.as_str(), s.epoch, s.problem.as_str()),
        (primary.addr().as_str(), epoch, "no_replica_in_sync"),
        "{s:?}"
    );
    assert_ne!(s.state, "up", "{s:?}");
    let refused = redis::cmd("SET")
        .arg("k:x")
        .arg(1)
        .query::<String>(&mut proxy.conn());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("unavailable")),
        "{refused:?}"
    );
    // The primary comes back with its data: it serves again, nothing is lost.
    primary.restart();
    wait_writable(proxy.port(), Duration::from_secs(10));
    assert_eq!(missing_keys(proxy.port(), "k:", 20_000), 0);
    assert_eq!(masters(&[&primary, &replica]), [primary.addr()]);
}

// ---- reads from replicas at start ----

#[test]
fn reads_from_replicas_work_from_the_first_request() {
    let (primary, replicas) = fleet(2, &[]);
    let _: () = redis::cmd("SET")
        .arg("r")
        .arg("v")
        .query(&mut primary.conn())
        .unwrap();
    let refs: Vec<&Redis> = replicas.iter().collect();
    for r in &refs {
        wait_for(
            "the replica to have the key",
            Duration::from_secs(5),
            || {
                let v: Option<String> = redis::cmd("GET").arg("r").query(&mut r.conn()).unwrap();
                v.ok_or("not yet".to_string())
            },
        );
    }
    let gets = |r: &Redis| -> u64 {
        let stats = try_info(r.port(), "commandstats").unwrap();
        info_field(&stats, "cmdstat_get")
            .and_then(|v| v.strip_prefix("calls=")?.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before: Vec<u64> = std::iter::once(&primary)
        .chain(&replicas)
        .map(gets)
        .collect();
    let body = format!(
        "{BACKEND}[replication]\nread_from = \"replica\"\n{}",
        shard_toml("a", &primary, &refs, "")
    );
    // The first request goes out as soon as the proxy accepts.
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let mut raw = Raw::connect(proxy.port());
    let errors = Mutex::new(BTreeSet::new());
    for _ in 0..2_000 {
        let reply = text(raw.call(&[b"GET", b"r"]));
        if reply != "$1\r\nv\r\n" {
            errors.lock().unwrap().insert(reply);
        }
    }
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "replies other than the value: {errors:?}"
    );
    let after: Vec<u64> = std::iter::once(&primary)
        .chain(&replicas)
        .map(gets)
        .collect();
    let served: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    println!("GETs served by the primary and the replicas: {served:?}");
    assert_eq!(served[0], 0, "the primary served reads");
    assert_eq!(served[1] + served[2], 2_000);
}
