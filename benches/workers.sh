#!/usr/bin/env bash
# What a second worker thread costs, and what part of that the load generator makes: the proxy's
# CPU seconds per 100k requests (SET and GET, redis-benchmark -r 100000) for five ways of
# serving 50 clients, on the same three redis-servers, by turns, each round:
#
#   w1, one benchmark      workers = 1, one redis-benchmark -c 50 (as benches/load.sh runs it)
#   w2, one benchmark      workers = 2, the same
#   w1, two benchmarks     workers = 1, two redis-benchmark -c 25 at once
#   w2, two benchmarks     workers = 2, the same
#   two w1 processes       two proxies with workers = 1, a redis-benchmark -c 25 each, at once:
#                          the load split over two event loops that share nothing
#
# Each is printed with its ratio to the first, the medians over the rounds, and the range.
#
# Usage: benches/workers.sh [BIN] [ROUNDS] [N] [PIPELINE]
#   BIN: a shardis build (default: target/release/shardis, built if missing); ROUNDS (5);
#   N: requests per test and row, split between two benchmarks where there are two (60000);
#   PIPELINE: redis-benchmark -P (1).
# All traffic stays on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

bin=${1:-}
[[ -n $bin ]] && bin=$(realpath "$bin")
rounds=${2:-5}
n=${3:-60000}
pipeline=${4:-1}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh
need redis-server redis-cli redis-benchmark python3
bench_timeout=600
if [[ -z $bin ]]; then
    cargo build --release --quiet
    bin=$root/target/release/shardis
fi

bench_start workers

read -ra ports <<<"$(free_ports 7)"
nodes=("${ports[@]:0:3}")
for p in "${nodes[@]}"; do
    redis_node redis-server "$p" "$tmp/redis-$p.log"
done

# proxy NAME PORT WORKERS: starts a proxy in front of the three nodes; its pid goes in
# proxy_pid[NAME].
declare -A proxy_pid proxy_port
proxy() {
    {
        printf 'listen = "127.0.0.1:%s"\nworkers = %s\n' "$2" "$3"
        local i=0
        for p in "${nodes[@]}"; do
            printf '[[shards]]\nname = "%s"\nprimary = "127.0.0.1:%s"\n' "$((i++))" "$p"
        done
    } >"$tmp/$1.toml"
    "$bin" --config "$tmp/$1.toml" >"$tmp/$1.log" 2>&1 &
    pids+=($!)
    proxy_pid[$1]=$!
    proxy_port[$1]=$2
    wait_pong "$bin" "$2" $! "$tmp/$1.log"
}
proxy w1 "${ports[3]}" 1
proxy w2 "${ports[4]}" 2
proxy a "${ports[5]}" 1
proxy b "${ports[6]}" 1

# bench PORT CLIENTS REQUESTS: one redis-benchmark run, SET then GET.
bench() {
    timeout "$bench_timeout" redis-benchmark -p "$1" -c "$2" -n "$3" -P "$pipeline" \
        -r 100000 -t set,get -q >/dev/null 2>&1 || die "redis-benchmark on port $1 failed"
}

# run PROXY...: the proxies' CPU ticks over one row's load: one benchmark of 50 clients when
# given one proxy, else a benchmark of 25 clients at each given port at once ("w1 w1": two at
# the same proxy).
run() {
    local before=0 after=0 name bg=()
    for name in $(printf '%s\n' "$@" | sort -u); do before=$((before + $(cpu_ticks "${proxy_pid[$name]}"))); done
    if [[ $# -eq 1 ]]; then
        bench "${proxy_port[$1]}" 50 "$n"
    else
        bench "${proxy_port[$1]}" 25 $((n / 2)) &
        bg+=($!)
        bench "${proxy_port[$2]}" 25 $((n / 2))
        wait "${bg[@]}" || die "a redis-benchmark on port $1 failed"
    fi
    for name in $(printf '%s\n' "$@" | sort -u); do after=$((after + $(cpu_ticks "${proxy_pid[$name]}"))); done
    echo $((after - before))
}

echo "machine: $(nproc) CPUs; $(redis-server --version | cut -d' ' -f3); shardis: $bin"
echo "redis-benchmark -r 100000 -t set,get -P $pipeline; $n requests per test and row; $rounds round(s)"
for r in $(seq "$rounds"); do
    one=$(run w1)
    two=$(run w2)
    one_split=$(run w1 w1)
    two_split=$(run w2 w2)
    apart=$(run a b)
    row="$one $two $one_split $two_split $apart"
    echo "round $r  ticks: $row"
    echo "$row" >>"$tmp/ticks"
done

python3 - "$tmp/ticks" "$n" "$(getconf CLK_TCK)" <<'PY'
import statistics as st
import sys

path, n, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [list(map(int, line.split())) for line in open(path)]
names = [
    "w1, one benchmark -c 50",
    "w2, one benchmark -c 50",
    "w1, two benchmarks -c 25",
    "w2, two benchmarks -c 25",
    "two w1 processes, -c 25 each",
]
print()
print(f"{'row':30s}  cpu s/100k  x first row  (range)")
for k, name in enumerate(names):
    col = [r[k] for r in rows]
    ratios = [c / r[0] for c, r in zip(col, rows) if r[0]]
    per = st.median(col) / hz * 100_000 / (2 * n)
    print(f"{name:30s}  {per:10.3f}  {st.median(ratios):11.3f}  ({min(ratios):.2f}-{max(ratios):.2f})")
print("cpu = the proxy's (both proxies' in the last row) user+system CPU seconds per 100k requests.")
PY
