#!/usr/bin/env bash
# Build shardis and run its embedded demo: three redis-server children on
# free loopback ports, with shardis serving in front of them on 127.0.0.1:6380,
# or where --listen says. Extra arguments are passed on to `shardis dev`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# rustup's cargo and Debian's /usr/sbin may be missing from a plain PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/local/sbin:/usr/sbin"

bash scripts/install-deps.sh

# Build exactly the locked dependency versions when a lock file exists.
locked=()
[[ -f Cargo.lock ]] && locked=(--locked)
cargo build --release "${locked[@]}"

# shardis dev says where it serves once it listens (6380 unless --listen says otherwise).
echo "shardis demo: starting; Ctrl-C stops it"
exec "${CARGO_TARGET_DIR:-target}/release/shardis" dev "$@"
