#!/usr/bin/env python3
"""Drives redis-py against one Redis-protocol address the way applications do.

    python redis_py_check.py HOST:PORT

Meant for shardis; a single plain Redis passes everything but the lock checks,
which also ask shardis for fencing tokens (LOCK.TOKEN). Every group of keys used
together (a transaction, a WATCH, a script) shares one hash tag in braces, so a
sharding proxy can route each group to one shard. All keys and channels start
with a prefix unique to this run, so runs against the same servers do not
collide.

Prints one line per passed check. Exits 0 when all pass, 1 when any fails
(each failure names its check on stderr), 2 on bad usage.
"""

import logging
import os
import signal
import sys
import threading
import time
import traceback

import redis

SOCKET_TIMEOUT = 10  # seconds for any single connect, send or reply
CHECK_SECONDS = 90  # hard limit for one check, however it is stuck
PUBSUB_SECONDS = 10  # how long a subscriber waits for the messages it expects
QUIET_SECONDS = 0.5  # how long "no further message" is watched for


# redis-py logs every RESP3 push message it hands to a PubSub at INFO level
# (logger "push_response") unless that logger already exists; keep it quiet.
logging.getLogger("push_response").setLevel(logging.WARNING)


class CheckFailed(Exception):
    pass


class CheckTimedOut(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: got {actual!r}, expected {expected!r}")


class Env:
    """The server under test, the run's prefix, and the keys to delete afterwards."""

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.prefix = f"rpy-{os.getpid()}-{int(time.time() * 1000)}"
        self.keys = set()

    def client(self, protocol=2, **kwargs):
        return redis.Redis(
            host=self.host,
            port=self.port,
            protocol=protocol,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            **kwargs,
        )

    def key(self, check, tag, name):
        """A key of this run, in hash tag `tag`, remembered for cleanup."""
        key = f"{self.prefix}:{check}:{{{tag}}}:{name}"
        self.keys.add(key)
        return key

    def cleanup(self):
        # One DEL per key: a multi-key DEL would span hash tags.
        r = self.client()
        try:
            with r.pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.delete(key)
                pipe.execute()
        finally:
            r.close()


# ---------------------------------------------------------------- checks


def check_pipeline(env):
    """3,000 commands in one non-transactional pipeline over ~100 hash tags."""
    r = env.client()
    count = 1000
    keys = [env.key("pipe", f"t{i % 100}", i) for i in range(count)]
    with r.pipeline(transaction=False) as pipe:
        for i, key in enumerate(keys):
            pipe.set(key, i * 10)
            pipe.incr(key)
            pipe.get(key)
        replies = pipe.execute()
    expect_eq(len(replies), 3 * count, "number of replies")
    for i, key in enumerate(keys):
        set_reply, incr_reply, get_reply = replies[3 * i : 3 * i + 3]
        expect_eq(set_reply, True, f"reply {3 * i} (SET {key})")
        expect_eq(incr_reply, i * 10 + 1, f"reply {3 * i + 1} (INCR {key})")
        expect_eq(get_reply, str(i * 10 + 1), f"reply {3 * i + 2} (GET {key})")
    r.close()
    return f"{len(replies)} replies in order"


def check_transaction(env):
    """MULTI/EXEC pipelines, and WATCH-based increments racing from 8 threads."""
    r = env.client()
    balance = env.key("tx", "acct", "balance")
    log = env.key("tx", "acct", "log")
    meta = env.key("tx", "acct", "meta")
    name = env.key("tx", "acct", "name")

    with r.pipeline(transaction=True) as pipe:
        pipe.set(balance, 100)
        pipe.incrby(balance, 25)
        pipe.rpush(log, "open", "deposit")
        pipe.hset(meta, mapping={"owner": "alice", "currency": "EUR"})
        pipe.expire(balance, 300)
        pipe.get(balance)
        pipe.lrange(log, 0, -1)
        pipe.hgetall(meta)
        replies = pipe.execute()
    expected = [
        True,
        125,
        2,
        2,
        True,
        "125",
        ["open", "deposit"],
        {"owner": "alice", "currency": "EUR"},
    ]
    expect_eq(replies, expected, "MULTI/EXEC replies")

    # A command failing inside EXEC fails alone; the others still run.
    with r.pipeline(transaction=True) as pipe:
        pipe.set(name, "alice")
        pipe.incr(name)
        pipe.append(name, "!")
        replies = pipe.execute(raise_on_error=False)
    expect_eq(len(replies), 3, "number of EXEC replies with a failing command")
    expect_eq(replies[0], True, "SET inside EXEC")
    expect(
        isinstance(replies[1], redis.ResponseError),
        f"INCR of a non-number inside EXEC: got {replies[1]!r}, expected an error",
    )
    expect_eq(replies[2], 6, "APPEND after the failing command inside EXEC")
    r.close()

    counter = env.key("tx", "ctr", "n")
    threads_count, per_thread = 8, 50
    attempts = [0] * threads_count
    errors = []

    def worker(index):
        client = env.client()
        try:

            def increment(pipe):
                attempts[index] += 1
                current = int(pipe.get(counter) or 0)
                pipe.multi()
                pipe.set(counter, current + 1)

            for _ in range(per_thread):
                client.transaction(increment, counter)
        except Exception as e:  # reported by the main thread
            errors.append(f"thread {index}: {type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [
        threading.Thread(target=worker, args=(i,), daemon=True)
        for i in range(threads_count)
    ]
    for t in threads:
        t.start()
    give_up_at = time.monotonic() + CHECK_SECONDS - 10
    for t in threads:
        t.join(max(0.0, give_up_at - time.monotonic()))
    expect(not any(t.is_alive() for t in threads), "WATCH threads did not finish")
    expect(not errors, "; ".join(errors))

    r = env.client()
    total = threads_count * per_thread
    expect_eq(int(r.get(counter)), total, "counter after WATCH/MULTI/EXEC increments")
    r.close()
    retries = sum(attempts) - total
    return (
        f"MULTI/EXEC ok; {total} WATCH increments from {threads_count} threads, "
        f"{retries} retried after a WATCH conflict"
    )


def check_watch_conflict(env):
    """A WATCHed key changed by another client makes EXEC fail with WatchError."""
    a = env.client()
    b = env.client()
    key = env.key("watch", "w", "value")
    a.set(key, "initial")

    with a.pipeline() as pipe:
        pipe.watch(key)
        expect_eq(pipe.get(key), "initial", "GET after WATCH")
        b.set(key, "changed by b")
        pipe.multi()
        pipe.set(key, "written by a")
        try:
            pipe.execute()
            raise CheckFailed("EXEC succeeded although the WATCHed key was changed")
        except redis.WatchError:
            pass
    expect_eq(a.get(key), "changed by b", "value after the aborted EXEC")

    # Without interference the same transaction commits.
    with a.pipeline() as pipe:
        pipe.watch(key)
        pipe.multi()
        pipe.set(key, "written by a")
        expect_eq(pipe.execute(), [True], "EXEC without a conflict")
    expect_eq(a.get(key), "written by a", "value after the committed EXEC")

    # After UNWATCH a change by another client no longer aborts EXEC.
    with a.pipeline() as pipe:
        pipe.watch(key)
        pipe.unwatch()
        b.set(key, "changed by b again")
        pipe.multi()
        pipe.set(key, "written by a after UNWATCH")
        expect_eq(pipe.execute(), [True], "EXEC after UNWATCH")
    expect_eq(a.get(key), "written by a after UNWATCH", "value after UNWATCH and EXEC")
    a.close()
    b.close()
    return "WatchError on conflict, commit without one, UNWATCH honoured"


def read_messages(pubsub, wanted, what):
    """Reads messages (subscription replies included) until `wanted` have arrived."""
    messages = []
    deadline = time.monotonic() + PUBSUB_SECONDS
    while len(messages) < wanted:
        left = deadline - time.monotonic()
        expect(
            left > 0,
            f"{what}: {len(messages)} of {wanted} messages within {PUBSUB_SECONDS} s",
        )
        message = pubsub.get_message(timeout=min(left, 1.0))
        if message is not None:
            messages.append(message)
    return messages


def expect_quiet(pubsub, what):
    """Nothing more arrives on the subscriber's connection for a while."""
    if pubsub.connection.can_read(timeout=QUIET_SECONDS):
        message = pubsub.get_message(timeout=0)
        raise CheckFailed(f"{what}: unexpected message {message!r}")


def pubsub_round(env, protocol, count):
    """SUBSCRIBE to 3 channels and PSUBSCRIBE to a pattern covering them, PUBLISH
    `count` messages, and check each arrives once per subscription, in order."""
    subscriber = env.client(protocol)
    publisher = env.client(protocol)
    observer = env.client(protocol)
    base = f"{env.prefix}:resp{protocol}:chan"
    channels = [f"{base}:news", f"{base}:sports", f"{base}:weather"]
    pattern = f"{base}:*"
    numpat_before = observer.pubsub_numpat()

    pubsub = subscriber.pubsub()
    pubsub.subscribe(*channels)
    pubsub.psubscribe(pattern)
    confirmations = read_messages(pubsub, 4, "subscription replies")
    expect_eq(
        [(m["type"], m["channel"], m["data"]) for m in confirmations],
        [("subscribe", c, n) for n, c in enumerate(channels, 1)]
        + [("psubscribe", pattern, 4)],
        "subscription replies (type, channel, subscription count)",
    )

    expect_eq(
        observer.pubsub_numsub(*channels),
        [(c, 1) for c in channels],
        "PUBSUB NUMSUB while subscribed",
    )
    expect_eq(
        observer.pubsub_numpat(), numpat_before + 1, "PUBSUB NUMPAT while subscribed"
    )

    sent = {c: [] for c in channels}
    for i in range(count):
        channel = channels[i % len(channels)]
        data = f"message {i}"
        receivers = publisher.publish(channel, data)
        expect_eq(receivers, 2, f"PUBLISH {channel} receivers (channel + pattern)")
        sent[channel].append(data)

    by_channel = {c: [] for c in channels}
    by_pattern = {c: [] for c in channels}
    for m in read_messages(pubsub, 2 * count, "published messages"):
        expect(m["channel"] in sent, f"message on a channel not published to: {m!r}")
        if m["type"] == "message":
            by_channel[m["channel"]].append(m["data"])
        elif m["type"] == "pmessage" and m["pattern"] == pattern:
            by_pattern[m["channel"]].append(m["data"])
        else:
            raise CheckFailed(f"unexpected message {m!r}")
    expect_quiet(pubsub, "after all published messages")
    for channel in channels:
        expect_eq(by_channel[channel], sent[channel], f"messages on {channel}")
        expect_eq(by_pattern[channel], sent[channel], f"pmessages on {channel}")

    pubsub.unsubscribe()
    pubsub.punsubscribe()
    confirmations = read_messages(pubsub, 4, "unsubscription replies")
    expect_eq(
        sorted(m["channel"] for m in confirmations if m["type"] == "unsubscribe"),
        sorted(channels),
        "channels in unsubscribe replies",
    )
    expect_eq(
        [(m["type"], m["data"]) for m in confirmations],
        [("unsubscribe", 3), ("unsubscribe", 2), ("unsubscribe", 1)]
        + [("punsubscribe", 0)],
        "unsubscription replies (type, remaining subscription count)",
    )
    expect_eq(
        observer.pubsub_numsub(*channels),
        [(c, 0) for c in channels],
        "PUBSUB NUMSUB after unsubscribing",
    )
    expect_eq(
        observer.pubsub_numpat(), numpat_before, "PUBSUB NUMPAT after unsubscribing"
    )
    for channel in channels:
        expect_eq(publisher.publish(channel, "late"), 0, f"PUBLISH {channel} receivers")
    expect_quiet(pubsub, "after unsubscribing")

    pubsub.close()
    for client in (subscriber, publisher, observer):
        client.close()
    return (
        f"{count} messages on {len(channels)} channels received once as message "
        f"and once as pmessage, in order; NUMSUB/NUMPAT right; silent after unsubscribe"
    )


def check_pubsub(env):
    return pubsub_round(env, protocol=2, count=200)


def check_pubsub_resp3(env):
    return pubsub_round(env, protocol=3, count=50)


def check_scan_iter(env):
    """SCAN with MATCH, COUNT and TYPE yields every matching key exactly once."""
    r = env.client()
    strings = [env.key("scan", f"s{i % 100}", i) for i in range(2000)]
    hashes = [env.key("scan", f"h{i}", f"hash{i}") for i in range(20)]
    with r.pipeline(transaction=False) as pipe:
        for key in strings:
            pipe.set(key, "v")
        for key in hashes:
            pipe.hset(key, "field", "v")
        pipe.execute()

    match = f"{env.prefix}:scan:*"
    for type_filter, wanted in (
        (None, strings + hashes),
        ("string", strings),
        ("hash", hashes),
    ):
        found = list(r.scan_iter(match=match, count=100, _type=type_filter))
        label = f"scan_iter(_type={type_filter!r})"
        duplicates = len(found) - len(set(found))
        expect(duplicates == 0, f"{label} yielded {duplicates} keys more than once")
        missing = set(wanted) - set(found)
        extra = set(found) - set(wanted)
        expect(
            not missing and not extra,
            f"{label}: {len(missing)} keys missing (e.g. {sorted(missing)[:3]}), "
            f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})",
        )
    r.close()
    return (
        f"{len(strings) + len(hashes)} keys once each; "
        f"TYPE string {len(strings)}, TYPE hash {len(hashes)}"
    )


def check_lock(env):
    """redis-py's Lock: SET NX PX to acquire, Lua scripts to extend and release."""
    r = env.client()
    other = env.client()
    name = f"lock:{env.prefix}:res"
    env.keys.add(name)

    first = r.lock(name, timeout=5, blocking_timeout=0.2)
    second = other.lock(name, timeout=5, blocking_timeout=0.2)
    expect_eq(first.acquire(), True, "first acquire")
    expect(first.owned(), "first lock does not own the key after acquiring it")
    # shardis numbers every grant: redis-py's own SET NX PX got a fencing token.
    first_token = r.execute_command("LOCK.TOKEN", name, first.local.token)
    expect(
        isinstance(first_token, int) and first_token > 0,
        f"LOCK.TOKEN of the first holder: got {first_token!r}, expected a positive int",
    )
    expect_eq(second.acquire(), False, "second acquire while the lock is held")
    expect(not second.owned(), "second lock owns a key it failed to acquire")

    expect_eq(first.extend(5), True, "extend by 5 s")
    ttl = r.pttl(name)
    expect(5000 < ttl <= 10000, f"PTTL after extend: {ttl} ms, expected 5000-10000")
    expect_eq(first.reacquire(), True, "reacquire")
    ttl = r.pttl(name)
    expect(0 < ttl <= 5000, f"PTTL after reacquire: {ttl} ms, expected 1-5000")

    first.release()
    expect_eq(r.exists(name), 0, "lock key exists after release")
    expect_eq(second.acquire(), True, "second acquire after release")
    expect(second.locked(), "lock not reported as locked")
    second_token = r.execute_command("LOCK.TOKEN", name, second.local.token)
    expect(
        isinstance(second_token, int) and second_token > first_token,
        f"LOCK.TOKEN of the second holder: got {second_token!r}, expected an int "
        f"greater than the first holder's {first_token}",
    )

    # A lock whose key was taken over cannot be released by the old holder.
    r.delete(name)
    expect_eq(first.acquire(blocking=False), True, "acquire after the key was deleted")
    try:
        second.release()
        raise CheckFailed("release of a lost lock succeeded")
    except redis.exceptions.LockNotOwnedError:
        pass
    first.release()

    # As a context manager, on a few names so the scripts run on every shard.
    names = [f"lock:{env.prefix}:cm{i}" for i in range(12)]
    env.keys.update(names)
    for lock_name in names:
        with r.lock(lock_name, timeout=5, blocking_timeout=1) as lock:
            expect(lock.owned(), f"{lock_name} not owned inside the with block")
            expect_eq(lock.extend(1), True, f"extend {lock_name} inside the with block")
        expect_eq(r.exists(lock_name), 0, f"{lock_name} exists after the with block")
    r.close()
    other.close()
    return (
        f"acquire/contend/extend/reacquire/release ok; tokens {first_token} < {second_token}; "
        f"{len(names)} locks as context managers"
    )


# The release script of the Redis documentation's SET NX lock pattern
# (https://redis.io/docs/latest/commands/set/, "Patterns").
RECIPE_RELEASE = """
if redis.call("get",KEYS[1]) == ARGV[1]
then
    return redis.call("del",KEYS[1])
else
    return 0
end
"""


def check_lock_recipe(env):
    """The Redis docs' lock recipe: SET key random NX PX, released by a GET/DEL script."""
    r = env.client()
    other = env.client()
    name = f"lock:{env.prefix}:recipe"
    env.keys.add(name)
    value = os.urandom(16).hex()

    expect_eq(r.set(name, value, nx=True, px=30000), True, "SET NX PX on a free lock")
    expect_eq(
        other.set(name, "someone-else", nx=True, px=30000),
        None,
        "second SET NX PX while the lock is held",
    )
    expect_eq(r.get(name), value, "GET of the held lock key")
    ttl = r.pttl(name)
    expect(0 < ttl <= 30000, f"PTTL of the held lock: {ttl} ms, expected 1-30000")
    token = r.execute_command("LOCK.TOKEN", name, value)
    expect(
        isinstance(token, int) and token > 0,
        f"LOCK.TOKEN of the recipe's holder: got {token!r}, expected a positive int",
    )

    expect_eq(
        other.eval(RECIPE_RELEASE, 1, name, "wrong-value"),
        0,
        "release script with a wrong value",
    )
    expect_eq(r.exists(name), 1, "lock key exists after a release with a wrong value")
    expect_eq(r.eval(RECIPE_RELEASE, 1, name, value), 1, "release script with the value")
    expect_eq(r.exists(name), 0, "lock key exists after the release")
    expect_eq(
        r.execute_command("LOCK.TOKEN", name, value),
        None,
        "LOCK.TOKEN after the release",
    )
    expect_eq(
        r.eval(RECIPE_RELEASE, 1, name, value), 0, "second release of the same lock"
    )
    r.close()
    other.close()
    return f"SET NX PX granted token {token}, refused while held; docs release script ok"


def check_resp3_basic(env):
    """RESP3 replies: maps, doubles, and both inside a MULTI/EXEC pipeline."""
    r = env.client(protocol=3)
    profile = env.key("resp3", "user", "profile")
    scores = env.key("resp3", "user", "scores")

    expect_eq(r.hset(profile, mapping={"name": "alice", "age": "41"}), 2, "HSET")
    expect_eq(r.hgetall(profile), {"name": "alice", "age": "41"}, "HGETALL")
    expect_eq(r.zadd(scores, {"a": 1.5, "b": 2.25, "c": -3}), 3, "ZADD")
    # Under RESP3 redis-py gives [member, score] lists here, not the (member, score)
    # tuples it gives under RESP2.
    pairs = r.zrange(scores, 0, -1, withscores=True)
    expect_eq(pairs, [["c", -3.0], ["a", 1.5], ["b", 2.25]], "ZRANGE WITHSCORES")
    expect(
        all(isinstance(score, float) for _, score in pairs),
        f"ZRANGE WITHSCORES scores are not floats: {pairs!r}",
    )

    # The wire types themselves, past redis-py's reply callbacks.
    connection = r.connection_pool.get_connection("_")
    try:
        expect_eq(
            connection.handshake_metadata.get("proto"), 3, "HELLO 3 reply 'proto'"
        )
        connection.send_command("HGETALL", profile)
        raw = connection.read_response()
        expect(isinstance(raw, dict), f"raw HGETALL reply is not a RESP3 map: {raw!r}")
        connection.send_command("ZSCORE", scores, "b")
        raw = connection.read_response()
        expect(
            isinstance(raw, float), f"raw ZSCORE reply is not a RESP3 double: {raw!r}"
        )
    finally:
        r.connection_pool.release(connection)

    with r.pipeline() as pipe:  # transaction=True is redis-py's default
        pipe.hgetall(profile)
        pipe.zscore(scores, "b")
        pipe.zincrby(scores, 0.5, "a")
        pipe.zrange(scores, 0, 0, withscores=True)
        pipe.hget(profile, "missing")
        pipe.hincrby(profile, "age", 1)
        replies = pipe.execute()
    expect_eq(
        replies,
        [{"name": "alice", "age": "41"}, 2.25, 2.0, [["c", -3.0]], None, 42],
        "MULTI/EXEC pipeline replies",
    )
    r.close()
    return "map, double and null replies right, also inside MULTI/EXEC"


def check_server_commands(env):
    """What tools and libraries ask of the server: CLIENT INFO, INFO, CONFIG GET, ROLE."""
    for protocol in (2, 3):
        r = env.client(protocol=protocol)
        info = r.client_info()
        # redis-py parses every field; these are the ones it or its users index by name.
        for field in ("id", "addr", "fd", "qbuf", "oll", "omem", "tot-mem", "events", "cmd"):
            expect(field in info, f"RESP{protocol} client_info() lacks {field!r}: {info!r}")
        expect_eq(info["cmd"], "client|info", f"RESP{protocol} client_info() cmd")
        server = r.info()
        for field in ("used_memory", "role", "blocked_clients", "connected_clients"):
            expect(field in server, f"RESP{protocol} INFO lacks {field!r}")
        expect_eq(server["role"], "master", f"RESP{protocol} INFO role")
        expect(server["used_memory"] > 0, f"RESP{protocol} INFO used_memory not positive")
        expect_eq(r.config_get("databases"), {"databases": "1"}, f"RESP{protocol} CONFIG GET")
        expect_eq(r.role()[0], "master", f"RESP{protocol} ROLE")
        r.close()
    return "CLIENT INFO, INFO, CONFIG GET and ROLE parsed in RESP2 and RESP3"


CHECKS = [
    ("pipeline", check_pipeline),
    ("transaction", check_transaction),
    ("watch_conflict", check_watch_conflict),
    ("pubsub", check_pubsub),
    ("pubsub_resp3", check_pubsub_resp3),
    ("scan_iter", check_scan_iter),
    ("lock", check_lock),
    ("lock_recipe", check_lock_recipe),
    ("resp3_basic", check_resp3_basic),
    ("server_commands", check_server_commands),
]


# ---------------------------------------------------------------- runner


def on_alarm(signum, frame):
    raise CheckTimedOut(f"did not finish within {CHECK_SECONDS} s")


def where(exception):
    """The line of this script that the exception passed through last."""
    here = os.path.abspath(__file__)
    frames = traceback.extract_tb(exception.__traceback__)
    ours = [f for f in frames if os.path.abspath(f.filename) == here]
    frame = ours[-1] if ours else frames[-1]
    return f"line {frame.lineno}, in {frame.name}"


def run(env):
    signal.signal(signal.SIGALRM, on_alarm)
    failed = []
    for name, check in CHECKS:
        signal.alarm(CHECK_SECONDS)
        try:
            summary = check(env)
            print(f"{name}: {summary}", flush=True)
        except (CheckFailed, CheckTimedOut) as e:
            failed.append(name)
            print(f"FAILED {name}: {e} ({where(e)})", file=sys.stderr, flush=True)
        except redis.RedisError as e:
            failed.append(name)
            print(
                f"FAILED {name}: {type(e).__name__}: {e} ({where(e)})",
                file=sys.stderr,
                flush=True,
            )
        except Exception as e:  # a reply redis-py could not digest, or a bug here
            failed.append(name)
            print(f"FAILED {name}: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
        finally:
            signal.alarm(0)

    signal.alarm(CHECK_SECONDS)
    try:
        env.cleanup()
    except Exception as e:
        print(f"warning: cleanup failed: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        signal.alarm(0)

    if failed:
        print(
            f"redis_py_check: {len(failed)} of {len(CHECKS)} checks FAILED: "
            + ", ".join(failed),
            file=sys.stderr,
        )
        return 1
    print(
        f"redis_py_check: all {len(CHECKS)} checks passed (redis-py {redis.__version__})"
    )
    return 0


def main(argv):
    if len(argv) != 2 or ":" not in argv[1]:
        print(f"usage: {argv[0]} HOST:PORT", file=sys.stderr)
        return 2
    host, _, port = argv[1].rpartition(":")
    return run(Env(host, int(port)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
