#!/usr/bin/env bash
# The whole test suite, in the order CI runs it: dependencies, formatting,
# lints, every test target, then the tests again with three worker threads.
# The integration tests start real redis-server, redis-sentinel and
# nutcracker processes on free loopback ports. Stops at the first failing
# step with its exit status.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# rustup's cargo and Debian's /usr/sbin (nutcracker) may be missing from PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/local/sbin:/usr/sbin"

# Nothing below prompts; under CI keep the output free of colour codes.
if [[ "${CI:-}" == true ]]; then
    export CARGO_TERM_COLOR=never
fi

step() { printf '\n==> %s\n' "$*"; }

step "install dependencies"
bash scripts/install-deps.sh

# fmt and clippy are rustup components that a minimal toolchain lacks;
# say so plainly instead of failing with cargo's "no such command".
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        echo "cargo $component is missing: rustup component add ${component/fmt/rustfmt}" >&2
        exit 1
    fi
done

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets

# Where `workers` is not set, a proxy on this machine may run one worker thread (one per two
# CPUs): run the integration tests again with every proxy on three, so the worker threads'
# own connections, and clients spread over them, are tested whatever the machine.
step "SHARDIS__WORKERS=3 cargo test --tests"
SHARDIS__WORKERS=3 cargo test --tests

step "all tests passed"
