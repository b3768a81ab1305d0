#!/usr/bin/env bash
# Load comparison: redis-benchmark against one Redis node, nutcracker
# (twemproxy) and shardis, all in one run, on the same three backends.
#
# Both proxies get the same pool: servers named a, b, c with weight 1,
# fnv1a_64 hashing, ketama distribution and "{}" hash tags, so they place
# every key on the same backend. "direct" is the first backend alone: the
# numbers of a single Redis node, for reference, not a sharded setup.
#
# Three loads: 50 clients at -P 1 and at -P 16, and one client at -P 1 (where
# the latency of one request shows). For each load and each round, the
# targets run in turn (direct, nutcracker, shardis, then shardis with each
# `workers` setting asked for), so slow drift of the machine hits all of them
# alike. The table shows medians over the rounds, throughput ratios, the
# median latency (p50), and each proxy's CPU time per 100k requests, read from
# /proc/PID/stat around its runs.
#
# Usage: benches/load.sh [--quick] [--blocking] [--big] [--profile]
#   --quick              small request counts and one round (smoke test)
#   --blocking           also measure GET/SET latency through shardis while 50
#                        other clients sit in BLPOP (2 s timeout, re-issued),
#                        against the same run without them
#   --big                also, per proxy, SET a big value once and GET it 5 times
#                        (50 and 200 MiB): resident memory at idle, its peak during
#                        the SET, during the GETs and during one more GET read as fast
#                        as the socket gives it, after them and 10 s later; and the
#                        slowest of 100 small GETs that another client sends to the
#                        same node during one more big GET
#   --profile            also, per proxy and load, one more run with the proxy's stacks
#                        sampled (perf record -e cpu-clock -g; installs Debian's
#                        linux-perf if perf is missing): where its CPU time goes, in user
#                        space, switching away (preempted, or sleeping), waking the readers
#                        of what it writes, and the rest of the kernel (benches/stacks.py);
#                        the samples are kept with KEEP_TMP=1, for perf report. The kernel's
#                        part is sampled as root, or with kernel.perf_event_paranoid at 1
#                        or less
# Environment:
#   LOAD_N               requests per test at -P 1   (default 200000; quick 20000)
#   LOAD_N_PIPELINE      requests per test at -P 16  (default 1000000; quick 100000)
#   LOAD_N_SINGLE        requests per test at -c 1   (default 20000; quick 5000)
#   LOAD_ROUNDS          rounds                      (default 3; quick 1)
#   LOAD_CLIENTS         redis-benchmark connections (default 50)
#   LOAD_SHARDIS_WORKERS `workers` settings to measure beside the configuration as
#                        shipped (`workers` not set), one shardis each (default
#                        "1 2": nutcracker's single thread, and two)
#   LOAD_TIMEOUT         seconds one redis-benchmark run may take (default 600)
#   SHARDIS_BIN          shardis binary to use; skips the cargo build
#   SHARDIS_BASE_BIN     a second shardis binary (an earlier build, say), measured as
#                        shipped beside the first in every round, as `shardis-base`
#   LOAD_SESSIONS=own    start each server (the redis-servers, nutcracker, every
#                        shardis) in a session of its own (setsid), as separate
#                        services would run; where the kernel groups CPU time by
#                        session (kernel.sched_autogroup_enabled), it then shares the
#                        cores between them rather than between their threads.
#                        LOAD_SESSIONS=shared, the default: all in this script's session
#   SKIP_SHARDIS=1       leave shardis out (to develop this script)
#   KEEP_TMP=1           keep the temp dir with configs, logs and raw results
#
# All traffic stays on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=benches/lib.sh
source benches/lib.sh
# rustup's cargo and Debian's /usr/sbin (nutcracker) may be missing from PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/local/sbin:/usr/sbin"

# ---------------------------------------------------------------- arguments

quick=0
blocking=0
big=0
profile=0
for arg in "$@"; do
    case $arg in
        --quick) quick=1 ;;
        --blocking) blocking=1 ;;
        --big) big=1 ;;
        --profile) profile=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "load.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

if ((quick)); then
    n_plain=${LOAD_N:-20000}
    n_pipeline=${LOAD_N_PIPELINE:-100000}
    n_single=${LOAD_N_SINGLE:-5000}
    rounds=${LOAD_ROUNDS:-1}
else
    n_plain=${LOAD_N:-200000}
    n_pipeline=${LOAD_N_PIPELINE:-1000000}
    n_single=${LOAD_N_SINGLE:-20000}
    rounds=${LOAD_ROUNDS:-3}
fi
clients=${LOAD_CLIENTS:-50}
# What each server is started with: nothing, or setsid (LOAD_SESSIONS=own). Started in the
# background by a script, a server is not a process group leader, so setsid runs it in place
# and $! is still its pid.
case ${LOAD_SESSIONS:-shared} in
    shared) server_prefix=() ;;
    own) server_prefix=(setsid) ;;
    *) die "LOAD_SESSIONS is 'shared' or 'own', not '$LOAD_SESSIONS'" ;;
esac
bench_timeout=${LOAD_TIMEOUT:-600}
skip_shardis=${SKIP_SHARDIS:-0}
[[ "$skip_shardis" == 0 || -z "$skip_shardis" ]] && skip_shardis=0 || skip_shardis=1

# The loads: clients, pipeline depth and request count of each.
loads=(c50p1 c50p16 c1p1)
declare -A clients_for=([c50p1]=$clients [c50p16]=$clients [c1p1]=1)
declare -A pipeline_for=([c50p1]=1 [c50p16]=16 [c1p1]=1)
declare -A requests_for=([c50p1]=$n_plain [c50p16]=$n_pipeline [c1p1]=$n_single)

# ------------------------------------------------------------ cleanup setup

bench_start load

# ------------------------------------------------------------ dependencies

need redis-server redis-cli redis-benchmark nutcracker python3 timeout
if ((profile)); then
    bash scripts/install-deps.sh perf
    command -v perf >/dev/null 2>&1 || die "'perf' not found"
fi
clk_tck=$(getconf CLK_TCK)

shardis_bin=""
if ((!skip_shardis)); then
    if [[ -n "${SHARDIS_BIN:-}" ]]; then
        shardis_bin=$SHARDIS_BIN
    else
        locked=()
        [[ -f Cargo.lock ]] && locked=(--locked)
        echo "building shardis (release)..."
        cargo build --release --quiet "${locked[@]}"
        shardis_bin=${CARGO_TARGET_DIR:-target}/release/shardis
    fi
    [[ -x "$shardis_bin" ]] || die "shardis binary '$shardis_bin' is not executable"
fi
base_bin=""
if ((!skip_shardis)) && [[ -n "${SHARDIS_BASE_BIN:-}" ]]; then
    base_bin=$SHARDIS_BASE_BIN
    [[ -x "$base_bin" ]] || die "shardis binary '$base_bin' (SHARDIS_BASE_BIN) is not executable"
fi

# ----------------------------------------------------------------- backends

worker_settings=(${LOAD_SHARDIS_WORKERS-1 2})
read -ra ports <<<"$(free_ports $((7 + ${#worker_settings[@]})))"
port_a=${ports[0]} port_b=${ports[1]} port_c=${ports[2]}
port_nut=${ports[3]} port_nut_stats=${ports[4]} port_shardis=${ports[5]} port_base=${ports[6]}
backend_ports=("$port_a" "$port_b" "$port_c")

for port in "${backend_ports[@]}"; do
    mkdir -p "$tmp/redis-$port"
    "${server_prefix[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$tmp/redis-$port" --logfile "$tmp/redis-$port.log" \
        >/dev/null 2>&1 &
    pids+=("$!")
    redis_pid=$!
    wait_pong "redis-server" "$port" "$redis_pid" "$tmp/redis-$port.log"
done

# --------------------------------------------------------------- nutcracker

cat >"$tmp/nutcracker.yml" <<YAML
shardis_load:
  listen: 127.0.0.1:$port_nut
  hash: fnv1a_64
  distribution: ketama
  hash_tag: "{}"
  redis: true
  auto_eject_hosts: false
  server_connections: 1
  timeout: 2000
  servers:
    - "127.0.0.1:$port_a:1 a"
    - "127.0.0.1:$port_b:1 b"
    - "127.0.0.1:$port_c:1 c"
YAML
nutcracker --test-conf --conf-file="$tmp/nutcracker.yml" >"$tmp/nutcracker-test.log" 2>&1 ||
    { cat "$tmp/nutcracker-test.log" >&2; die "nutcracker rejected its config"; }
# Stats go to a free loopback port instead of the default 0.0.0.0:22222.
"${server_prefix[@]}" nutcracker --conf-file="$tmp/nutcracker.yml" --output="$tmp/nutcracker.log" \
    --stats-addr=127.0.0.1 --stats-port="$port_nut_stats" >/dev/null 2>&1 &
nut_pid=$!
pids+=("$nut_pid")
wait_pong nutcracker "$port_nut" "$nut_pid" "$tmp/nutcracker.log"

# ------------------------------------------------------------------ shardis

shardis_pid=""
declare -A shardis_w_pid=() shardis_w_port=()
# start_shardis NAME PORT [WORKERS [BINARY]]: a shardis on the three backends, as shipped but
# for the pool and, when given, `workers`; sets started_pid.
start_shardis() {
    local name=$1 port=$2 workers=${3:-} bin=${4:-$shardis_bin}
    {
        echo "listen = \"127.0.0.1:$port\""
        [[ -n "$workers" ]] && echo "workers = $workers"
        echo
        echo "[routing]"
        echo "hash = \"fnv1a_64\""
        echo "distribution = \"ketama\""
        echo "hash_tag = \"{}\""
        name_of=(a b c)
        for i in 0 1 2; do
            echo
            echo "[[shards]]"
            echo "name = \"${name_of[i]}\""
            echo "primary = \"127.0.0.1:${backend_ports[i]}\""
            echo "replicas = []"
            echo "weight = 1"
        done
    } >"$tmp/$name.toml"
    # Quiet logging unless the caller asks for more: logging is not what we measure.
    RUST_LOG=${RUST_LOG:-warn} "${server_prefix[@]}" "$bin" --config "$tmp/$name.toml" \
        >"$tmp/$name.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
    wait_pong "$name" "$port" "$started_pid" "$tmp/$name.log"
}
base_pid=""
if ((!skip_shardis)); then
    start_shardis shardis "$port_shardis"
    shardis_pid=$started_pid
    if [[ -n "$base_bin" ]]; then
        start_shardis shardis-base "$port_base" "" "$base_bin"
        base_pid=$started_pid
    fi
    for i in "${!worker_settings[@]}"; do
        w=${worker_settings[i]}
        shardis_w_port[$w]=${ports[7 + i]}
        start_shardis "shardis-w$w" "${shardis_w_port[$w]}" "$w"
        shardis_w_pid[$w]=$started_pid
    done

    # Both proxies must place keys alike, or the comparison is of different
    # things: write keys through shardis, read them back through nutcracker.
    check_keys=300
    for i in $(seq "$check_keys"); do echo "SET load:check:$i v$i"; done |
        redis-cli -h 127.0.0.1 -p "$port_shardis" >/dev/null
    found=$(for i in $(seq "$check_keys"); do echo "GET load:check:$i"; done |
        redis-cli -h 127.0.0.1 -p "$port_nut" | grep -c '^v' || true)
    for i in $(seq "$check_keys"); do echo "DEL load:check:$i"; done |
        redis-cli -h 127.0.0.1 -p "$port_shardis" >/dev/null
    if ((found == check_keys)); then
        echo "placement check: all $check_keys keys written via shardis are found via nutcracker"
    else
        echo "WARNING: placement differs: only $found of $check_keys keys written via shardis" \
            "are found via nutcracker" >&2
    fi
fi

# ---------------------------------------------------------------- the runs

# shardis is the configuration as shipped; shardis-wN the same with `workers = N`.
targets=(direct nutcracker)
declare -A port_of=([direct]=$port_a [nutcracker]=$port_nut [shardis]=$port_shardis)
declare -A pid_of=([direct]="" [nutcracker]=$nut_pid [shardis]=$shardis_pid)
if ((!skip_shardis)); then
    targets+=(shardis)
    if [[ -n "$base_bin" ]]; then
        targets+=(shardis-base)
        port_of[shardis-base]=$port_base
        pid_of[shardis-base]=$base_pid
    fi
    for w in "${worker_settings[@]}"; do
        targets+=("shardis-w$w")
        port_of[shardis-w$w]=${shardis_w_port[$w]}
        pid_of[shardis-w$w]=${shardis_w_pid[$w]}
    done
fi

echo
echo "machine: $(nproc) CPUs; $(redis-server --version | awk '{print $1, $2, $3}');" \
    "$(nutcracker --version 2>&1 | head -n 1); servers' sessions: ${LOAD_SESSIONS:-shared}"
# The checkout's commit says what was measured only when the binary was built from it here.
if [[ -n "${SHARDIS_BIN:-}" ]]; then
    built_from="given by SHARDIS_BIN"
else
    built_from=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
fi
echo "shardis: ${shardis_bin:-(skipped)} ($built_from); shardis: as shipped, workers not set;" \
    "shardis-wN: workers = N"
[[ -n "$base_bin" ]] && echo "shardis-base: $base_bin (SHARDIS_BASE_BIN), as shipped"
echo "redis-benchmark -r 100000 -t set,get; -c $clients -P 1: -n $n_plain;" \
    "-c $clients -P 16: -n $n_pipeline; -c 1 -P 1: -n $n_single; $rounds round(s)"
echo

# Raw results, one line per measurement, summarised at the end:
#   rps.csv: round,load,target,test,requests_per_second,p50_ms
#   cpu.csv: round,load,target,cpu_seconds,requests,user_seconds
: >"$tmp/rps.csv"
: >"$tmp/cpu.csv"

for round in $(seq "$rounds"); do
    for load in "${loads[@]}"; do
        n=${requests_for[$load]}
        pipeline=${pipeline_for[$load]}
        for target in "${targets[@]}"; do
            port=${port_of[$target]}
            pid=${pid_of[$target]}
            out="$tmp/bench-r$round-$load-$target"

            [[ -n "$pid" ]] && before=$(cpu_ticks_apart "$pid")
            # In the background and waited for, so Ctrl-C or TERM reach the
            # cleanup at once; timeout bounds a proxy that stops answering.
            # (redis-benchmark first sends CONFIG GET, which nutcracker
            # refuses; it only warns about that, on stderr.)
            timeout "$bench_timeout" redis-benchmark -h 127.0.0.1 -p "$port" \
                -c "${clients_for[$load]}" -r 100000 -n "$n" -t set,get -P "$pipeline" -q --csv \
                >"$out.csv" 2>"$out.err" &
            bench_pid=$!
            pids+=("$bench_pid")
            bench_status=0
            wait "$bench_pid" || bench_status=$?
            if ((bench_status != 0)); then
                tail -n 5 "$out.err" >&2 || true
                die "redis-benchmark against $target ($load) failed with status $bench_status"
            fi

            # Keep the "TEST",rps,...,p50 rows of the CSV (the header says "test").
            line=$(printf 'round %s  %-6s  %-11s' "$round" "$load" "$target")
            while IFS=, read -r test rps _avg _min p50 _; do
                test=${test//\"/} rps=${rps//\"/} p50=${p50//\"/}
                [[ "$test" == SET || "$test" == GET ]] || continue
                echo "$round,$load,$target,$test,$rps,$p50" >>"$tmp/rps.csv"
                line+="  $test $(printf '%10.0f' "$rps") rps p50 $p50 ms"
            done <"$out.csv"

            if [[ -n "$pid" ]]; then
                kill -0 "$pid" 2>/dev/null || die "$target died during the run (see $tmp)"
                after=$(cpu_ticks_apart "$pid")
                read -r user system user_after system_after <<<"$before $after"
                user=$((user_after - user)) system=$((system_after - system))
                cpu=$(awk -v t=$((user + system)) -v hz="$clk_tck" 'BEGIN { printf "%.2f", t / hz }')
                user=$(awk -v t="$user" -v hz="$clk_tck" 'BEGIN { printf "%.2f", t / hz }')
                echo "$round,$load,$target,$cpu,$((n * 2)),$user" >>"$tmp/cpu.csv"
                line+="  cpu ${cpu} s (user ${user})"
            fi
            echo "$line"
        done
    done
done

# ------------------------------------------------------------------ summary

echo
python3 - "$tmp/rps.csv" "$tmp/cpu.csv" "$rounds" <<'PY'
import csv, sys
from collections import defaultdict
from statistics import median

rps_path, cpu_path, rounds = sys.argv[1], sys.argv[2], sys.argv[3]

rps = defaultdict(list)      # (load, test, target) -> [requests/s per round]
p50 = defaultdict(list)      # (load, test, target) -> [median latency, ms, per round]
for _, load, target, test, value, ms in csv.reader(open(rps_path)):
    rps[(load, test, target)].append(float(value))
    p50[(load, test, target)].append(float(ms))

cpu = defaultdict(list)      # (load, target) -> [CPU s per 100k requests per round]
user = defaultdict(list)     # (load, target) -> [of which user space, likewise]
for _, load, target, seconds, requests, user_seconds in csv.reader(open(cpu_path)):
    cpu[(load, target)].append(float(seconds) / int(requests) * 100_000)
    user[(load, target)].append(float(user_seconds) / int(requests) * 100_000)

def med(values):
    return median(values) if values else None

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"

def num(v, fmt):
    return format(v, fmt) if v is not None else "-"

LOADS = {"c50p1": "-c 50 -P 1", "c50p16": "-c 50 -P 16", "c1p1": "-c 1 -P 1"}
targets = [t for t in ("direct", "nutcracker", "shardis", "shardis-base")
           if any(k[2] == t for k in rps)]
targets += sorted({k[2] for k in rps if k[2].startswith("shardis-w")},
                  key=lambda t: int(t.removeprefix("shardis-w")))
head = ("load", "test", "target", "r/s", "x nutcracker", "x direct", "p50 ms",
        "p50 x nutcracker", "cpu", "user", "cpu x nutcracker", "cpu x w1")
rows = []
for load in (l for l in LOADS if any(k[0] == l for k in rps)):
    nut_cpu, w1_cpu = med(cpu[(load, "nutcracker")]), med(cpu[(load, "shardis-w1")])
    for test in ("SET", "GET"):
        d, n = (med(rps[(load, test, t)]) for t in ("direct", "nutcracker"))
        nut_p50 = med(p50[(load, test, "nutcracker")])
        for t in targets:
            r, c, l = med(rps[(load, test, t)]), med(cpu[(load, t)]), med(p50[(load, test, t)])
            u = med(user[(load, t)])
            proxy = t != "direct"
            shardis = t.startswith("shardis")
            rows.append((LOADS[load], test, t, num(r, ",.0f"),
                         ratio(r, n) if proxy else "-", ratio(r, d) if proxy else "-",
                         num(l, ".3f"), ratio(l, nut_p50) if proxy else "-",
                         num(c, ".3f"), num(u, ".3f"), ratio(c, nut_cpu),
                         ratio(c, w1_cpu) if shardis else "-"))

widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
def show(r):
    print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
print(f"median over {rounds} round(s); r/s = requests per second")
show(head)
show(tuple("-" * w for w in widths))
for r in rows:
    show(r)
print("p50 = redis-benchmark's median latency (its resolution is about 0.008 ms).")
print("cpu = proxy CPU seconds (user+system) per 100k requests, for the SET+GET run as a whole,")
print("      so both rows of a load show the same value; lower is better. cpu x w1: against")
print("      shardis-w1 on the same load. user = the part of cpu spent in user space (the")
print("      rest is the kernel's: system calls and the loopback TCP work they cause).")
print("shardis = the configuration as shipped; shardis-wN = the same with workers = N;")
print("shardis-base = SHARDIS_BASE_BIN's build as shipped, when given.")
print("direct = one Redis node alone, for reference; the proxies spread keys over three.")
PY

# ------------------------------------------------------------------ profiles

if ((profile)); then
    echo
    echo "Where each proxy's CPU time goes: one more run of each load, the proxy's stacks sampled"
    echo "(perf record -e cpu-clock -F 1999 -g -p PID), sorted by benches/stacks.py. cpu = CPU"
    echo "seconds per 100k requests as sampled (perf slows the proxy a little); then the share, in"
    echo "percent, spent in user space, switched away while it had work (preempted: mostly by the"
    echo "process its last write woke), switched away to wait (sleeping), waking the readers of what"
    echo "it wrote (or its own threads), and in the rest of the kernel (system calls, loopback TCP);"
    echo "top = its three busiest user-space functions, in percent of all its samples."
    : >"$tmp/stacks.csv"
    for load in "${loads[@]}"; do
        n=${requests_for[$load]}
        for target in "${targets[@]}"; do
            [[ $target == direct ]] && continue
            data="$tmp/perf-$load-$target.data"
            perf record -q -e cpu-clock -F 1999 -g -p "${pid_of[$target]}" -o "$data" \
                >/dev/null 2>"$data.log" &
            perf_pid=$!
            pids+=("$perf_pid")
            # Sampling starts once perf has attached; until the load starts there is nothing
            # to sample (cpu-clock counts only while the proxy runs).
            sleep 0.5
            timeout "$bench_timeout" redis-benchmark -h 127.0.0.1 -p "${port_of[$target]}" \
                -c "${clients_for[$load]}" -r 100000 -n "$n" -t set,get \
                -P "${pipeline_for[$load]}" -q >/dev/null 2>&1 ||
                die "redis-benchmark against $target ($load, sampled) failed"
            # perf record writes its samples out when interrupted, and exits non-zero then.
            kill -INT "$perf_pid"
            wait "$perf_pid" || true
            perf script -i "$data" -F period,ip,sym,dso 2>>"$data.log" |
                python3 benches/stacks.py "$load" "$target" $((n * 2)) >>"$tmp/stacks.csv" ||
                die "no samples of $target ($load); see $data.log"
        done
    done
    python3 - "$tmp/stacks.csv" <<'PY'
import csv, sys
LOADS = {"c50p1": "-c 50 -P 1", "c50p16": "-c 50 -P 16", "c1p1": "-c 1 -P 1"}
head = ("load", "target", "cpu", "user", "preempted", "sleeping", "waking", "kernel", "top")
rows = [(LOADS[r[0]], r[1], *r[3:]) for r in csv.reader(open(sys.argv[1]))]
widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head) - 1)]
for r in [head, tuple("-" * w for w in widths) + ("---",)] + rows:
    print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
          + "  " + r[-1])
PY
fi

# ------------------------------------------------ latency beside blocked pops

if ((blocking && !skip_shardis)); then
    echo
    echo "GET/SET latency through shardis (-c $clients -n $n_plain -P 1), alone and beside"
    echo "50 clients blocked in BLPOP on empty lists (2 s timeout, re-issued until the end):"
    printf '%-8s %-4s %10s %8s %8s %8s %8s %8s\n' run test "r/s" "avg ms" "p50 ms" "p95 ms" "p99 ms" "max ms"
    for mode in alone beside-pops; do
        pop_pid=""
        if [[ $mode == beside-pops ]]; then
            # Bounded by timeout; killed as soon as the measured run ends.
            timeout 300 redis-benchmark -h 127.0.0.1 -p "$port_shardis" -c 50 -n 100000000 \
                -r 100000 BLPOP load:empty:__rand_int__ 2 >/dev/null 2>&1 &
            pop_pid=$!
            pids+=("$pop_pid")
            sleep 1
        fi
        out="$tmp/blocking-$mode"
        timeout "$bench_timeout" redis-benchmark -h 127.0.0.1 -p "$port_shardis" \
            -c "$clients" -r 100000 -n "$n_plain" -t set,get --csv >"$out.csv" 2>"$out.err" ||
            die "redis-benchmark beside BLPOP failed (see $out.err)"
        [[ -n "$pop_pid" ]] && kill "$pop_pid" 2>/dev/null || true
        while IFS=, read -r test rps avg _min p50 p95 p99 max; do
            test=${test//\"/}
            [[ "$test" == SET || "$test" == GET ]] || continue
            printf '%-11s %-4s %10.0f %8s %8s %8s %8s %8s\n' "$mode" "$test" "${rps//\"/}" \
                "${avg//\"/}" "${p50//\"/}" "${p95//\"/}" "${p99//\"/}" "${max//\"/}"
        done <"$out.csv"
    done
fi

# ------------------------------------------------------------------ big values

if ((big)); then
    echo
    echo "Big values: SET once, GET 5 times, by redis-cli; the proxy's resident memory in MB:"
    echo "its peak during the SET, during the GETs, and during one more GET read as fast as the"
    echo "socket gives it (raw GET; redis-cli reads slower than a node sends, so the proxy holds"
    echo "what it has not read yet). small max = the slowest of 100 small GETs another client"
    echo "sends to the same node (redis-benchmark -c 1) while one more big GET passes."
    printf '%-11s %5s %6s %8s %8s %8s %7s %7s %11s\n' proxy MiB idle "peak SET" "peak GET" \
        "raw GET" after "+10 s" "small max"
    for target in nutcracker shardis; do
        [[ $target == shardis ]] && ((skip_shardis)) && continue
        port=${port_of[$target]}
        pid=${pid_of[$target]}
        for mib in 50 200; do
            value="$tmp/big-$mib.bin"
            [[ -f "$value" ]] || head -c $((mib << 20)) /dev/zero | tr '\0' x >"$value"
            idle=$(rss_mb "$pid")
            # Writing 5 resets the peak (VmHWM) to what is resident now.
            echo 5 >"/proc/$pid/clear_refs"
            # Hash tags put both keys on one node, so the small GETs share its connection.
            redis-cli -h 127.0.0.1 -p "$port" -x SET "{big}value" <"$value" >/dev/null
            peak_set=$(rss_mb "$pid" VmHWM)
            # The SET's memory is given back once it has passed (a moment, for the write).
            sleep 0.5
            echo 5 >"/proc/$pid/clear_refs"
            for _ in 1 2 3 4 5; do
                redis-cli -h 127.0.0.1 -p "$port" GET "{big}value" >/dev/null
            done
            peak_get=$(rss_mb "$pid" VmHWM)
            echo 5 >"/proc/$pid/clear_refs"
            header="\$$((mib << 20))"
            raw_get "$port" "{big}value" $((${#header} + (mib << 20) + 4)) || true
            peak_raw=$(rss_mb "$pid" VmHWM)
            after=$(rss_mb "$pid")
            redis-cli -h 127.0.0.1 -p "$port" SET "{big}small" v >/dev/null
            redis-cli -h 127.0.0.1 -p "$port" GET "{big}value" >/dev/null &
            reader=$!
            sleep 0.05
            small=$(timeout "$bench_timeout" redis-benchmark -h 127.0.0.1 -p "$port" -c 1 -n 100 \
                --csv GET "{big}small" 2>/dev/null | awk -F, 'NR == 2 { gsub(/"/, "", $8); print $8 }')
            wait "$reader"
            redis-cli -h 127.0.0.1 -p "$port" DEL "{big}value" "{big}small" >/dev/null
            sleep 10
            printf '%-11s %5s %6s %8s %8s %8s %7s %7s %8s ms\n' "$target" "$mib" "$idle" \
                "$peak_set" "$peak_get" "$peak_raw" "$after" "$(rss_mb "$pid")" "${small:-?}"
        done
    done
fi
