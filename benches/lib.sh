# Helpers the bench scripts share; sourced, not run. They expect `tmp` (a temp dir), `pids`
# (every background process started, stopped by cleanup) and `bench_timeout` (seconds) to be
# set by the script.

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    # Ask politely first, then insist on whatever is still running.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # Keep the evidence after a failure; an interrupt (130, 143) is not one.
    if [[ "${KEEP_TMP:-0}" == 1 || ! $status =~ ^(0|130|143)$ ]]; then
        echo "${0##*/}: logs and raw results kept in $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# bench_start NAME: makes the temp dir `tmp` (shardis-NAME.XXXXXX) and the list `pids`, and
# sets cleanup to run however the script ends (an interrupt exits 130, a TERM 143).
bench_start() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/shardis-$1.XXXXXX")
    pids=() # every background process started, stopped in cleanup()
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# need CMD...: installs what the benches use (scripts/install-deps.sh) and fails unless every
# CMD is then on PATH.
need() {
    bash scripts/install-deps.sh
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found"
    done
}

# free_ports N: print N distinct free TCP ports on 127.0.0.1. The sockets stay
# bound until all N are chosen, so the ports differ from one another.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_pong NAME PORT PID LOG: wait up to 10 s until PORT answers PING with
# PONG; fail with the end of LOG when the process dies or never answers.
wait_pong() {
    local name=$1 port=$2 pid=$3 log=$4
    for _ in $(seq 100); do
        if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2 || true
            die "$name exited before answering PING on port $port"
        fi
        sleep 0.1
    done
    tail -n 20 "$log" >&2 || true
    die "$name did not answer PING on port $port within 10 s"
}

# redis_node NAME PORT LOG [ARG...]: starts a throwaway redis-server on 127.0.0.1:PORT (no
# RDB, no AOF) with any further arguments, its output in LOG; adds it to `pids` and waits for
# its PONG (NAME is what a failure calls it).
redis_node() {
    local name=$1 port=$2 log=$3
    shift 3
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no "$@" >"$log" 2>&1 &
    pids+=($!)
    wait_pong "$name" "$port" $! "$log"
}

# cpu_ticks PID: utime + stime of the whole process (all threads), in clock
# ticks: fields 14 and 15 of /proc/PID/stat. Field 2, the command name, is in
# parentheses and may hold spaces, so count fields after the last ')'.
cpu_ticks() {
    local user system
    read -r user system <<<"$(cpu_ticks_apart "$1")"
    echo $((user + system))
}

# cpu_ticks_apart PID: utime and stime, apart ("<user> <system>"), as cpu_ticks.
cpu_ticks_apart() {
    local stat rest fields
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra fields <<<"$rest" # fields[0] is field 3 (state)
    echo "${fields[11]} ${fields[12]}"
}

# rss_mb PID [FIELD]: a process's resident memory (VmRSS, or FIELD: VmHWM for its peak), in MB.
rss_mb() {
    awk -v f="${2:-VmRSS}:" '$1 == f { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# raw_get PORT KEY BYTES: GET KEY, its reply (BYTES long) read as fast as the socket gives it,
# where redis-cli reads it slower than a node sends it. Fails if the reply has not all come
# within $bench_timeout seconds.
raw_get() {
    local fd status=0
    exec {fd}<>"/dev/tcp/127.0.0.1/$1"
    printf '*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n' "${#2}" "$2" >&"$fd"
    timeout "$bench_timeout" head -c "$3" <&"$fd" >/dev/null || status=$?
    exec {fd}>&-
    return "$status"
}

# raw_set PORT KEY FILE: SET KEY to FILE's bytes, written as fast as the socket takes them,
# and waits for the +OK. Fails unless the reply is +OK within $bench_timeout seconds.
raw_set() {
    local fd reply status=0
    exec {fd}<>"/dev/tcp/127.0.0.1/$1"
    {
        printf '*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n' "${#2}" "$2" "$(stat -c %s "$3")"
        cat "$3"
        printf '\r\n'
    } >&"$fd"
    reply=$(timeout "$bench_timeout" head -c 5 <&"$fd") || status=$?
    exec {fd}>&-
    # The command substitution took the final newline off.
    [[ $status == 0 && $reply == $'+OK\r' ]]
}
