#!/usr/bin/env bash
# Install what shardis' tests, demo and load comparison need on a Debian
# machine, and only what is missing:
#
#   redis-server, redis-cli, redis-benchmark, redis-sentinel, nutcracker, tmux,
#   iptables, promtool, python3 with venv
#   (Debian packages redis-server, redis-tools, redis-sentinel, nutcracker, tmux,
#   iptables, prometheus, python3-venv; tmux drives an interactive redis-cli in
#   the tests, the partition test drops one proxy's packets to one node with an
#   iptables rule it removes again, the metrics test runs `promtool check
#   metrics` on a scrape, and the client-library test installs redis-py from
#   PyPI into a virtualenv)
#
# and, when named as arguments, commands only some scripts need:
#
#   perf (Debian package linux-perf; benches/load.sh --profile samples the
#   proxies' stacks with it)
#
# and check that a Rust toolchain (cargo) is available. Safe to run again:
# when every command is already present it does not touch apt at all.
#
# Installing packages needs root (or sudo). Tests and benchmarks start their
# own redis-server processes on free loopback ports, so the services the
# Debian packages start on install are stopped again (best effort): nothing
# here relies on a system-wide Redis on 6379.
#
# promtool has no package of its own in Debian: it comes with the Prometheus
# server (package prometheus, about 19 MB to download). Only promtool is used,
# so the server it would start (on port 9090) is stopped and, under systemd,
# disabled again.
set -euo pipefail

# nutcracker lives in /usr/sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# command -> the Debian package that provides it.
declare -A package_of=(
    [redis-server]=redis-server
    [redis-cli]=redis-tools
    [redis-benchmark]=redis-tools
    [redis-sentinel]=redis-sentinel
    [nutcracker]=nutcracker
    [tmux]=tmux
    [iptables]=iptables
    [promtool]=prometheus
)

# Commands installed only when asked for by name.
declare -A optional_package_of=(
    [perf]=linux-perf
)
for cmd in "$@"; do
    if [[ -z "${optional_package_of[$cmd]:-}" ]]; then
        echo "install-deps: no optional command '$cmd' (there are: ${!optional_package_of[*]})" >&2
        exit 2
    fi
    package_of[$cmd]=${optional_package_of[$cmd]}
done

# Collect the packages behind the missing commands, each once.
missing=()
for cmd in "${!package_of[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        pkg=${package_of[$cmd]}
        if [[ " ${missing[*]-} " != *" $pkg "* ]]; then
            missing+=("$pkg")
        fi
    fi
done

# The client-library test needs `python3 -m venv` with pip (Debian splits it out).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if ((${#missing[@]} > 0)); then
    # Run apt as root, through sudo when we are not root already.
    if ((EUID == 0)); then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: no apt-get; install these by hand: ${missing[*]}" >&2
        exit 1
    fi

    echo "install-deps: installing ${missing[*]}"
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends \
        "${missing[@]}" >/dev/null

    # The packages may have started system services (redis on 6379, sentinel
    # on 26379, nutcracker on 22222). Our tests pick their own ports, so stop
    # only the services of packages installed just now; a Redis the machine
    # already ran is left alone.
    if command -v service >/dev/null 2>&1; then
        for pkg in "${missing[@]}"; do
            case $pkg in
                redis-server | redis-sentinel | nutcracker)
                    "${as_root[@]}" service "$pkg" stop >/dev/null 2>&1 || true
                    ;;
                prometheus)
                    "${as_root[@]}" service "$pkg" stop >/dev/null 2>&1 || true
                    if [[ -d /run/systemd/system ]]; then
                        "${as_root[@]}" systemctl disable "$pkg" >/dev/null 2>&1 || true
                    fi
                    ;;
            esac
        done
    fi

    # Verify: a package that installed but did not provide the command
    # (e.g. a renamed package) should fail here, not deep inside a test.
    for cmd in "${!package_of[@]}"; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "install-deps: '$cmd' is still missing after install" >&2
            exit 1
        fi
    done
fi

# A Rust toolchain is needed to build; rustup installs it into ~/.cargo/bin,
# which a fresh shell may not have on its PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    cat >&2 <<'MSG'
install-deps: cargo not found. Install a Rust toolchain (1.85 or newer) with
rustup, as its documentation describes, then run this script again.
MSG
    exit 1
fi
