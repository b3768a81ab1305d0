//! Replication, health checks and failover, against real redis-server and Redis Sentinel
//! processes. Every test starts its own fleet on free loopback ports; every process is killed
//! when the test ends, also when it panics (and shardis' log is printed then).
//!
//! - `redis_mode_failover_keeps_acknowledged_writes`: one client sends 20,000 numbered writes
//!   with `write_ack = "replicas:1"` over two shards, and shard a's primary is SIGKILLed at
//!   write 5,000. Shard b never fails a write; shard a acknowledges writes again within the
//!   failover bound (interval × failure_threshold + 2 s); writes fail only between the kill and
//!   that moment; every acknowledged write reads back afterwards; the epoch grew, a former
//!   replica is primary, shard b's epoch and primary did not change.
//! - `old_primary_rejoins_as_replica`: after a failover the old primary, restarted empty on its
//!   port, is made a replica of the new primary, ends up with exactly its data, and shardis
//!   shows one primary, the old one as a healthy replica and no second failover.
//! - `read_from_replica_serves_reads_from_replicas`: with `read_from = "replica"` the primary
//!   serves no GET and the replicas serve all of them; a replica SIGSTOPped (but not yet past
//!   `failure_threshold`) falls behind by more than `max_lag`, is shown `readable=no` and gets
//!   no reads, while reads keep going promptly to the other replica.
//! - `sentinel_mode_follows_switch_master`: with three sentinels, the same 20,000-write run:
//!   shardis follows Sentinel's promotion (within Sentinel's own time), loses no acknowledged
//!   write, and ends with Sentinel's primary and config epoch.
//! - `mirror_mode_failover_keeps_acknowledged_writes`: `replication = "mirror"` copies writes to
//!   standalone replicas (left standalone), and the 20,000-write run fails over to one of them
//!   without losing an acknowledged write; the old primary, back empty, is rebuilt as a copy.
//! - `unavailable_shard_fails_fast_and_others_serve`: a shard whose only node died answers
//!   `ERR shard 'b' unavailable ...` at once once it is marked down, the other shard serves
//!   throughout, and the shard serves again when its node comes back.
//! - `state_file_keeps_epoch_and_primary_across_restarts`: after a failover the state file is
//!   JSON with the shard's epoch and new primary; a restarted shardis (with the old primary
//!   back, empty, as a primary) starts from that epoch and primary, never points the new
//!   primary at the old one, turns the old one into a replica, and all data is readable.
//! - `a_big_write_cut_by_a_failover_gets_an_error_not_ok`: a 2 MiB SET passed on as it arrives
//!   has all of its value but the CRLF on the old primary when that is stopped and replaced;
//!   the CRLF sent after the failover is refused at the old primary's gate, so the client gets
//!   an error, not the OK the old primary (continued at once) would give, and the new primary
//!   then takes the same write.
//!
//! Replica reads are counted with `cmdstat_get` (INFO commandstats), not `keyspace_hits`:
//! shardis' health checks read the epoch key on every node (with MGET), a hit once it exists.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    info_field, keys_on, node_has_part, router, shard_info, shard_toml, try_connect, try_info,
    wait_for, wait_ready, LogOnPanic, Raw, Redis, Sentinel, ShardInfo, Shardis,
};
use redis::Commands;
use shardis::routing::Router;
use tempfile::TempDir;

const BACKEND: &str = "[backend]\nconnect_timeout = \"300ms\"\nreconnect_backoff = \"50ms\"\nreconnect_backoff_max = \"200ms\"\n";
const HEALTH: &str =
    "[health]\ninterval = \"100ms\"\nfailure_threshold = 3\nsuccess_threshold = 2\n";
/// interval × failure_threshold + 2 s, for `HEALTH`.
const FAILOVER_BOUND: Duration = Duration::from_millis(100 * 3 + 2_000);
const ACK1: &str = "write_ack = \"replicas:1\"\nack_timeout = \"1s\"\n";

/// What a writer does after a failed write, as a client backing off before its next request.
/// One writer can therefore fail at most one write per `BACKOFF` of a failover.
const BACKOFF: Duration = Duration::from_millis(20);
const WRITES: usize = 20_000;
const KILL_AT: usize = 5_000;

const MASTER: &str = "mymaster";
const SENTINEL_CONF: &str = "sentinel down-after-milliseconds mymaster 500\n\
                             sentinel failover-timeout mymaster 3000\n\
                             sentinel parallel-syncs mymaster 1\n";
/// From kill to the first acknowledged write in Sentinel mode. Measured by hand with redis 7.0
/// and the settings above: Sentinel names the new primary 1.9 to 2.2 s after a SIGKILL (15
/// runs, always at the first election). A split vote retries after 2 × failover-timeout plus
/// up to 1 s, about 9 s in all; 12 s leaves room for that and for a loaded machine.
const SENTINEL_BOUND: Duration = Duration::from_secs(12);

// ---- configuration ----

/// `[backend]`, `health`, `[replication]` with `replication` lines, then the shards.
fn config(health: &str, replication: &str, shards: &[String]) -> String {
    format!(
        "{BACKEND}{health}[replication]\n{replication}\n{}",
        shards.concat()
    )
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not host:port"))
}

fn text(reply: Vec<u8>) -> String {
    String::from_utf8_lossy(&reply).into_owned()
}

/// Shard `name` as INFO shows it now, checked to have failed over since `before`: a higher
/// epoch, and one of `replicas` as primary.
fn failed_over(port: u16, name: &str, before: &ShardInfo, replicas: &[&Redis]) -> ShardInfo {
    let after = shard_info(port, name);
    assert!(
        after.epoch > before.epoch,
        "epoch {} -> {}",
        before.epoch,
        after.epoch
    );
    assert!(
        replicas.iter().any(|r| after.primary == r.addr()),
        "the primary is {}, not a former replica",
        after.primary
    );
    after
}

// ---- waiting for a state ----

/// Waits until writes to each shard are acknowledged (with the replicas `write_ack` asks for).
fn wait_writable(proxy: &Shardis, router: &Router, shards: usize) {
    let mut raw = Raw::connect(proxy.port());
    for shard in 0..shards {
        let key = keys_on(router, shard, "ready:", 1).remove(0);
        wait_for(
            &format!("a write to shard {shard} through shardis"),
            Duration::from_secs(10),
            || {
                let reply = text(raw.call(&[b"SET", key.as_bytes(), b"1"]));
                if reply == "+OK\r\n" {
                    Ok(())
                } else {
                    Err(reply)
                }
            },
        );
    }
}

/// Waits until shardis has a primary for shard `name` other than `old`.
fn wait_failover(proxy: &Shardis, name: &str, old: &str, within: Duration) -> ShardInfo {
    wait_for(
        &format!("shard {name} failing over from {old}"),
        within,
        || {
            let s = shard_info(proxy.port(), name);
            if s.primary != old && s.state == "up" {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
}

/// A node's INFO replication, or an error naming why not.
fn replication(port: u16) -> Result<String, String> {
    try_info(port, "replication").ok_or_else(|| format!("127.0.0.1:{port} does not answer"))
}

/// The port of the primary an INFO replication text follows.
fn master_port(info: &str) -> Option<u16> {
    info_field(info, "master_port").and_then(|p| p.parse().ok())
}

/// GET commands the node has run.
fn gets_served(r: &Redis) -> u64 {
    let stats = try_info(r.port(), "commandstats")
        .unwrap_or_else(|| panic!("{} does not answer INFO commandstats", r.addr()));
    // cmdstat_get:calls=12,usec=...
    info_field(&stats, "cmdstat_get")
        .and_then(|v| v.strip_prefix("calls=")?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

// ---- reading and writing through shardis ----

/// GETs every key through shardis in pipelined batches: `None` for a missing key. An error
/// reply fails the test.
fn get_all(proxy_port: u16, keys: &[String]) -> Vec<Option<String>> {
    let mut raw = Raw::connect(proxy_port);
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1_000) {
        let batch: Vec<u8> = chunk
            .iter()
            .flat_map(|k| common::encode(&[b"GET", k.as_bytes()]))
            .collect();
        raw.send(&batch);
        for key in chunk {
            let reply = text(raw.reply());
            let value = match reply.split_once("\r\n") {
                Some(("$-1", _)) => None,
                Some((len, rest)) if len.starts_with('$') => {
                    Some(rest.trim_end_matches("\r\n").to_string())
                }
                _ => panic!("GET {key} through shardis: {reply:?}"),
            };
            values.push(value);
        }
    }
    values
}

/// SETs `{prefix}{i}` to `i` for i in 0..n through shardis; each must be acknowledged.
fn set_all(proxy: &Shardis, prefix: &str, n: usize) {
    let mut raw = Raw::connect(proxy.port());
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let reply = text(raw.call(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]));
        assert_eq!(reply, "+OK\r\n", "SET {key}");
    }
}

/// `{prefix}{i}` reads `i` through shardis for every i in 0..n.
fn assert_all(proxy_port: u16, prefix: &str, n: usize) {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for (i, value) in get_all(proxy_port, &keys).into_iter().enumerate() {
        assert_eq!(value, Some(i.to_string()), "{prefix}{i} through shardis");
    }
}

/// Every string key of a node and its value (SCAN, then MGET).
fn dump(port: u16) -> Result<BTreeMap<String, String>, String> {
    let mut conn = try_connect(port).ok_or_else(|| format!("127.0.0.1:{port} is down"))?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1_000)
            .query(&mut conn)
            .map_err(|e| format!("SCAN on 127.0.0.1:{port}: {e}"))?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(1_000) {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut conn)
            .map_err(|e| format!("MGET on 127.0.0.1:{port}: {e}"))?;
        for (k, v) in chunk.iter().zip(values) {
            if let Some(v) = v {
                out.insert(k.clone(), v);
            }
        }
    }
    Ok(out)
}

// ---- the numbered-writes run ----

struct Write {
    n: usize,
    shard: usize,
    started: Instant,
    done: Instant,
    /// `None` when acknowledged (`+OK`), else the reply.
    error: Option<String>,
}

struct Run {
    writes: Vec<Write>,
    killed_at: Instant,
}

fn run_key(n: usize) -> String {
    format!("w:{n}")
}

/// One client writes `SET w:{n} n` for n in 0..WRITES, one at a time, and calls `kill` just
/// before write `KILL_AT`. Records each write's outcome and times.
fn write_run(proxy: &Shardis, router: &Router, kill: impl FnOnce()) -> Run {
    let mut raw = Raw::connect(proxy.port());
    let mut kill = Some(kill);
    let mut killed_at = None;
    let mut writes = Vec::with_capacity(WRITES);
    for n in 0..WRITES {
        if n == KILL_AT {
            if let Some(kill) = kill.take() {
                kill();
            }
            killed_at = Some(Instant::now());
        }
        let key = run_key(n);
        let started = Instant::now();
        let reply = text(raw.call(&[b"SET", key.as_bytes(), n.to_string().as_bytes()]));
        let done = Instant::now();
        let error = (reply != "+OK\r\n").then(|| reply.trim_end().to_string());
        if error.is_some() {
            std::thread::sleep(BACKOFF);
        }
        writes.push(Write {
            n,
            shard: router.shard_of(key.as_bytes()),
            started,
            done,
            error,
        });
    }
    Run {
        writes,
        killed_at: killed_at.expect("KILL_AT < WRITES"),
    }
}

/// How long after a failed-over shard acknowledges writes again its writes may still fail,
/// while the replicas settle behind the new primary, when shardis repoints them itself.
const SETTLE: Duration = Duration::from_millis(500);

/// The same when Sentinel repoints them: it reconfigures the remaining replica only after its
/// failover ends, and that replica's full sync leaves `replicas:1` without an acknowledgement
/// until it is done (1.9 s after recovery, seen with two copies of the suite running at once).
const SENTINEL_SETTLE: Duration = Duration::from_secs(5);

/// Checks a run against the failover contract for shard number `failed`: nothing fails but
/// that shard's writes from the kill until, within `bound`, it acknowledges writes again, and
/// for `settle` after that.
fn check_run(run: &Run, failed: usize, bound: Duration, settle: Duration) {
    let killed_at = run.killed_at;
    if let Some(w) = run
        .writes
        .iter()
        .find(|w| w.error.is_some() && (w.shard != failed || w.started < killed_at))
    {
        panic!(
            "write {} (shard {}) failed outside the failover: {}",
            w.n,
            w.shard,
            w.error.as_deref().unwrap_or_default()
        );
    }
    let first_ok = run
        .writes
        .iter()
        .find(|w| w.shard == failed && w.started >= killed_at && w.error.is_none())
        .unwrap_or_else(|| panic!("shard {failed} acknowledged no write after the kill"));
    let recovery = first_ok.done - killed_at;
    let failures: Vec<&Write> = run.writes.iter().filter(|w| w.error.is_some()).collect();
    let slowest = run
        .writes
        .iter()
        .map(|w| w.done - w.started)
        .max()
        .unwrap_or_default();
    let mut reasons: Vec<&str> = failures.iter().filter_map(|w| w.error.as_deref()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    println!(
        "{} writes: {} acknowledged, {} failed; first acknowledged write on the failed shard \
         {recovery:?} after the kill (bound {bound:?}); slowest write {slowest:?}; errors: {:?}",
        run.writes.len(),
        run.writes.len() - failures.len(),
        failures.len(),
        &reasons[..reasons.len().min(5)]
    );
    assert!(
        recovery <= bound,
        "the shard took {recovery:?} to acknowledge a write after its primary was killed (bound {bound:?})"
    );
    // Failures belong to the failover window: once the shard acknowledged writes again it
    // keeps doing so, but for `settle` (the replicas settling behind the new primary).
    let window_end = first_ok.done + settle;
    if let Some(w) = failures.iter().find(|w| w.started > window_end) {
        panic!(
            "write {} failed {:?} after the shard had recovered: {}",
            w.n,
            w.started - first_ok.done,
            w.error.as_deref().unwrap_or_default()
        );
    }
    // Each failure costs the one writer at least BACKOFF inside a window of at most
    // bound + settle.
    let most = ((bound + settle).as_millis() / BACKOFF.as_millis()) as usize + 1;
    assert!(
        failures.len() <= most,
        "{} writes failed, more than {most}",
        failures.len()
    );
}

/// Every acknowledged write of the run reads back through shardis with its value; a failed
/// one is absent or has its value (it may have been applied before the failure was noticed).
fn check_acknowledged_writes(proxy_port: u16, run: &Run) {
    let keys: Vec<String> = run.writes.iter().map(|w| run_key(w.n)).collect();
    let values = get_all(proxy_port, &keys);
    let mut lost = Vec::new();
    for (w, value) in run.writes.iter().zip(values) {
        let want = w.n.to_string();
        match &w.error {
            None if value.as_deref() != Some(want.as_str()) => lost.push((w.n, value)),
            Some(e) => assert!(
                value.is_none() || value.as_deref() == Some(want.as_str()),
                "failed write {} ({e}) reads {value:?}",
                w.n
            ),
            None => {}
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes are lost or wrong, the first ones (n, value read): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

// ---- the tests ----

#[test]
fn redis_mode_failover_keeps_acknowledged_writes() {
    let mut a = Redis::start();
    let a1 = Redis::start();
    let a2 = Redis::start();
    let b = Redis::start();
    let b1 = Redis::start();
    // Replicas start standalone: shardis points them at their primaries.
    let body = config(
        HEALTH,
        ACK1,
        &[
            shard_toml("a", &a, &[&a1, &a2], ""),
            shard_toml("b", &b, &[&b1], ""),
        ],
    );
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &a.addr(), 2);
    let b_before = wait_ready(&proxy, "b", &b.addr(), 1);
    wait_writable(&proxy, &router, 2);

    let run = write_run(&proxy, &router, || a.proc.kill());
    check_run(&run, 0, FAILOVER_BOUND, SETTLE);
    check_acknowledged_writes(proxy.port(), &run);

    let after = failed_over(proxy.port(), "a", &before, &[&a1, &a2]);
    assert_eq!(after.failovers, before.failovers + 1, "{after:?}");
    assert_eq!(after.nodes[0].addr, after.primary, "{after:?}");
    assert_eq!(after.nodes[0].role, "primary", "{after:?}");
    let promoted = replication(port_of(&after.primary)).unwrap();
    assert_eq!(
        info_field(&promoted, "role").as_deref(),
        Some("master"),
        "{promoted}"
    );
    // Shard b was not touched.
    let b_after = shard_info(proxy.port(), "b");
    assert_eq!(
        (b_after.epoch, b_after.primary.as_str(), b_after.failovers),
        (b_before.epoch, b.addr().as_str(), b_before.failovers)
    );
}

#[test]
fn old_primary_rejoins_as_replica() {
    let mut p = Redis::start();
    let r1 = Redis::start();
    let r2 = Redis::start();
    let body = config(HEALTH, ACK1, &[shard_toml("a", &p, &[&r1, &r2], "")]);
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    wait_ready(&proxy, "a", &p.addr(), 2);
    wait_writable(&proxy, &router, 1);
    set_all(&proxy, "j:", 2_000);

    let old = p.addr();
    p.proc.kill();
    let after = wait_failover(&proxy, "a", &old, FAILOVER_BOUND + Duration::from_secs(3));
    let new_port = port_of(&after.primary);
    wait_writable(&proxy, &router, 1);
    set_all(&proxy, "k:", 1_000);

    // Back on its port, empty, and answering as a primary: shardis makes it a replica.
    p.restart();
    wait_for(
        "the old primary to replicate from the new one",
        Duration::from_secs(10),
        || {
            let info = replication(p.port())?;
            let follows = info_field(&info, "role").as_deref() == Some("slave")
                && master_port(&info) == Some(new_port)
                && info_field(&info, "master_link_status").as_deref() == Some("up");
            if follows {
                Ok(())
            } else {
                Err(info)
            }
        },
    );
    // Exactly the new primary's data (writes have stopped).
    let data = wait_for(
        "the old primary to hold the new primary's data",
        Duration::from_secs(10),
        || {
            let primary = dump(new_port)?;
            let rejoined = dump(p.port())?;
            if primary == rejoined {
                Ok(primary)
            } else {
                let differ = primary
                    .iter()
                    .filter(|(k, v)| rejoined.get(*k) != Some(*v))
                    .count();
                Err(format!(
                    "{} keys on the primary, {} on the old primary, {differ} of the primary's missing or different",
                    primary.len(),
                    rejoined.len()
                ))
            }
        },
    );
    for i in 0..2_000 {
        assert_eq!(data.get(&format!("j:{i}")), Some(&i.to_string()), "j:{i}");
    }
    for i in 0..1_000 {
        assert_eq!(data.get(&format!("k:{i}")), Some(&i.to_string()), "k:{i}");
    }

    let s = common::wait_node(
        proxy.port(),
        "a",
        &old,
        "shardis to show the old primary as a healthy replica",
        Duration::from_secs(5),
        |n| n.role == "replica" && n.health == "up",
    );
    let primaries: Vec<&str> = s
        .nodes
        .iter()
        .filter(|n| n.role == "primary")
        .map(|n| n.addr.as_str())
        .collect();
    assert_eq!(primaries, [after.primary.as_str()], "{s:?}");
    assert_eq!(
        (s.epoch, s.failovers),
        (after.epoch, after.failovers),
        "no second failover: {s:?}"
    );
}

#[test]
fn read_from_replica_serves_reads_from_replicas() {
    let p = Redis::start();
    let ra = Redis::start();
    let rb = Redis::start();
    // failure_threshold 50: a stopped replica stays "up" for about 5 s, so only its lag can
    // keep reads away from it.
    let health = "[health]\ninterval = \"100ms\"\nfailure_threshold = 50\nsuccess_threshold = 2\n";
    let replication_conf = "read_from = \"replica\"\nmax_lag = \"300ms\"\n";
    let body = config(
        health,
        replication_conf,
        &[shard_toml("a", &p, &[&ra, &rb], "")],
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    wait_ready(&proxy, "a", &p.addr(), 2);
    let mut conn = proxy.conn();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..500 {
        let _: () = conn.set(format!("r:{i}"), i).unwrap();
    }
    wait_for("the replicas to catch up", Duration::from_secs(10), || {
        let primary = replication(p.port())?;
        let want = info_field(&primary, "master_repl_offset");
        for r in [&ra, &rb] {
            let info = replication(r.port())?;
            if info_field(&info, "slave_repl_offset") != want {
                return Err(format!("primary {primary}\nreplica {info}"));
            }
        }
        let s = shard_info(proxy.port(), "a");
        if s.replicas().iter().all(|n| n.readable) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });

    let hits = || [gets_served(&p), gets_served(&ra), gets_served(&rb)];
    let before = hits();
    for j in 0..1_000 {
        let i = j % 500;
        let v: i64 = conn.get(format!("r:{i}")).unwrap();
        assert_eq!(v, i, "r:{i}");
    }
    let after = hits();
    println!(
        "1,000 GETs: primary {}, replica A {}, replica B {}",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2]
    );
    assert_eq!(after[0], before[0], "the primary served reads");
    assert_eq!(
        after[1] - before[1] + after[2] - before[2],
        1_000,
        "the replicas served {} and {} of 1,000 reads",
        after[1] - before[1],
        after[2] - before[2]
    );

    // Replica B stops (SIGCONT when `paused` drops, also on a panic) while writes go on.
    let before = hits();
    let paused = rb.proc.pause();
    let writing = Instant::now();
    let mut i = 0;
    while writing.elapsed() < Duration::from_secs(1) {
        let _: () = conn.set(format!("lag:{i}"), i).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = common::wait_node(
        proxy.port(),
        "a",
        &rb.addr(),
        "shardis to stop reading from the stopped replica",
        Duration::from_secs(3),
        |n| !n.readable,
    );
    let b = s.node(&rb.addr()).unwrap();
    println!("stopped replica after {:?}: {b:?}", writing.elapsed());
    assert_eq!(
        b.health, "up",
        "the stopped replica must be skipped for its lag, before it is marked down: {s:?}"
    );
    assert!(b.lag_ms >= 300, "{s:?}");
    assert!(s.node(&ra.addr()).is_some_and(|n| n.readable), "{s:?}");

    let reading = Instant::now();
    for i in 0..500 {
        let v: i64 = conn.get(format!("r:{i}")).unwrap();
        assert_eq!(v, i, "r:{i}");
    }
    let took = reading.elapsed();
    println!("500 GETs with replica B stopped: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "500 GETs took {took:?} with replica B stopped"
    );
    let s = shard_info(proxy.port(), "a");
    assert!(
        s.node(&rb.addr()).is_some_and(|n| !n.readable),
        "replica B readable again while still stopped: {s:?}"
    );
    let (p_hits, a_hits) = (gets_served(&p), gets_served(&ra));
    drop(paused);
    // Anything sent to B while it was stopped runs now.
    std::thread::sleep(Duration::from_millis(300));
    let b_hits = gets_served(&rb);
    assert_eq!(b_hits, before[2], "the stopped replica got reads");
    assert_eq!(a_hits - before[1], 500, "replica A served the reads");
    assert_eq!(p_hits, before[0], "the primary served reads");
}

#[test]
fn sentinel_mode_follows_switch_master() {
    let mut p = Redis::start();
    let r1 = Redis::replica_of(&p);
    let r2 = Redis::replica_of(&p);
    // Sentinel finds replicas in the primary's INFO, which it reads every 10 s once running:
    // start it when they are attached, so its first look finds them.
    wait_for("both replicas online", Duration::from_secs(10), || {
        let info = replication(p.port())?;
        if info.matches("state=online").count() == 2 {
            Ok(())
        } else {
            Err(info)
        }
    });
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start(MASTER, &p, 2, SENTINEL_CONF))
        .collect();
    let _sentinel_logs: Vec<LogOnPanic> = sentinels
        .iter()
        .map(|s| LogOnPanic::new(&format!("sentinel {}", s.addr()), &s.log_path()))
        .collect();
    wait_for(
        "the sentinels to know each other and both replicas",
        Duration::from_secs(20),
        || {
            for s in &sentinels {
                let m = s
                    .master(MASTER)
                    .ok_or_else(|| format!("sentinel {} does not answer", s.addr()))?;
                let field = |k: &str| m.get(k).map(String::as_str);
                if field("flags") != Some("master")
                    || field("num-other-sentinels") != Some("2")
                    || field("num-slaves") != Some("2")
                {
                    return Err(format!("sentinel {}: {m:?}", s.addr()));
                }
            }
            Ok(())
        },
    );

    let addresses: Vec<String> = sentinels
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    let shard = format!(
        "[[shards]]\nname = \"a\"\nprimary = \"{}\"\nsentinel = {{ master = \"{MASTER}\", addresses = [{}] }}\n",
        p.addr(),
        addresses.join(", ")
    );
    let body = config(HEALTH, ACK1, &[shard]);
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 2);
    wait_writable(&proxy, &router, 1);

    let run = write_run(&proxy, &router, || p.proc.kill());
    check_run(&run, 0, SENTINEL_BOUND, SENTINEL_SETTLE);
    check_acknowledged_writes(proxy.port(), &run);

    // shardis ends where Sentinel is: its primary, its config epoch.
    let (epoch, primary) = wait_for(
        "shardis to show Sentinel's primary and config epoch",
        Duration::from_secs(5),
        || {
            let m = sentinels[0]
                .master(MASTER)
                .ok_or("the sentinel does not answer")?;
            let epoch: u64 = m
                .get("config-epoch")
                .and_then(|e| e.parse().ok())
                .ok_or_else(|| format!("no config-epoch: {m:?}"))?;
            let primary = sentinels[0]
                .master_addr(MASTER)
                .ok_or("no GET-MASTER-ADDR-BY-NAME answer")?;
            let s = shard_info(proxy.port(), "a");
            if s.epoch == epoch && s.primary == primary {
                Ok((epoch, primary))
            } else {
                Err(format!(
                    "Sentinel: epoch {epoch}, primary {primary}; shardis: {s:?}"
                ))
            }
        },
    );
    assert!(epoch > before.epoch, "epoch {} -> {epoch}", before.epoch);
    assert!(
        primary == r1.addr() || primary == r2.addr(),
        "Sentinel's primary {primary} is not a former replica"
    );
}

#[test]
fn mirror_mode_failover_keeps_acknowledged_writes() {
    let mut p = Redis::start();
    let m1 = Redis::start();
    let m2 = Redis::start();
    let body = config(
        HEALTH,
        ACK1,
        &[shard_toml(
            "a",
            &p,
            &[&m1, &m2],
            "replication = \"mirror\"\n",
        )],
    );
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 2);
    wait_writable(&proxy, &router, 1);

    // Plain mirroring: each replica gets every write (the second one maybe a little later).
    set_all(&proxy, "m:", 1_000);
    let keys: Vec<String> = (0..1_000).map(|i| format!("m:{i}")).collect();
    for r in [&m1, &m2] {
        wait_for(
            &format!("replica {} to hold the 1,000 mirrored keys", r.addr()),
            Duration::from_secs(5),
            || {
                let mut conn = try_connect(r.port()).ok_or("down")?;
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query(&mut conn)
                    .map_err(|e| e.to_string())?;
                let wrong = values
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| v.as_deref() != Some(i.to_string().as_str()))
                    .count();
                if wrong == 0 {
                    Ok(())
                } else {
                    Err(format!("{wrong} keys missing or wrong"))
                }
            },
        );
        // Mirroring leaves them standalone servers.
        let info = replication(r.port()).unwrap();
        assert_eq!(
            info_field(&info, "role").as_deref(),
            Some("master"),
            "{info}"
        );
    }

    let run = write_run(&proxy, &router, || p.proc.kill());
    check_run(&run, 0, FAILOVER_BOUND, SETTLE);
    check_acknowledged_writes(proxy.port(), &run);
    assert_all(proxy.port(), "m:", 1_000);

    let after = failed_over(proxy.port(), "a", &before, &[&m1, &m2]);

    // The old primary comes back empty: it is rebuilt as a copy of the new one and serves
    // reads again, with the new primary's data.
    p.restart();
    common::wait_node(
        proxy.port(),
        "a",
        &p.addr(),
        "the old primary to be rebuilt as a readable copy",
        Duration::from_secs(20),
        |n| n.readable && n.health == "up",
    );
    let primary = dump(port_of(&after.primary)).unwrap();
    let rebuilt = dump(p.port()).unwrap();
    assert_eq!(rebuilt.len(), primary.len(), "keys on the rebuilt copy");
    assert!(
        rebuilt == primary,
        "the rebuilt copy differs from the primary"
    );
}

#[test]
fn unavailable_shard_fails_fast_and_others_serve() {
    let a = Redis::start();
    let mut b = Redis::start();
    let body = config(
        HEALTH,
        "",
        &[shard_toml("a", &a, &[], ""), shard_toml("b", &b, &[], "")],
    );
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    wait_ready(&proxy, "a", &a.addr(), 0);
    wait_ready(&proxy, "b", &b.addr(), 0);
    let on_a = keys_on(&router, 0, "u:", 20);
    let on_b = keys_on(&router, 1, "u:", 20);
    let mut raw = Raw::connect(proxy.port());
    for k in on_a.iter().chain(&on_b) {
        assert_eq!(
            text(raw.call(&[b"SET", k.as_bytes(), k.as_bytes()])),
            "+OK\r\n"
        );
    }

    b.proc.kill();
    let killed = Instant::now();
    // The first request after the kill is answered (with shard b's error) within the bound.
    let reply = text(raw.call(&[b"GET", on_b[0].as_bytes()]));
    let first = killed.elapsed();
    assert!(reply.starts_with("-ERR shard 'b'"), "{reply}");
    assert!(
        first <= FAILOVER_BOUND + Duration::from_secs(1),
        "first request after the kill answered after {first:?}"
    );
    // Down by the health checks (INFO's `state` also says down as soon as the connections
    // are refused; the fast failure comes with the health verdict).
    wait_for("shard b marked down", FAILOVER_BOUND, || {
        let s = shard_info(proxy.port(), "b");
        if s.state == "down" && s.node(&b.addr()).is_some_and(|n| n.health == "down") {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    println!(
        "first request after the kill answered in {first:?}, shard down after {:?}",
        killed.elapsed()
    );

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for k in &on_b {
            let started = Instant::now();
            let reply = text(raw.call(&[b"GET", k.as_bytes()]));
            let took = started.elapsed();
            slowest = slowest.max(took);
            assert!(reply.starts_with("-ERR shard 'b' unavailable"), "{reply}");
            assert!(
                took < Duration::from_secs(1),
                "GET {k} took {took:?}: {reply}"
            );
        }
        for k in &on_a {
            let reply = text(raw.call(&[b"GET", k.as_bytes()]));
            assert_eq!(reply, format!("${}\r\n{k}\r\n", k.len()));
        }
    }
    println!("slowest refusal by the down shard: {slowest:?}");
    assert_eq!(shard_info(proxy.port(), "a").state, "up");

    // Its node back (empty): the shard serves again.
    b.restart();
    wait_for("shard b serving again", Duration::from_secs(5), || {
        let reply = text(raw.call(&[b"SET", on_b[0].as_bytes(), b"back"]));
        if reply == "+OK\r\n" {
            Ok(())
        } else {
            Err(reply)
        }
    });
}

/// Finds shard `name` with `epoch` anywhere in a JSON state file: under a key `name`, or in
/// an object whose `name` is `name`.
fn json_has_epoch(v: &serde_json::Value, name: &str, epoch: u64) -> bool {
    let epoch_of = |o: &serde_json::Value| o.get("epoch").and_then(serde_json::Value::as_u64);
    match v {
        serde_json::Value::Object(map) => {
            map.get(name).is_some_and(|s| epoch_of(s) == Some(epoch))
                || (map.get("name").and_then(serde_json::Value::as_str) == Some(name)
                    && epoch_of(v) == Some(epoch))
                || map.values().any(|c| json_has_epoch(c, name, epoch))
        }
        serde_json::Value::Array(items) => items.iter().any(|c| json_has_epoch(c, name, epoch)),
        _ => false,
    }
}

#[test]
fn state_file_keeps_epoch_and_primary_across_restarts() {
    let state_dir = TempDir::new().unwrap();
    let state_path = state_dir.path().join("shardis.state");
    let mut p = Redis::start();
    let r1 = Redis::start();
    let r2 = Redis::start();
    let replication_conf = format!("{ACK1}state_file = \"{}\"\n", state_path.display());
    let body = config(
        HEALTH,
        &replication_conf,
        &[shard_toml("a", &p, &[&r1, &r2], "")],
    );
    let router = router(&body);

    let first = Shardis::start_with(&body);
    let log = first.log_on_panic();
    wait_ready(&first, "a", &p.addr(), 2);
    wait_writable(&first, &router, 1);
    set_all(&first, "s:", 1_000);
    let old = p.addr();
    p.proc.kill();
    let after = wait_failover(&first, "a", &old, FAILOVER_BOUND + Duration::from_secs(3));
    let new_port = port_of(&after.primary);
    // Recorded before writes went to the new primary, so already there.
    let state = std::fs::read_to_string(&state_path)
        .unwrap_or_else(|e| panic!("state file {}: {e}", state_path.display()));
    let json: serde_json::Value = serde_json::from_str(&state)
        .unwrap_or_else(|e| panic!("state file is not JSON ({e}): {state}"));
    assert!(
        json_has_epoch(&json, "a", after.epoch),
        "no epoch {} for shard a in the state file: {state}",
        after.epoch
    );
    assert!(
        state.contains(&after.primary),
        "the state file does not name the new primary {}: {state}",
        after.primary
    );
    wait_writable(&first, &router, 1);
    set_all(&first, "t:", 500);
    drop(log);
    drop(first);

    // The old primary comes back empty, answering as a primary, before shardis restarts.
    p.restart();
    let info = replication(p.port()).unwrap();
    assert_eq!(
        info_field(&info, "role").as_deref(),
        Some("master"),
        "{info}"
    );

    let second = Shardis::start_with(&body);
    let _log = second.log_on_panic();
    let check = |when: &str| {
        let s = shard_info(second.port(), "a");
        assert_eq!(
            (s.epoch, s.primary.as_str()),
            (after.epoch, after.primary.as_str()),
            "{when}: the restarted shardis must keep the recorded epoch and primary: {s:?}"
        );
    };
    check("at start");
    // 15 health intervals: time enough to have sent a wrong REPLICAOF.
    std::thread::sleep(Duration::from_millis(1_500));
    check("1.5 s after start");
    let info = replication(new_port).unwrap();
    assert_eq!(
        info_field(&info, "role").as_deref(),
        Some("master"),
        "the new primary was pointed elsewhere: {info}"
    );
    wait_for(
        "the old primary to replicate from the new one",
        Duration::from_secs(10),
        || {
            let info = replication(p.port())?;
            if info_field(&info, "role").as_deref() == Some("slave")
                && master_port(&info) == Some(new_port)
            {
                Ok(())
            } else {
                Err(info)
            }
        },
    );
    assert_all(second.port(), "s:", 1_000);
    assert_all(second.port(), "t:", 500);
}

/// A SET of a 2 MiB value of `byte`s sent in two parts 200 ms apart, so that the proxy passes
/// it on as it arrives where the shard allows that (redis mode); its reply.
fn big_set_in_two(raw: &mut Raw, key: &str, byte: u8) -> String {
    const LEN: usize = 2 << 20;
    let head = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${LEN}\r\n", key.len());
    raw.send(head.as_bytes());
    raw.send(&vec![byte; LEN / 2]);
    std::thread::sleep(Duration::from_millis(200));
    raw.send(&[vec![byte; LEN - LEN / 2], b"\r\n".to_vec()].concat());
    text(raw.reply())
}

/// `write_ack = "replicas:1"` never answers OK for a write no replica has: with the only
/// replica stopped (redis mode: WAIT returns 0) or stale (mirror mode: no copy confirmed),
/// writes get the shortfall error, and OK again once the replica is back. Big values passed on
/// as they arrive too.
#[test]
fn unacknowledged_writes_get_an_error_not_ok() {
    for mode in ["redis", "mirror"] {
        let primary = Redis::start();
        let replica = Redis::start();
        let extra = format!("replication = \"{mode}\"\n");
        let body = config(
            // A stopped replica stays "up" for the whole test: only WAIT / the copies notice.
            "[health]\ninterval = \"100ms\"\nfailure_threshold = 100\n",
            "write_ack = \"replicas:1\"\nack_timeout = \"300ms\"\n",
            &[shard_toml("a", &primary, &[&replica], &extra)],
        );
        let router = router(&body);
        let proxy = Shardis::start_with(&body);
        let _log = proxy.log_on_panic();
        wait_ready(&proxy, "a", &primary.addr(), 1);
        wait_writable(&proxy, &router, 1);
        let mut raw = Raw::connect(proxy.port());
        assert_eq!(text(raw.call(&[b"SET", b"k", b"1"])), "+OK\r\n", "{mode}");

        let paused = replica.proc.pause();
        let reply = text(raw.call(&[b"SET", b"k", b"2"]));
        assert!(
            reply.starts_with("-ERR shard 'a' node ")
                && reply.contains("write not acknowledged by enough replicas (0 of 1"),
            "{mode}: {reply}"
        );
        // The write did reach the primary: the error says so, and it is there.
        let on_primary: String = primary.conn().get("k").unwrap();
        assert_eq!(on_primary, "2", "{mode}");
        let reply = big_set_in_two(&mut raw, "big", b'2');
        assert!(
            reply.contains("write not acknowledged by enough replicas (0 of 1"),
            "{mode}: a big SET: {reply}"
        );
        let on_primary: String = primary.conn().getrange("big", 0, 0).unwrap();
        assert_eq!(on_primary, "2", "{mode}");
        drop(paused);

        // Back: redis mode at once; mirror mode once the replica has been resynced.
        wait_ready(&proxy, "a", &primary.addr(), 1);
        wait_writable(&proxy, &router, 1);
        assert_eq!(text(raw.call(&[b"SET", b"k", b"3"])), "+OK\r\n", "{mode}");
        let on_replica: String = replica.conn().get("k").unwrap();
        assert_eq!(on_replica, "3", "{mode}");
        assert_eq!(big_set_in_two(&mut raw, "big", b'3'), "+OK\r\n", "{mode}");
        let on_replica: (usize, String) = (
            replica.conn().strlen("big").unwrap(),
            replica.conn().getrange("big", -1, -1).unwrap(),
        );
        assert_eq!(on_replica, (2 << 20, "3".to_string()), "{mode}");
    }
}

/// A failover in the middle of a big write that is passed on as it arrives. The old primary
/// has the whole value but its end (the CRLF) when it stops and shard a fails over; the client
/// then sends the end, and the old primary is continued at once, a primary still, able to run
/// the SET and answer OK. The client must get an error: the end goes through the old
/// primary's closed gate, and the new primary never saw the value.
#[test]
fn a_big_write_cut_by_a_failover_gets_an_error_not_ok() {
    const LEN: usize = 2 << 20;
    let primary = Redis::start();
    let replica = Redis::start();
    // A stopped primary is replaced once its replica has not heard from it for down_after.
    let health = format!("{HEALTH}down_after = \"1s\"\n");
    let body = config(&health, "", &[shard_toml("a", &primary, &[&replica], "")]);
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &primary.addr(), 1);
    wait_writable(&proxy, &router, 1);

    let mut raw = Raw::connect(proxy.port());
    raw.send(format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${LEN}\r\n").as_bytes());
    raw.send(&vec![b'x'; LEN]);
    // Passed on: the old primary holds all of the value, waiting for its end.
    node_has_part(&primary, LEN);
    let paused = primary.proc.pause();
    wait_failover(&proxy, "a", &primary.addr(), Duration::from_secs(10));
    failed_over(proxy.port(), "a", &before, &[&replica]);
    raw.send(b"\r\n");
    drop(paused);
    let reply = text(raw.reply());
    assert!(
        reply.starts_with("-ERR shard 'a' node ")
            && reply.contains("no longer the shard's primary"),
        "the big SET after the failover: {reply}"
    );
    let on_new: usize = replica.conn().strlen("big").unwrap();
    assert_eq!(on_new, 0, "the value is on the new primary");
    // The request was read whole, so the connection goes on: the same write is acknowledged,
    // and on the new primary.
    let value = vec![b'y'; LEN];
    assert_eq!(text(raw.call(&[b"SET", b"big", &value])), "+OK\r\n");
    let on_new: usize = replica.conn().strlen("big").unwrap();
    assert_eq!(on_new, LEN);
}
