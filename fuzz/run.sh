#!/usr/bin/env bash
# Runs every fuzz target for a bounded time from the committed seed corpus
# (docs/operations.md, "Fuzzing"), and prints what each run did. Used by .ci/run.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     default 20 (three targets: ~1 minute)
#
# Installs cargo-fuzz when missing. cargo-fuzz needs nightly flags; this
# stable toolchain accepts them with RUSTC_BOOTSTRAP=1. Builds without a
# sanitizer (-s none): the code under test is safe Rust, so the checks that
# matter are its panics and the properties in src/http/oracle.rs, and the
# run does several times more executions without ASan. New inputs go to a
# temporary directory, not into the committed corpus; a failing input is
# left in fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-20}
[[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]] || { echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2; exit 2; }
TARGETS=(request_head chunked path)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
# libfuzzer-sys compiles libFuzzer (C++).
command -v c++ >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
}

export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -s none
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinygate-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for target in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$target"
    log="$WORK/$target.log"
    if ! cargo fuzz run -O -s none "$target" "$WORK/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz/run.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    seeds=$(find "fuzz/corpus/$target" -type f | wc -l)
    found=$(find "$WORK/$target" -type f | wc -l)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    printf '%-13s %9s executions in %ss (%s/s), %s seeds, %s new inputs, %s\n' \
        "$target" "$runs" "$SECONDS_EACH" "$rate" "$seeds" "$found" "$cov"
done
