#!/usr/bin/env bash
# One big SET and one big GET through two shardis builds, by turns: how long each takes and how
# much memory the proxy needs for it, when the client writes and reads as fast as the socket
# goes.
#
# One redis-server and a proxy of each build (workers = 1) in front of it. Each round SETs a
# value of MIB MiB through each proxy in turn, written from a file through a bash TCP socket,
# then GETs it, reading the reply with `head -c`, and prints: the time the SET took (to its
# +OK) and the proxy's peak resident memory during it; the time the GET took (from before the
# request to its last byte); the proxy's resident memory before it and at its peak during it
# (VmHWM, reset first); the proxy's CPU time for it, in clock ticks, and how long its threads
# waited for a core meanwhile (run delay, from /proc/PID/task/*/schedstat). Then one more GET,
# during which another client sends 100 small GETs (redis-benchmark -c 1): the slowest of
# them. The same SET and GET straight to the node are timed for reference.
#
# Usage: benches/big_get.sh BIN_A BIN_B [ROUNDS] [MIB]   (defaults: 5 rounds, 200 MiB)
# All traffic stays on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

[[ $# -ge 2 ]] || {
    sed -n '2,17p' "$0"
    exit 1
}
# The builds' paths, resolved before the script moves to the repository's root.
bins=("$(realpath "$1")" "$(realpath "$2")")
rounds=${3:-5}
mib=${4:-200}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh
need redis-server redis-cli redis-benchmark python3 head timeout stat
# A proxy that never finishes a reply ends the run, not hangs it.
bench_timeout=300

bench_start big-get

read -ra ports <<<"$(free_ports 3)"
node=${ports[0]}

redis_node redis-server "$node" "$tmp/redis.log"
proxy_pids=()
for i in 0 1; do
    printf 'listen = "127.0.0.1:%s"\nworkers = 1\n[[shards]]\nname = "a"\nprimary = "127.0.0.1:%s"\n' \
        "${ports[i + 1]}" "$node" >"$tmp/$i.toml"
    "${bins[i]}" --config "$tmp/$i.toml" >"$tmp/shardis-$i.log" 2>&1 &
    pids+=($!)
    proxy_pids+=($!)
    wait_pong "${bins[i]}" "${ports[i + 1]}" $! "$tmp/shardis-$i.log"
done
head -c $((mib << 20)) /dev/zero | tr '\0' x >"$tmp/value"
redis-cli -p "$node" SET small v >/dev/null

# waited PID: how long the process's threads have waited for a core, in ms.
waited() { cat /proc/"$1"/task/*/schedstat | awk '{ ns += $2 } END { printf "%.0f", ns / 1e6 }'; }

# get PORT: GET big, read to its last byte; prints the milliseconds it took.
get() {
    local start header="\$$((mib << 20))"
    start=$(date +%s%N)
    raw_get "$1" big $((${#header} + (mib << 20) + 4))
    echo $((($(date +%s%N) - start) / 1000000))
}

# set_big PORT: SET big from the file, to its +OK; prints the milliseconds it took.
set_big() {
    local start
    start=$(date +%s%N)
    raw_set "$1" big "$tmp/value" || die "SET through port $1 failed"
    echo $((($(date +%s%N) - start) / 1000000))
}

# small_max PORT: GET big in the background, and 50 ms later 100 small GETs from another
# client; prints the slowest of them, in ms.
small_max() {
    get "$1" >/dev/null &
    local reader=$!
    sleep 0.05
    redis-benchmark -p "$1" -c 1 -n 100 --csv GET small 2>/dev/null |
        awk -F, 'NR == 2 { gsub(/"/, "", $8); print $8 }'
    wait "$reader"
}

echo "SET of $mib MiB: ms to its +OK, proxy peak resident MB. GET of it: ms from request to last"
echo "byte; proxy resident MB idle and peak; proxy CPU ticks and ms waited for a core during it;"
echo "the slowest small GET during one more, in ms"
printf '%-6s %-40s %7s %8s %8s %6s %6s %6s %7s %10s\n' round build "SET ms" "SET peak" "GET ms" \
    idle peak ticks waited "small max"
for round in $(seq "$rounds"); do
    printf '%-6s %-40s %7s %8s %8s\n' "$round" "(straight to the node)" "$(set_big "$node")" "" \
        "$(get "$node")"
    for i in 0 1; do
        pid=${proxy_pids[i]}
        echo 5 >"/proc/$pid/clear_refs"
        set_ms=$(set_big "${ports[i + 1]}")
        set_peak=$(rss_mb "$pid" VmHWM)
        idle=$(rss_mb "$pid")
        echo 5 >"/proc/$pid/clear_refs"
        t0=$(cpu_ticks "$pid")
        w0=$(waited "$pid")
        ms=$(get "${ports[i + 1]}")
        t1=$(cpu_ticks "$pid")
        w1=$(waited "$pid")
        peak=$(rss_mb "$pid" VmHWM)
        small=$(small_max "${ports[i + 1]}")
        printf '%-6s %-40s %7s %8s %8s %6s %6s %6s %7s %10s\n' "$round" "${bins[i]}" "$set_ms" \
            "$set_peak" "$ms" "$idle" "$peak" $((t1 - t0)) $((w1 - w0)) "$small"
    done
done
