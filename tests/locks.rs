//! Fenced locks (`[locks]`, `LOCK.*`, `FENCE.ADVANCE`, `FENCED`) through shardis, against real
//! redis-server processes. Every test starts its own fleet on free loopback ports; every
//! process is killed when the test ends, also when it panics (and shardis' log is printed then).
//!
//! - `contention_32_clients_100_keys_20000_grants`: two shards, each a primary with one
//!   replica (so every grant waits for it). 32 clients share a budget of exactly 20,000 grants
//!   over 100 lock keys; a quarter of them take locks with plain `SET key owner NX PX` +
//!   `LOCK.TOKEN` and release with the Redis docs' script, the others with `LOCK.ACQUIRE` /
//!   `LOCK.RELEASE`. Each holder appends its token to the key's list with `FENCED ... RPUSH`.
//!   Exactly 20,000 grants; per key the tokens strictly increase in grant order (no duplicate),
//!   each hold (grant reply .. release sent) ends before the next grant's reply; each key's
//!   list holds exactly its tokens in increasing order (every fenced write landed, none out of
//!   order); every token carries its shard's INFO epoch in its high bits.
//! - `paused_holder_is_fenced_off`: the textbook case. A holder that stalls past its lease is
//!   overtaken by a second client with a higher token; the stale holder's fenced write gets
//!   `STALETOKEN` and changes nothing; its EXTEND and RELEASE get 0. Also LOCK.STATUS,
//!   LOCK.TOKEN, re-acquiring by the holder (same token, fresh TTL), LOCK.EXTEND,
//!   FENCE.ADVANCE, and a grant after a release being higher still.
//! - `lock_commands_refuse_bad_input`: TTLs over `max_ttl` or not positive, non-integer tokens,
//!   a fenced command touching a key of another shard (`CROSSSLOT`, nothing written), a `SET`
//!   under the prefix without NX or without a TTL, wrong arities: all refused, while `SET`
//!   outside the prefix stays a plain SET. shardis' own `__shardis__:` keys exist on the nodes
//!   but never show in KEYS, SCAN or DBSIZE through shardis, and a command naming one is refused.
//! - `tokens_grow_across_a_failover_that_lost_grants`: shard a's replica is stopped and cut off,
//!   so the grants of 50 more rounds exist on the primary only; then the primary is SIGKILLed.
//!   shardis refuses to promote the stale replica; an operator does, by hand, and shardis
//!   follows it in a new epoch. No lock is granted until `max_ttl` has passed since then
//!   (`TRYAGAIN` meanwhile), every token granted after the failover is above every token
//!   granted before it and carries the new epoch, while a naive `INCR` token on the same data
//!   goes backwards.
//! - `mirror_shard_copies_lock_state_and_fails_over`: with `replication = "mirror"` the lock
//!   scripts are copied to the replica, which ends up with the same lock keys, lock state and
//!   epoch record; after the primary dies, the next grant is above every earlier one.
//! - `primary_restarted_empty_starts_a_new_epoch`: a primary restarted without its data (and
//!   so without its lock counters) moves the shard to a new epoch; the next token is above
//!   every earlier one.
//! - `flushall_keeps_the_epoch_record_and_the_lock_state`: FLUSHALL and FLUSHDB through the
//!   proxy empty the data but keep the epoch record and every lock's high-water mark, so the
//!   next grant 2.5 s later is granted (no new epoch, no freeze) and is above the earlier ones.
//! - `forged_tokens_and_epoch_records_are_refused`: FENCED and FENCE.ADVANCE with a token above
//!   the newest granted are refused and write nothing, and the holder's token still works;
//!   scripts naming the epoch record are refused; a record forged on the node itself is never
//!   adopted, and locks work after the next failover.
//!
//! The redis-py check in `tests/clients.rs` covers stock clients: redis-py's `Lock` and the docs
//! recipe under the default prefix, with their tokens from `LOCK.TOKEN`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    info_field, keys_on, router, shard_info, shard_toml, try_info, wait_for, wait_ready, Redis,
    Shardis,
};
use redis::{RedisResult, Value};

const BACKEND: &str = "[backend]\nconnect_timeout = \"300ms\"\nreconnect_backoff = \"50ms\"\nreconnect_backoff_max = \"200ms\"\n";
const HEALTH: &str =
    "[health]\ninterval = \"100ms\"\nfailure_threshold = 3\nsuccess_threshold = 2\n";
/// The `[locks]` header with the prefix the tests use (also the default); a test adds its own
/// `[locks]` lines right after it.
const LOCKS: &str = "[locks]\nprefix = \"lock:\"\n";

/// The release script of the Redis documentation's `SET key value NX PX` lock pattern.
const RELEASE_SCRIPT: &str = "if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end";

/// Bits of a token below the epoch.
const EPOCH_SHIFT: u32 = 40;

// ---- configuration ----

// ---- talking to shardis ----

/// A connection whose every reply must come within 10 s.
fn conn(port: u16) -> redis::Connection {
    let conn = common::connect(port);
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

/// Sends one command; its reply, or the error reply.
fn run(conn: &mut redis::Connection, args: &[&str]) -> RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(conn)
}

fn expect_int(reply: RedisResult<Value>, what: &str) -> i64 {
    match reply {
        Ok(Value::Int(n)) => n,
        other => panic!("{what}: expected an integer, got {other:?}"),
    }
}

fn expect_nil(reply: RedisResult<Value>, what: &str) {
    match reply {
        Ok(Value::Nil) => {}
        other => panic!("{what}: expected nil, got {other:?}"),
    }
}

fn expect_ok(reply: RedisResult<Value>, what: &str) {
    match reply {
        Ok(Value::Okay) => {}
        Ok(Value::SimpleString(s)) if s == "OK" => {}
        other => panic!("{what}: expected +OK, got {other:?}"),
    }
}

fn expect_bulk(reply: RedisResult<Value>, what: &str) -> String {
    match reply {
        Ok(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("{what}: expected a bulk string, got {other:?}"),
    }
}

/// The reply must be an error whose first word is `code`; returns its text. An `ERR` must not
/// be the unknown-command error (which a proxy without the feature would give).
fn expect_error(reply: RedisResult<Value>, code: &str, what: &str) -> String {
    match reply {
        Err(e) if e.code() == Some(code) => {
            let text = e.to_string();
            assert!(
                !text.to_ascii_lowercase().contains("unknown command"),
                "{what}: {text}"
            );
            text
        }
        other => panic!("{what}: expected an error starting {code}, got {other:?}"),
    }
}

/// `LOCK.ACQUIRE key owner ttl`: `Some((token, validity))` when granted, `None` when held by
/// another owner, or the error reply. Any other reply shape fails the test.
fn acquire(
    conn: &mut redis::Connection,
    key: &str,
    owner: &str,
    ttl_ms: i64,
) -> RedisResult<Option<(u64, i64)>> {
    let reply = redis::cmd("LOCK.ACQUIRE")
        .arg(key)
        .arg(owner)
        .arg(ttl_ms)
        .query::<Value>(conn)?;
    match reply {
        Value::Nil => Ok(None),
        Value::Array(items) => match items.as_slice() {
            [Value::Int(token), Value::Int(validity)] if *token > 0 => {
                Ok(Some((*token as u64, *validity)))
            }
            _ => panic!(
                "LOCK.ACQUIRE {key} {owner} {ttl_ms}: not [token, validity-ms] (two integers, \
                 a positive token): {items:?}"
            ),
        },
        other => panic!("LOCK.ACQUIRE {key} {owner} {ttl_ms}: not an array or nil: {other:?}"),
    }
}

/// `LOCK.ACQUIRE` that must be granted, with a validity in 1..=ttl.
fn granted(conn: &mut redis::Connection, key: &str, owner: &str, ttl_ms: i64) -> (u64, i64) {
    match acquire(conn, key, owner, ttl_ms) {
        Ok(Some((token, validity))) => {
            assert!(
                validity > 0 && validity <= ttl_ms,
                "LOCK.ACQUIRE {key} {owner} {ttl_ms}: validity {validity} ms"
            );
            (token, validity)
        }
        other => panic!("LOCK.ACQUIRE {key} {owner} {ttl_ms}: expected a grant, got {other:?}"),
    }
}

/// `LOCK.STATUS key`: `Some((owner, token, pttl))` or `None`.
fn status(conn: &mut redis::Connection, key: &str) -> Option<(String, u64, i64)> {
    match run(conn, &["LOCK.STATUS", key]) {
        Ok(Value::Nil) => None,
        Ok(Value::Array(items)) => match items.as_slice() {
            [Value::BulkString(owner), Value::Int(token), Value::Int(pttl)] if *token > 0 => {
                Some((
                    String::from_utf8_lossy(owner).into_owned(),
                    *token as u64,
                    *pttl,
                ))
            }
            [Value::SimpleString(owner), Value::Int(token), Value::Int(pttl)] if *token > 0 => {
                Some((owner.clone(), *token as u64, *pttl))
            }
            _ => panic!("LOCK.STATUS {key}: not [owner, token, pttl-ms]: {items:?}"),
        },
        other => panic!("LOCK.STATUS {key}: not an array or nil: {other:?}"),
    }
}

/// `LOCK.TOKEN key owner`: the token, or `None` for nil.
fn token_of(conn: &mut redis::Connection, key: &str, owner: &str) -> Option<u64> {
    match run(conn, &["LOCK.TOKEN", key, owner]) {
        Ok(Value::Nil) => None,
        Ok(Value::Int(t)) if t > 0 => Some(t as u64),
        other => panic!("LOCK.TOKEN {key} {owner}: not a positive integer or nil: {other:?}"),
    }
}

fn release(conn: &mut redis::Connection, key: &str, owner: &str, token: u64) -> i64 {
    expect_int(
        run(conn, &["LOCK.RELEASE", key, owner, &token.to_string()]),
        &format!("LOCK.RELEASE {key} {owner} {token}"),
    )
}

/// Every key of a full SCAN through `conn` (cursor by cursor, at most 10,000 calls).
fn scan_all(conn: &mut redis::Connection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let (next, batch): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("COUNT")
            .arg(100)
            .query(conn)
            .unwrap_or_else(|e| panic!("SCAN {cursor} through shardis: {e}"));
        keys.extend(batch);
        cursor = next;
        if cursor == "0" {
            return keys;
        }
    }
    panic!("SCAN through shardis did not finish within 10,000 calls");
}

// ---- contention ----

const CLIENTS: usize = 32;
const LOCK_KEYS: usize = 100;
const GRANTS: usize = 20_000;
const GRANT_TTL_MS: i64 = 5_000;
const RUN_BOUND: Duration = Duration::from_secs(120);

fn lock_key(k: usize) -> String {
    format!("lock:{{k{k}}}")
}

fn log_key(k: usize) -> String {
    format!("log:{{k{k}}}")
}

/// xorshift64: a cheap, seedable, good-enough spread of keys.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

/// One hold of a lock, as its holder saw it.
struct Grant {
    key: usize,
    token: u64,
    /// When the grant's reply arrived.
    granted: Instant,
    /// Just before the release was sent.
    release_sent: Instant,
}

#[derive(Default)]
struct Tally {
    grants: Vec<Grant>,
    /// Attempts answered nil (another owner held the lock).
    held: u64,
    /// Attempts answered NOTREPLICATED (grant undone; tried again elsewhere).
    not_replicated: u64,
}

/// Tells the other clients to stop when this one panics.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Takes one grant from the shared budget; `false` when it is used up.
fn take_one(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        .is_ok()
}

/// One client: for each grant taken from `budget`, tries random keys until one is granted,
/// appends the token to the key's log with a fenced RPUSH, and releases.
fn contend(
    port: u16,
    id: usize,
    budget: &AtomicUsize,
    stop: &AtomicBool,
    deadline: Instant,
) -> Tally {
    let _stop_on_panic = StopOnPanic(stop);
    let mut conn = conn(port);
    let mut rng = XorShift::new(id as u64 + 1);
    // A quarter of the clients use the stock SET NX PX recipe.
    let set_form = id % 4 == 0;
    let mut tally = Tally::default();
    let mut attempt = 0u64;
    while take_one(budget) {
        loop {
            if stop.load(Ordering::SeqCst) {
                return tally;
            }
            assert!(
                Instant::now() < deadline,
                "client {id}: the run is past {RUN_BOUND:?} with grants left"
            );
            let key = rng.below(LOCK_KEYS);
            let lock = lock_key(key);
            attempt += 1;
            let owner = format!("c{id}-{attempt}");

            let grant = if set_form {
                let reply = redis::cmd("SET")
                    .arg(&lock)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(GRANT_TTL_MS)
                    .query::<Value>(&mut conn);
                let at = Instant::now();
                match reply {
                    // Held by another owner (or, invisibly here, not replicated in time).
                    Ok(Value::Nil) => None,
                    Ok(Value::Okay) => {
                        let token = token_of(&mut conn, &lock, &owner).unwrap_or_else(|| {
                            panic!(
                                "client {id}: LOCK.TOKEN {lock} {owner} is nil right after its \
                                 SET NX PX"
                            )
                        });
                        Some((token, at))
                    }
                    other => panic!("client {id}: SET {lock} {owner} NX PX: {other:?}"),
                }
            } else {
                match acquire(&mut conn, &lock, &owner, GRANT_TTL_MS) {
                    Ok(Some((token, validity))) => {
                        let at = Instant::now();
                        assert!(
                            validity > 0 && validity <= GRANT_TTL_MS,
                            "client {id}: LOCK.ACQUIRE {lock}: validity {validity} ms"
                        );
                        Some((token, at))
                    }
                    Ok(None) => None,
                    Err(e) if e.code() == Some("NOTREPLICATED") => {
                        tally.not_replicated += 1;
                        None
                    }
                    Err(e) => panic!("client {id}: LOCK.ACQUIRE {lock} {owner}: {e}"),
                }
            };
            let Some((token, granted)) = grant else {
                tally.held += 1;
                continue;
            };

            let t = token.to_string();
            match run(
                &mut conn,
                &["FENCED", &lock, &t, "RPUSH", &log_key(key), &t],
            ) {
                Ok(Value::Int(n)) if n >= 1 => {}
                other => panic!("client {id}: FENCED {lock} {t} RPUSH: {other:?}"),
            }

            let release_sent = Instant::now();
            let released = if set_form {
                redis::cmd("EVAL")
                    .arg(RELEASE_SCRIPT)
                    .arg(1)
                    .arg(&lock)
                    .arg(&owner)
                    .query::<Value>(&mut conn)
            } else {
                run(&mut conn, &["LOCK.RELEASE", &lock, &owner, &t])
            };
            match released {
                Ok(Value::Int(1)) => {}
                other => panic!(
                    "client {id}: release of {lock} by {owner} (token {t}, held {:?}): {other:?}",
                    release_sent - granted
                ),
            }
            tally.grants.push(Grant {
                key,
                token,
                granted,
                release_sent,
            });
            break;
        }
    }
    tally
}

#[test]
fn contention_32_clients_100_keys_20000_grants() {
    let a = Redis::start();
    let a1 = Redis::start();
    let b = Redis::start();
    let b1 = Redis::start();
    // Replicas start standalone: shardis points them at their primaries.
    let body = format!(
        "{BACKEND}{HEALTH}{LOCKS}{}{}",
        shard_toml("a", &a, &[&a1], ""),
        shard_toml("b", &b, &[&b1], "")
    );
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let epochs = [
        wait_ready(&proxy, "a", &a.addr(), 1).epoch,
        wait_ready(&proxy, "b", &b.addr(), 1).epoch,
    ];
    let shard_of: Vec<usize> = (0..LOCK_KEYS)
        .map(|k| {
            let shard = router.shard_of(lock_key(k).as_bytes());
            assert_eq!(shard, router.shard_of(log_key(k).as_bytes()), "hash tags");
            shard
        })
        .collect();
    assert!(
        shard_of.contains(&0) && shard_of.contains(&1),
        "the lock keys all landed on one shard: {shard_of:?}"
    );

    let budget = AtomicUsize::new(GRANTS);
    let stop = AtomicBool::new(false);
    let port = proxy.port();
    let started = Instant::now();
    let deadline = started + RUN_BOUND;
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (budget, stop) = (&budget, &stop);
                s.spawn(move || contend(port, id, budget, stop, deadline))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|payload| std::panic::resume_unwind(payload)))
            .collect()
    });
    let took = started.elapsed();

    let grants: Vec<&Grant> = tallies.iter().flat_map(|t| &t.grants).collect();
    let held: u64 = tallies.iter().map(|t| t.held).sum();
    let not_replicated: u64 = tallies.iter().map(|t| t.not_replicated).sum();
    println!(
        "{} grants by {CLIENTS} clients over {LOCK_KEYS} keys in {took:?}: {:.0} grants/s; \
         {held} attempts found the lock held, {not_replicated} got NOTREPLICATED",
        grants.len(),
        grants.len() as f64 / took.as_secs_f64()
    );
    assert!(!stop.load(Ordering::SeqCst), "a client stopped the run");
    assert_eq!(grants.len(), GRANTS, "grants made");

    // No token twice for a lock (tokens of different locks may coincide: the counter is per
    // lock, the epoch per shard).
    let distinct: HashSet<(usize, u64)> = grants.iter().map(|g| (g.key, g.token)).collect();
    assert_eq!(distinct.len(), GRANTS, "duplicate (lock, token) pairs");
    let distinct_tokens: HashSet<u64> = grants.iter().map(|g| g.token).collect();
    println!(
        "{} distinct token values over all locks",
        distinct_tokens.len()
    );

    // Per lock, in the order the grants arrived: tokens strictly increase, and each hold ends
    // (its release is sent) before the next grant's reply arrives.
    let mut by_key: BTreeMap<usize, Vec<&Grant>> = BTreeMap::new();
    for &g in &grants {
        by_key.entry(g.key).or_default().push(g);
    }
    for (key, list) in by_key.iter_mut() {
        list.sort_by_key(|g| g.granted);
        for pair in list.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            assert!(
                next.token > prev.token,
                "{}: token {} granted after token {}",
                lock_key(*key),
                next.token,
                prev.token
            );
            assert!(
                prev.release_sent < next.granted,
                "{}: token {} granted {:?} before the holder of token {} sent its release",
                lock_key(*key),
                next.token,
                prev.release_sent - next.granted,
                prev.token
            );
        }
    }

    // Every token carries its shard's epoch, which did not change during the run.
    let epochs_after = [shard_info(port, "a").epoch, shard_info(port, "b").epoch];
    assert_eq!(epochs_after, epochs, "epochs changed during the run");
    for g in &grants {
        assert_eq!(
            g.token >> EPOCH_SHIFT,
            epochs[shard_of[g.key]],
            "{}: token {} does not carry its shard's epoch",
            lock_key(g.key),
            g.token
        );
    }

    // Every fenced write landed, in token order.
    let mut conn = conn(port);
    for key in 0..LOCK_KEYS {
        let logged: Vec<String> = redis::cmd("LRANGE")
            .arg(log_key(key))
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("LRANGE {} through shardis: {e}", log_key(key)));
        let logged: Vec<u64> = logged
            .iter()
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|_| panic!("{}: {t:?} is not a token", log_key(key)))
            })
            .collect();
        let want: Vec<u64> = by_key
            .get(&key)
            .map(|list| list.iter().map(|g| g.token).collect())
            .unwrap_or_default();
        assert_eq!(logged, want, "{}: fenced appends vs grants", log_key(key));
    }
}

// ---- one stalled holder ----

#[test]
fn paused_holder_is_fenced_off() {
    const LOCK: &str = "lock:{p}";
    const DATA: &str = "data:{p}";
    let node = Redis::start();
    let body = format!(
        "{BACKEND}{HEALTH}{LOCKS}max_ttl = \"5s\"\n{}",
        shard_toml("a", &node, &[], "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    wait_ready(&proxy, "a", &node.addr(), 0);
    let mut a = conn(proxy.port());
    let mut b = conn(proxy.port());

    // A holds the lock for 300 ms and writes under it.
    let (ta, _) = granted(&mut a, LOCK, "A", 300);
    let ta_s = ta.to_string();
    expect_ok(
        run(&mut a, &["FENCED", LOCK, &ta_s, "SET", DATA, "A1"]),
        "A's fenced SET while holding",
    );
    assert_eq!(expect_bulk(run(&mut b, &["GET", DATA]), "GET"), "A1");
    assert_eq!(token_of(&mut b, LOCK, "A"), Some(ta), "LOCK.TOKEN of A");
    assert_eq!(
        acquire(&mut b, LOCK, "B", 4_000).unwrap_or_else(|e| panic!("B's LOCK.ACQUIRE: {e}")),
        None,
        "B granted the lock while A holds it"
    );

    // A stalls (a GC pause, a stopped VM) past its lease.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        status(&mut b, LOCK),
        None,
        "LOCK.STATUS after A's lease ran out"
    );
    assert_eq!(
        token_of(&mut b, LOCK, "A"),
        None,
        "LOCK.TOKEN of A after its lease ran out"
    );

    // B takes over with a higher token and writes.
    let (tb, _) = granted(&mut b, LOCK, "B", 4_000);
    assert!(tb > ta, "B's token {tb} is not above A's {ta}");
    let tb_s = tb.to_string();
    expect_ok(
        run(&mut b, &["FENCED", LOCK, &tb_s, "SET", DATA, "B"]),
        "B's fenced SET",
    );

    // A wakes up and carries on as if it still held the lock: fenced off.
    expect_error(
        run(&mut a, &["FENCED", LOCK, &ta_s, "SET", DATA, "A2"]),
        "STALETOKEN",
        "A's fenced SET after B's",
    );
    assert_eq!(
        expect_bulk(run(&mut a, &["GET", DATA]), "GET"),
        "B",
        "the stale write changed the data"
    );
    assert_eq!(
        expect_int(
            run(&mut a, &["LOCK.EXTEND", LOCK, "A", &ta_s, "300"]),
            "A's LOCK.EXTEND"
        ),
        0,
        "A extended a lock B holds"
    );
    assert_eq!(
        release(&mut a, LOCK, "A", ta),
        0,
        "A released a lock B holds"
    );
    assert_eq!(
        acquire(&mut a, LOCK, "A", 300).unwrap_or_else(|e| panic!("A's LOCK.ACQUIRE: {e}")),
        None,
        "A granted the lock B holds"
    );

    // The lock is B's, untouched by A.
    let (owner, token, pttl1) = status(&mut a, LOCK).expect("LOCK.STATUS while B holds it");
    assert_eq!((owner.as_str(), token), ("B", tb), "LOCK.STATUS");
    assert!((1..=4_000).contains(&pttl1), "LOCK.STATUS pttl {pttl1}");
    assert_eq!(token_of(&mut a, LOCK, "B"), Some(tb), "LOCK.TOKEN of B");
    assert_eq!(token_of(&mut a, LOCK, "A"), None, "LOCK.TOKEN of A");

    // B acquiring again: the same hold (same token), its TTL refreshed. A second later, without
    // a refresh the TTL would be at least 1,000 ms below pttl1.
    std::thread::sleep(Duration::from_millis(1_000));
    let (again, validity) = granted(&mut b, LOCK, "B", 4_000);
    assert_eq!(again, tb, "B's re-acquire changed its token");
    let (_, _, pttl2) = status(&mut b, LOCK).expect("LOCK.STATUS after B's re-acquire");
    assert!(
        pttl2 > pttl1 - 500 && validity > pttl1 - 500,
        "re-acquire did not refresh the TTL: pttl {pttl1} ms, a second later {pttl2} ms \
         (validity {validity} ms)"
    );

    // The holder extends; the hold stays the same.
    let extended = expect_int(
        run(&mut b, &["LOCK.EXTEND", LOCK, "B", &tb_s, "3000"]),
        "B's LOCK.EXTEND",
    );
    assert!(extended > 0, "B's LOCK.EXTEND gave {extended}");
    let (owner, token, pttl3) = status(&mut b, LOCK).expect("LOCK.STATUS after B's extend");
    assert_eq!(
        (owner.as_str(), token),
        ("B", tb),
        "LOCK.STATUS after B's extend"
    );
    assert!(pttl3 > 0, "pttl {pttl3} after B's extend");

    // FENCE.ADVANCE: up to the high-water mark is fine, below it is stale.
    assert_eq!(
        expect_int(
            run(&mut b, &["FENCE.ADVANCE", LOCK, &tb_s]),
            "FENCE.ADVANCE with B's token"
        ),
        1
    );
    expect_error(
        run(&mut a, &["FENCE.ADVANCE", LOCK, &ta_s]),
        "STALETOKEN",
        "FENCE.ADVANCE with A's token",
    );
    expect_ok(
        run(&mut b, &["FENCED", LOCK, &tb_s, "SET", DATA, "B2"]),
        "B's fenced SET at the high-water mark",
    );

    // B releases: the lock is free, and the next grant is higher still.
    assert_eq!(release(&mut b, LOCK, "B", tb), 1, "B's release");
    assert_eq!(status(&mut b, LOCK), None, "LOCK.STATUS after B's release");
    assert_eq!(
        token_of(&mut b, LOCK, "B"),
        None,
        "LOCK.TOKEN of B after its release"
    );
    assert_eq!(release(&mut b, LOCK, "B", tb), 0, "B's second release");
    let (tc, _) = granted(&mut a, LOCK, "C", 1_000);
    assert!(
        tc > tb,
        "the grant after B's release has token {tc}, not above {tb}"
    );
    let tc_s = tc.to_string();
    expect_ok(
        run(&mut a, &["FENCED", LOCK, &tc_s, "SET", DATA, "C"]),
        "C's fenced SET",
    );
    expect_error(
        run(&mut b, &["FENCED", LOCK, &tb_s, "SET", DATA, "B3"]),
        "STALETOKEN",
        "B's fenced SET after C's grant and write",
    );
    assert_eq!(expect_bulk(run(&mut b, &["GET", DATA]), "GET"), "C");
    assert_eq!(release(&mut a, LOCK, "C", tc), 1, "C's release");
}

// ---- refusals and hidden state ----

#[test]
fn lock_commands_refuse_bad_input() {
    const LOCK: &str = "lock:{c}";
    const DATA: &str = "data:{c}";
    let a = Redis::start();
    let b = Redis::start();
    let body = format!(
        "[commands]\nallow_keys = true\n{BACKEND}{HEALTH}{LOCKS}max_ttl = \"5s\"\n{}{}",
        shard_toml("a", &a, &[], ""),
        shard_toml("b", &b, &[], "")
    );
    let router = router(&body);
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    wait_ready(&proxy, "a", &a.addr(), 0);
    wait_ready(&proxy, "b", &b.addr(), 0);
    let home = router.shard_of(LOCK.as_bytes());
    assert_eq!(router.shard_of(DATA.as_bytes()), home, "hash tags");
    let other = keys_on(&router, 1 - home, "other:", 1).remove(0);
    let near = keys_on(&router, home, "near:", 1).remove(0);
    let mut c = conn(proxy.port());

    // TTLs: above max_ttl, not positive, not an integer.
    for ttl in ["5001", "60000", "0", "-1", "abc", "1.5"] {
        expect_error(
            run(&mut c, &["LOCK.ACQUIRE", LOCK, "o", ttl]),
            "ERR",
            &format!("LOCK.ACQUIRE with ttl {ttl}"),
        );
    }
    expect_error(
        run(&mut c, &["SET", LOCK, "o", "NX", "PX", "5001"]),
        "ERR",
        "SET NX PX above max_ttl",
    );
    expect_error(
        run(&mut c, &["SET", LOCK, "o", "NX", "EX", "6"]),
        "ERR",
        "SET NX EX above max_ttl",
    );
    assert_eq!(
        status(&mut c, LOCK),
        None,
        "a refused request granted the lock"
    );

    // max_ttl itself is allowed.
    let (t, _) = granted(&mut c, LOCK, "o", 5_000);
    let ts = t.to_string();

    // Tokens that are not integers.
    for args in [
        vec!["LOCK.EXTEND", LOCK, "o", "abc", "1000"],
        vec!["LOCK.RELEASE", LOCK, "o", "abc"],
        vec!["FENCE.ADVANCE", LOCK, "abc"],
        vec!["FENCED", LOCK, "abc", "SET", DATA, "x"],
        vec!["FENCED", LOCK, "1.5", "SET", DATA, "x"],
    ] {
        expect_error(run(&mut c, &args), "ERR", &args.join(" "));
    }
    expect_error(
        run(&mut c, &["LOCK.EXTEND", LOCK, "o", &ts, "5001"]),
        "ERR",
        "LOCK.EXTEND above max_ttl",
    );
    expect_nil(
        run(&mut c, &["GET", DATA]),
        "GET after refused fenced writes",
    );

    // A fenced command must stay on the lock key's shard.
    expect_error(
        run(&mut c, &["FENCED", LOCK, &ts, "SET", &other, "x"]),
        "CROSSSLOT",
        "FENCED SET of a key on the other shard",
    );
    expect_error(
        run(
            &mut c,
            &["FENCED", LOCK, &ts, "MSET", DATA, "1", &other, "2"],
        ),
        "CROSSSLOT",
        "FENCED MSET over both shards",
    );
    expect_nil(
        run(&mut c, &["GET", &other]),
        "GET after a CROSSSLOT FENCED",
    );
    expect_nil(run(&mut c, &["GET", DATA]), "GET after a CROSSSLOT FENCED");
    expect_ok(
        run(&mut c, &["FENCED", LOCK, &ts, "SET", &near, "n"]),
        "FENCED SET of another key on the lock's shard",
    );
    expect_ok(
        run(&mut c, &["FENCED", LOCK, &ts, "SET", DATA, "d"]),
        "FENCED SET of the lock's data key",
    );
    assert_eq!(
        token_of(&mut c, LOCK, "o"),
        Some(t),
        "the lock after the refusals"
    );

    // SET under the prefix is a grant or nothing.
    for args in [
        vec!["SET", "lock:x", "v"],
        vec!["SET", "lock:x", "v", "PX", "1000"],
        vec!["SET", "lock:x", "v", "EX", "10"],
        vec!["SET", "lock:x", "v", "NX"],
    ] {
        expect_error(run(&mut c, &args), "ERR", &args.join(" "));
    }
    assert_eq!(
        status(&mut c, "lock:x"),
        None,
        "a refused SET granted lock:x"
    );
    expect_nil(
        run(&mut c, &["GET", "lock:x"]),
        "GET lock:x after refused SETs",
    );

    // Outside the prefix SET is plain.
    expect_ok(
        run(&mut c, &["SET", "notlock:x", "v"]),
        "SET outside the prefix",
    );
    assert_eq!(expect_bulk(run(&mut c, &["GET", "notlock:x"]), "GET"), "v");
    expect_ok(
        run(&mut c, &["SET", "notlock:y", "v", "NX", "PX", "60000"]),
        "SET NX PX outside the prefix",
    );
    expect_nil(
        run(&mut c, &["SET", "notlock:y", "w", "NX", "PX", "60000"]),
        "second SET NX PX outside the prefix",
    );
    assert_eq!(expect_bulk(run(&mut c, &["GET", "notlock:y"]), "GET"), "v");

    // Wrong arity.
    for args in [
        vec!["LOCK.ACQUIRE", LOCK, "o"],
        vec!["LOCK.ACQUIRE", LOCK, "o", "1000", "extra"],
        vec!["LOCK.EXTEND", LOCK, "o", ts.as_str()],
        vec!["LOCK.RELEASE", LOCK, "o"],
        vec!["LOCK.STATUS"],
        vec!["LOCK.STATUS", LOCK, "extra"],
        vec!["LOCK.TOKEN", LOCK],
        vec!["FENCE.ADVANCE", LOCK],
        vec!["FENCED", LOCK, ts.as_str()],
    ] {
        expect_error(run(&mut c, &args), "ERR", &args.join(" "));
    }
    assert_eq!(
        release(&mut c, LOCK, "o", t),
        1,
        "release after the refusals"
    );

    // Some more grants, on both shards, each with a fenced write.
    let mut expected: BTreeSet<String> = [DATA, near.as_str(), "notlock:x", "notlock:y"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let mut shards_used = BTreeSet::new();
    for i in 0..10 {
        let lock = format!("lock:{{r{i}}}");
        let data = format!("data:{{r{i}}}");
        let (t, _) = granted(&mut c, &lock, "o", 5_000);
        expect_ok(
            run(
                &mut c,
                &["FENCED", &lock, &t.to_string(), "SET", &data, "x"],
            ),
            &format!("FENCED SET {data}"),
        );
        assert_eq!(release(&mut c, &lock, "o", t), 1, "release {lock}");
        shards_used.insert(router.shard_of(lock.as_bytes()));
        expected.insert(data);
    }
    assert_eq!(shards_used.len(), 2, "the grants all went to one shard");

    // shardis' state is on the nodes ...
    let reserved = |k: &String| k.starts_with("__shardis__:");
    let mut direct: BTreeSet<String> = BTreeSet::new();
    let mut direct_reserved: BTreeSet<String> = BTreeSet::new();
    for node in [&a, &b] {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut node.conn()).unwrap();
        for k in keys {
            if reserved(&k) {
                direct_reserved.insert(format!("{} {k}", node.addr()));
            } else {
                direct.insert(k);
            }
        }
    }
    println!("shardis' own keys on the nodes: {direct_reserved:?}");
    assert!(
        !direct_reserved.is_empty(),
        "no __shardis__: key on the nodes after grants and fenced writes: nothing to hide"
    );
    assert_eq!(direct, expected, "the nodes' other keys");

    // ... but not seen through shardis.
    let keys: BTreeSet<String> = redis::cmd("KEYS")
        .arg("*")
        .query::<Vec<String>>(&mut c)
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        !keys.iter().any(reserved),
        "KEYS * through shardis: {keys:?}"
    );
    assert_eq!(keys, expected, "KEYS * through shardis");
    let scanned: BTreeSet<String> = scan_all(&mut c).into_iter().collect();
    assert!(
        !scanned.iter().any(reserved),
        "SCAN through shardis: {scanned:?}"
    );
    assert_eq!(scanned, expected, "SCAN through shardis");
    assert_eq!(
        expect_int(run(&mut c, &["DBSIZE"]), "DBSIZE"),
        expected.len() as i64,
        "DBSIZE through shardis"
    );

    // Naming one is refused, whatever the command.
    for args in [
        vec!["GET", "__shardis__:epoch"],
        vec!["SET", "__shardis__:epoch", "999"],
        vec!["DEL", "__shardis__:locks"],
        vec!["EXISTS", "__shardis__:x"],
        vec!["HGETALL", "__shardis__:locks"],
        vec!["LOCK.ACQUIRE", "__shardis__:x", "o", "1000"],
    ] {
        expect_error(run(&mut c, &args), "ERR", &args.join(" "));
    }
    for node in [&a, &b] {
        let epoch: Option<String> = redis::cmd("GET")
            .arg("__shardis__:epoch")
            .query(&mut node.conn())
            .unwrap();
        assert_ne!(
            epoch.as_deref(),
            Some("999"),
            "a refused SET reached {}",
            node.addr()
        );
    }
}

// ---- failover ----

/// One round over `keys`: each lock granted to a fresh owner (a NOTREPLICATED retried a few
/// times) and released, with a naive `INCR` token on the matching `naive` key beside each
/// grant. Returns (lock token, naive token) per key.
fn round(
    conn: &mut redis::Connection,
    keys: &[String],
    naive: &[String],
    owner: &str,
) -> Vec<(u64, i64)> {
    let mut out = Vec::with_capacity(keys.len());
    for (key, naive_key) in keys.iter().zip(naive) {
        let owner = format!("{owner}-{key}");
        let mut tries = 0;
        let token = loop {
            match acquire(conn, key, &owner, 1_000) {
                Ok(Some((token, _))) => break token,
                Err(e) if e.code() == Some("NOTREPLICATED") && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => panic!("LOCK.ACQUIRE {key} {owner}: {other:?}"),
            }
        };
        let n = expect_int(
            run(conn, &["INCR", naive_key]),
            &format!("INCR {naive_key}"),
        );
        assert_eq!(release(conn, key, &owner, token), 1, "release {key}");
        out.push((token, n));
    }
    out
}

/// Waits until `replica` has everything `primary` has written.
fn wait_caught_up(primary: &Redis, replica: &Redis) {
    wait_for(
        "the replica to have every write so far",
        Duration::from_secs(10),
        || {
            let p = try_info(primary.port(), "replication").ok_or("the primary does not answer")?;
            let r = try_info(replica.port(), "replication").ok_or("the replica does not answer")?;
            let want = info_field(&p, "master_repl_offset");
            if want.is_some()
                && info_field(&r, "slave_repl_offset") == want
                && info_field(&r, "master_link_status").as_deref() == Some("up")
            {
                Ok(())
            } else {
                Err(format!("primary:\n{p}\nreplica:\n{r}"))
            }
        },
    );
}

#[test]
fn tokens_grow_across_a_failover_that_lost_grants() {
    const KEYS: usize = 20;
    const ROUNDS_BEFORE: usize = 3;
    const ROUNDS_LOST: usize = 50;
    let mut p = Redis::start();
    let r = Redis::start();
    let body = format!(
        "{BACKEND}{HEALTH}[replication]\nack_timeout = \"300ms\"\n\
         {LOCKS}max_ttl = \"1s\"\nfreeze_margin = \"500ms\"\n{}",
        shard_toml("a", &p, &[&r], "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 1);
    let mut conn = conn(proxy.port());
    let keys: Vec<String> = (0..KEYS).map(|i| format!("lock:{{f{i}}}")).collect();
    let naive: Vec<String> = (0..KEYS).map(|i| format!("naive:{{f{i}}}")).collect();

    let mut last = vec![0u64; KEYS];
    let mut naive_max = vec![0i64; KEYS];
    let mut record = |results: Vec<(u64, i64)>, last: &mut Vec<u64>| {
        for (i, (token, n)) in results.into_iter().enumerate() {
            assert!(
                token > last[i],
                "{}: token {token} after {}",
                keys[i],
                last[i]
            );
            assert_eq!(
                token >> EPOCH_SHIFT,
                before.epoch,
                "{}: token {token} does not carry epoch {}",
                keys[i],
                before.epoch
            );
            last[i] = token;
            naive_max[i] = naive_max[i].max(n);
        }
    };

    // Grants the replica has.
    for round_no in 0..ROUNDS_BEFORE {
        let results = round(&mut conn, &keys, &naive, &format!("kept{round_no}"));
        record(results, &mut last);
    }
    wait_caught_up(&p, &r);

    // The replica stops and loses its link: from now on the primary's writes reach no replica.
    let paused = r.proc.pause();
    let cut: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut p.conn())
        .unwrap();
    assert!(
        cut >= 1,
        "CLIENT KILL TYPE replica on the primary killed {cut} links"
    );
    // The replica falls behind once the primary's offset moves past what it has. The rounds'
    // lock keys expiring did that, unless all of them had expired (and reached the replica)
    // before the pause, as on a slow CI machine: a write on the primary itself moves it.
    let _: () = redis::cmd("SET")
        .arg("offset:moves")
        .arg(1)
        .query(&mut p.conn())
        .unwrap();
    // Stopped, it is slow rather than dead (that takes down_after), but its link is down:
    // grants stop waiting for it.
    common::wait_node(
        proxy.port(),
        "a",
        &r.addr(),
        "shardis to stop counting the stopped replica",
        Duration::from_secs(15),
        |n| !n.readable,
    );

    // Grants only the primary has.
    for round_no in 0..ROUNDS_LOST {
        let results = round(&mut conn, &keys, &naive, &format!("lost{round_no}"));
        record(results, &mut last);
    }
    let max_before = *last.iter().max().unwrap();

    // The primary dies; the stale replica comes back. shardis does not promote it (it was not
    // in sync when the primary last answered), so the operator does, by hand.
    p.proc.kill();
    drop(paused);
    wait_for(
        "shardis to refuse promoting the stale replica",
        Duration::from_secs(10),
        || {
            let s = shard_info(proxy.port(), "a");
            if s.problem == "no_replica_in_sync" && s.primary == p.addr() {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    );
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r.conn())
        .unwrap();
    let killed = Instant::now();
    let after = wait_for(
        "shard a to fail over to the replica",
        Duration::from_secs(20),
        || {
            let s = shard_info(proxy.port(), "a");
            if s.primary == r.addr() && s.epoch > before.epoch && s.state == "up" {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    );
    let seen_failed_over = killed.elapsed();

    // No grant while a lease of the old primary may still run.
    let mut tryagain = 0u64;
    let mut first_grant: Option<Duration> = None;
    let mut tokens_after = Vec::with_capacity(KEYS);
    for (i, key) in keys.iter().enumerate() {
        let owner = format!("after-{i}");
        loop {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "{key}: still no grant 30 s after the kill ({tryagain} TRYAGAIN replies)"
            );
            match acquire(&mut conn, key, &owner, 1_000) {
                Ok(Some((token, _))) => {
                    first_grant.get_or_insert_with(|| killed.elapsed());
                    tokens_after.push(token);
                    assert_eq!(release(&mut conn, key, &owner, token), 1, "release {key}");
                    break;
                }
                Err(e) if e.code() == Some("TRYAGAIN") => {
                    tryagain += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("LOCK.ACQUIRE {key} after the failover: {other:?}"),
            }
        }
    }
    let first_grant = first_grant.expect("grants after the failover");
    println!(
        "failover seen {seen_failed_over:?} after the kill (epoch {} -> {}); first grant \
         {first_grant:?} after the kill, {tryagain} TRYAGAIN replies before",
        before.epoch, after.epoch
    );
    assert!(
        first_grant >= Duration::from_millis(1_200),
        "a lock was granted {first_grant:?} after the kill, before max_ttl (1 s) had passed"
    );
    assert!(
        first_grant < Duration::from_secs(10),
        "the freeze lasted until {first_grant:?} after the kill"
    );
    if seen_failed_over < Duration::from_secs(1) {
        assert!(
            tryagain > 0,
            "failover seen {seen_failed_over:?} after the kill, yet no TRYAGAIN before the grant"
        );
    }

    // Every token after the failover is above every token before, in the new epoch.
    let now = shard_info(proxy.port(), "a");
    assert_eq!(
        (now.epoch, now.primary.as_str()),
        (after.epoch, r.addr().as_str()),
        "a second failover: {now:?}"
    );
    let min_after = *tokens_after.iter().min().unwrap();
    println!(
        "lock tokens: at most {max_before} before the failover (epoch {}), at least \
         {min_after} after it (epoch {})",
        before.epoch, after.epoch
    );
    assert!(
        min_after > max_before,
        "token {min_after} after the failover is not above {max_before} before it"
    );
    for (key, &token) in keys.iter().zip(&tokens_after) {
        assert_eq!(
            token >> EPOCH_SHIFT,
            after.epoch,
            "{key}: token {token} does not carry the new epoch {}",
            after.epoch
        );
    }

    // The naive design, INCR as a token, on the same history: it goes backwards.
    let mut naive_after = Vec::with_capacity(KEYS);
    for key in &naive {
        naive_after.push(expect_int(
            run(&mut conn, &["INCR", key]),
            &format!("INCR {key} after the failover"),
        ));
    }
    let backwards = (0..KEYS)
        .filter(|&i| naive_after[i] <= naive_max[i])
        .count();
    println!(
        "naive INCR tokens: highest before the failover {:?}, next after it {:?}; \
         {backwards} of {KEYS} went backwards",
        naive_max, naive_after
    );
    assert!(
        backwards > 0,
        "no INCR token went backwards: the failover lost no writes, so the test proved nothing"
    );
}

/// A node's own copy of a key (read directly, not through shardis).
fn node_get(node: &Redis, args: &[&str]) -> Option<String> {
    let mut c = node.conn();
    match run(&mut c, args) {
        Ok(Value::BulkString(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        Ok(Value::Nil) => None,
        other => panic!("{args:?} on {}: {other:?}", node.addr()),
    }
}

/// `replication = "mirror"`: shardis copies each lock script to the replica itself, so the
/// replica ends up with the same lock keys, lock state and epoch record as the primary, and a
/// failover to it keeps tokens growing.
#[test]
fn mirror_shard_copies_lock_state_and_fails_over() {
    let mut p = Redis::start();
    let r = Redis::start();
    let body = format!(
        "{BACKEND}{HEALTH}{LOCKS}max_ttl = \"1s\"\nfreeze_margin = \"300ms\"\n{}replication = \"mirror\"\n",
        shard_toml("a", &p, &[&r], "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 1);
    let mut conn = conn(proxy.port());
    let mut highest = 0;
    for i in 0..20 {
        let key = format!("lock:{{m{}}}", i % 4);
        let (token, _) = granted(&mut conn, &key, "me", 1_000);
        assert_eq!(token >> EPOCH_SHIFT, before.epoch, "{key}: {token}");
        let data = format!("data:{{m{}}}", i % 4);
        let t = token.to_string();
        expect_ok(
            run(&mut conn, &["FENCED", &key, &t, "SET", &data, &t]),
            "FENCED SET",
        );
        if i % 4 != 3 {
            assert_eq!(release(&mut conn, &key, "me", token), 1, "release {key}");
        }
        highest = highest.max(token);
    }
    // Every copy is applied in order on the replica: its copy matches the primary's.
    wait_for("the replica's copies", Duration::from_secs(5), || {
        for k in 0..4 {
            for args in [
                vec!["GET".to_string(), format!("lock:{{m{k}}}")],
                vec!["GET".to_string(), format!("data:{{m{k}}}")],
                vec![
                    "HGET".to_string(),
                    "__shardis__:locks".to_string(),
                    format!("lock:{{m{k}}}"),
                ],
                vec!["GET".to_string(), "__shardis__:epoch".to_string()],
            ] {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (a, b) = (node_get(&p, &args), node_get(&r, &args));
                if a != b {
                    return Err(format!("{args:?}: primary {a:?}, replica {b:?}"));
                }
            }
        }
        Ok(())
    });
    assert!(node_get(&r, &["HGET", "__shardis__:locks", "lock:{m3}"]).is_some());

    p.proc.kill();
    wait_for("the replica promoted", Duration::from_secs(10), || {
        let s = shard_info(proxy.port(), "a");
        if s.primary == r.addr() && s.epoch > before.epoch {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        match acquire(&mut conn, "lock:{m0}", "after", 1_000) {
            Ok(Some((token, _))) => break token,
            Err(e) if e.code() == Some("TRYAGAIN") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("LOCK.ACQUIRE after the failover: {other:?}"),
        }
    };
    assert!(
        token > highest,
        "token {token} after the failover, {highest} before"
    );
    assert_eq!(token >> EPOCH_SHIFT, before.epoch + 1);
}

/// A primary that restarts empty (no persistence) lost its lock counters: shardis sees the new
/// `run_id` and the missing epoch record, moves the shard to a new epoch, freezes grants, and
/// the next token is above every earlier one. Without that, the counter would start at 1
/// again in the same epoch.
#[test]
fn primary_restarted_empty_starts_a_new_epoch() {
    let mut p = Redis::start();
    let body = format!(
        "{BACKEND}{HEALTH}{LOCKS}max_ttl = \"1s\"\nfreeze_margin = \"300ms\"\n{}",
        shard_toml("a", &p, &[], "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 0);
    let mut conn = conn(proxy.port());
    let mut highest = 0;
    for _ in 0..5 {
        let (token, _) = granted(&mut conn, "lock:{r}", "me", 1_000);
        assert_eq!(release(&mut conn, "lock:{r}", "me", token), 1);
        highest = highest.max(token);
    }
    p.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let token = loop {
        match acquire(&mut conn, "lock:{r}", "after", 1_000) {
            Ok(Some((token, _))) => break token,
            // Refused while shardis moves to the new epoch and during the freeze; the
            // connection to the restarted node may also fail once.
            Ok(None) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("LOCK.ACQUIRE after the restart: {other:?}"),
        }
    };
    let after = shard_info(proxy.port(), "a");
    assert!(
        after.epoch > before.epoch,
        "epoch {} -> {}",
        before.epoch,
        after.epoch
    );
    assert!(
        token > highest,
        "token {token} after the restart, {highest} before"
    );
    assert_eq!(token >> EPOCH_SHIFT, after.epoch);
}

// ---- clients can neither lose nor forge epochs and lock state ----

/// Grants `key` to `owner`, retrying through a freeze (TRYAGAIN) for up to `within`.
fn granted_within(port: u16, key: &str, owner: &str, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let mut c = conn(port);
        match acquire(&mut c, key, owner, 1_000) {
            Ok(Some((token, _))) => return token,
            Ok(None) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("LOCK.ACQUIRE {key} {owner}: {other:?}"),
        }
    }
}

#[test]
fn flushall_keeps_the_epoch_record_and_the_lock_state() {
    let p = Redis::start();
    let r = Redis::replica_of(&p);
    // The default max_ttl (30 s): a new epoch would refuse grants for 31 s.
    let body = format!(
        "[commands]\nallow_flush = true\n{BACKEND}{HEALTH}{LOCKS}{}",
        shard_toml("a", &p, &[&r], "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 1);
    let mut c = conn(proxy.port());
    let (t1, _) = granted(&mut c, "lock:{f}", "one", 1_000);
    expect_ok(run(&mut c, &["SET", "data:{f}", "x"]), "SET");
    expect_ok(run(&mut c, &["FLUSHALL"]), "FLUSHALL");
    expect_nil(run(&mut c, &["GET", "data:{f}"]), "GET after FLUSHALL");
    assert_eq!(
        status(&mut c, "lock:{f}"),
        None,
        "the lock key went with the flush"
    );
    // Still recorded on both nodes.
    for node in [&p, &r] {
        wait_for(
            "the epoch record to stay",
            Duration::from_secs(5),
            || match node_get(node, &["GET", "__shardis__:epoch"]) {
                Some(e) if e == before.epoch.to_string() => Ok(()),
                other => Err(format!("{}: {other:?}", node.addr())),
            },
        );
    }
    std::thread::sleep(Duration::from_millis(2_500));
    // No new epoch, no freeze: granted at once, and above the token granted before the flush
    // (the lock state outlived it).
    let (t2, _) = granted(&mut c, "lock:{f}", "two", 1_000);
    let (t3, _) = granted(&mut c, "lock:{g}", "three", 1_000);
    assert!(t2 > t1, "token {t2} after FLUSHALL is not above {t1}");
    let after = shard_info(proxy.port(), "a");
    assert_eq!(after.epoch, before.epoch, "{after:?}");
    assert_eq!(t3 >> EPOCH_SHIFT, before.epoch);
    // FLUSHDB too.
    expect_ok(run(&mut c, &["FLUSHDB", "ASYNC"]), "FLUSHDB ASYNC");
    assert_eq!(
        node_get(&p, &["GET", "__shardis__:epoch"]),
        Some(before.epoch.to_string())
    );
    assert_eq!(
        expect_int(run(&mut c, &["DBSIZE"]), "DBSIZE"),
        0,
        "shardis' own keys are not counted"
    );
}

#[test]
fn forged_tokens_and_epoch_records_are_refused() {
    let mut p = Redis::start();
    let r = Redis::replica_of(&p);
    let body = format!(
        "{BACKEND}{HEALTH}{LOCKS}max_ttl = \"1s\"\nfreeze_margin = \"300ms\"\n{}",
        shard_toml("a", &p, &[&r], "")
    );
    let proxy = Shardis::start_with(&body);
    let _log = proxy.log_on_panic();
    let before = wait_ready(&proxy, "a", &p.addr(), 1);
    let mut c = conn(proxy.port());
    let (t, _) = granted(&mut c, "lock:{x}", "holder", 1_000);
    let ts = t.to_string();

    // A token never granted for the lock: refused, nothing written, and the holder's own token
    // still works (it is not made stale).
    for forged in [
        t + 1,
        t + 1_000,
        (1u64 << 40) - 1 + (before.epoch << EPOCH_SHIFT),
    ] {
        let f = forged.to_string();
        expect_error(
            run(
                &mut c,
                &["FENCED", "lock:{x}", &f, "SET", "data:{x}", "evil"],
            ),
            "ERR",
            &format!("FENCED with the forged token {f}"),
        );
        expect_error(
            run(&mut c, &["FENCE.ADVANCE", "lock:{x}", &f]),
            "ERR",
            &format!("FENCE.ADVANCE with the forged token {f}"),
        );
    }
    expect_nil(run(&mut c, &["GET", "data:{x}"]), "a forged FENCED wrote");
    expect_ok(
        run(
            &mut c,
            &["FENCED", "lock:{x}", &ts, "SET", "data:{x}", "mine"],
        ),
        "FENCED by the holder",
    );
    assert_eq!(
        expect_int(
            run(&mut c, &["FENCE.ADVANCE", "lock:{x}", &ts]),
            "FENCE.ADVANCE"
        ),
        1
    );
    assert_eq!(release(&mut c, "lock:{x}", "holder", t), 1);

    // Scripts that name the epoch record or the lock state, as a key, in their code or as an
    // argument, are refused.
    let forge = "return redis.call('SET', '__shardis__:epoch', '8388607')";
    let by_arg = "return redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])";
    for args in [
        vec!["EVAL", forge, "0"],
        vec!["EVAL", forge, "1", "data:{x}"],
        vec![
            "EVAL",
            by_arg,
            "1",
            "lock:{x}",
            "__shardis__:locks",
            "lock:{x}",
            "0 0 0 0 ",
        ],
        vec![
            "EVAL",
            "return redis.call('SET', KEYS[1], '8388607')",
            "1",
            "__shardis__:epoch",
        ],
        vec!["SCRIPT", "LOAD", forge],
    ] {
        expect_error(run(&mut c, &args), "ERR", &args.join(" "));
    }
    assert_eq!(
        node_get(&p, &["GET", "__shardis__:epoch"]),
        Some(before.epoch.to_string()),
        "a refused script reached the primary"
    );

    // A record forged on the node itself (a script that built the name at run time): never
    // adopted; the shard moves to an epoch of its own, and after a failover locks still work.
    let _: () = redis::cmd("SET")
        .arg("__shardis__:epoch")
        .arg("8388607")
        .query(&mut p.conn())
        .unwrap();
    let replaced = wait_for(
        "the forged record to be replaced",
        Duration::from_secs(5),
        || {
            let s = shard_info(proxy.port(), "a");
            match node_get(&p, &["GET", "__shardis__:epoch"]) {
                Some(e) if e == s.epoch.to_string() && s.epoch > before.epoch => Ok(s),
                other => Err(format!("{other:?} {s:?}")),
            }
        },
    );
    assert!(replaced.epoch < 1_000, "{replaced:?}");
    let t2 = granted_within(proxy.port(), "lock:{x}", "second", Duration::from_secs(5));
    assert!(t2 > t, "token {t2} after the forgery, {t} before");
    assert_eq!(release(&mut c, "lock:{x}", "second", t2), 1);
    wait_caught_up(&p, &r);
    p.proc.kill();
    let t3 = granted_within(proxy.port(), "lock:{x}", "third", Duration::from_secs(15));
    let after = shard_info(proxy.port(), "a");
    assert_eq!(after.primary, r.addr(), "{after:?}");
    assert!(t3 > t2, "token {t3} after the failover, {t2} before");
    assert_eq!(t3 >> EPOCH_SHIFT, after.epoch);
    println!("tokens {t}, {t2} (after the forged record), {t3} (after the failover)");
}
