#!/usr/bin/env bash
# What a lock grant costs: redis-benchmark through shardis (one shard) with a plain
# `SET k v NX PX` outside the lock prefix, the same SET under `lock:` (a grant: a Lua
# script, a token, and a WAIT for the replicas), and LOCK.ACQUIRE. Keys are random in
# 1e8, so nearly every grant is of a free lock. Run once with no replica and once with
# one replica (the grant then waits for it); prints the median of the rounds and the ratio
# to the plain SET.
#
# Usage: benches/locks.sh
# Environment:
#   LOCKS_N        requests per run (default 100000)
#   LOCKS_ROUNDS   rounds (default 3)
#   LOCKS_CLIENTS  redis-benchmark connections (default 50)
#   LOCKS_TIMEOUT  seconds one redis-benchmark run may take before the script fails (default 600)
#   SHARDIS_BIN    shardis binary (default: cargo build --release)
#   KEEP_TMP=1     keep the temp dir with configs, logs and raw results
#
# All traffic stays on 127.0.0.1, on free ports; every process started here is stopped on
# exit, also on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
n=${LOCKS_N:-100000}
rounds=${LOCKS_ROUNDS:-3}
clients=${LOCKS_CLIENTS:-50}
bench_timeout=${LOCKS_TIMEOUT:-600}
bench_start locks
need redis-server redis-cli redis-benchmark python3 timeout
if [[ -z "${SHARDIS_BIN:-}" ]]; then
    cargo build --release --quiet
    SHARDIS_BIN="$root/target/release/shardis"
fi

commands=(
    "SET plain:__rand_int__ v NX PX 10000"
    "SET lock:__rand_int__ v NX PX 10000"
    "LOCK.ACQUIRE lk:__rand_int__ v 10000"
)

for replicas in 0 1; do
    run="$tmp/r$replicas"
    mkdir -p "$run/p" "$run/r"
    read -r p r proxy <<<"$(free_ports 3)"
    redis_node redis-server "$p" "$run/p.log" --dir "$run/p"
    replica_line=""
    if [[ $replicas == 1 ]]; then
        redis_node "redis-server (replica)" "$r" "$run/r.log" --dir "$run/r" --replicaof 127.0.0.1 "$p"
        replica_line="replicas = [\"127.0.0.1:$r\"]"
    fi
    cat >"$run/shardis.toml" <<EOF
listen = "127.0.0.1:$proxy"
workers = 1
[[shards]]
name = "a"
primary = "127.0.0.1:$p"
$replica_line
EOF
    "$SHARDIS_BIN" --config "$run/shardis.toml" 2>"$run/shardis.log" &
    pids+=($!)
    wait_pong shardis "$proxy" "$!" "$run/shardis.log"
    # Until the replica has synced and been seen healthy, a grant may be NOTREPLICATED.
    for _ in $(seq 100); do
        out=$(redis-cli -h 127.0.0.1 -p "$proxy" LOCK.ACQUIRE "lk:ready" ready 1000 2>&1 || true)
        [[ $out == *NOTREPLICATED* || $out == *TRYAGAIN* ]] || break
        sleep 0.1
    done
    for cmd in "${commands[@]}"; do
        for round in $(seq "$rounds"); do
            # shellcheck disable=SC2086
            timeout "$bench_timeout" redis-benchmark -h 127.0.0.1 -p "$proxy" -n "$n" \
                -r 100000000 -c "$clients" -q $cmd 2>&1 |
                tr '\r' '\n' | grep "requests per second" | tail -1 |
                sed -E 's/.*: ([0-9.]+) requests per second, p50=([0-9.]+) msec.*/\1 \2/' \
                    >>"$run/$(echo "$cmd" | cut -d' ' -f1-2 | tr ' :' '__')"
        done
    done
    for p_ in "${pids[@]}"; do kill "$p_" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-9s %-40s %12s %9s %8s\n' replicas command "rps(median)" "p50 ms" ratio
for replicas in 0 1; do
    base=""
    for cmd in "${commands[@]}"; do
        f="$tmp/r$replicas/$(echo "$cmd" | cut -d' ' -f1-2 | tr ' :' '__')"
        rps=$(cut -d' ' -f1 "$f" | median)
        p50=$(cut -d' ' -f2 "$f" | median)
        base=${base:-$rps}
        printf '%-9s %-40s %12s %9s %8s\n' "$replicas" "$cmd" "$rps" "$p50" \
            "$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')"
    done
done
