#!/usr/bin/env bash
# Fuzz the two parsers that read untrusted bytes, with cargo-fuzz (libFuzzer):
#
#   request_parser   client input: RESP arrays and inline commands, whole, in two
#                    pieces and byte by byte (src/resp/request.rs)
#   reply_framer     backend replies: RESP2 and RESP3 frame boundaries, the same
#                    three ways (src/resp/reply.rs)
#
# Usage: bash scripts/fuzz.sh [seconds-per-target]    (default 600)
#
# Needs a nightly toolchain (rustup toolchain install nightly); installs
# cargo-fuzz when it is missing. Each target runs for the given time on its
# corpus (fuzz/corpus/<target>, grown across runs, not committed) plus the
# committed seeds (fuzz/seeds/<target>). A crash, a leak, a timeout or running
# out of memory stops the script with a non-zero status and names the input
# that caused it (under fuzz/artifacts/<target>/), with the command to replay it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# rustup's cargo (and cargo-fuzz, once installed) may be missing from a plain PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

secs=${1:-600}
if [[ ! $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash scripts/fuzz.sh [seconds-per-target]" >&2
    exit 2
fi

targets=(request_parser reply_framer)

step() { printf '\n==> %s\n' "$*"; }

# cargo-fuzz builds with sanitizer flags that only nightly accepts.
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: a nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    step "install cargo-fuzz"
    cargo +nightly install cargo-fuzz --locked
fi

for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    seeds=fuzz/seeds/$target
    artifacts=fuzz/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    # Anything newer than this marker in the artifacts directory is from this run.
    marker=$(mktemp)

    step "fuzz $target for ${secs}s"
    # The first corpus directory receives new inputs; the seeds are only read.
    if ! cargo +nightly fuzz run "$target" "$corpus" "$seeds" -- \
        -max_total_time="$secs" -rss_limit_mb=2048; then
        echo >&2
        echo "fuzz: $target failed. Input(s) that made it fail:" >&2
        found=0
        while IFS= read -r artifact; do
            echo "  $artifact" >&2
            echo "  replay: cargo +nightly fuzz run $target $artifact" >&2
            found=1
        done < <(find "$artifacts" -type f -newer "$marker" | sort)
        if ((found == 0)); then
            echo "  (none saved under $artifacts: see the output above)" >&2
        fi
        rm -f "$marker"
        exit 1
    fi
    rm -f "$marker"
done

step "no failures: ${targets[*]} ran ${secs}s each"
