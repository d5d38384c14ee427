#!/usr/bin/env bash
# The plugin's CI, runnable on your machine: the same steps as
# .github/workflows/plugin-ci.yml and .gitlab-ci.yml.
#
#   ./ci.sh              build the plugin, get tinygate, run the tests
#   ./ci.sh --prebuilt   skip the build: test the api_key_guard.wasm already here
#
# 1. Build the plugin for wasm32-wasip1 and put it next to Cargo.toml.
# 2. Find tinygate: $TINYGATE if set, else `tinygate` on PATH, else install
#    it with `cargo install --locked --git "$TINYGATE_GIT"` into .tinygate/.
# 3. Run every tests/*.yaml with `tinygate test --format junit`, writing
#    reports/junit.xml (the file CI systems display), then print the text
#    summary. The exit status is tinygate test's: 0 all passed, 1 a case
#    failed, 2 an invalid test file.
set -euo pipefail
cd "$(dirname "$0")"

prebuilt=0
case "${1:-}" in
    --prebuilt) prebuilt=1 ;;
    "") ;;
    *) echo "usage: $0 [--prebuilt]" >&2; exit 2 ;;
esac

if [ "$prebuilt" = 0 ]; then
    echo "== build the plugin"
    rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
    cargo build --locked --release --target wasm32-wasip1
    cp target/wasm32-wasip1/release/api_key_guard.wasm api_key_guard.wasm
fi
[ -f api_key_guard.wasm ] || { echo "api_key_guard.wasm is missing: build it first" >&2; exit 2; }

echo "== find tinygate"
if [ -n "${TINYGATE:-}" ]; then
    tinygate="$TINYGATE"
elif command -v tinygate >/dev/null 2>&1; then
    tinygate=tinygate
elif [ -n "${TINYGATE_GIT:-}" ]; then
    cargo install --locked --git "$TINYGATE_GIT" --root .tinygate tinygate
    tinygate=.tinygate/bin/tinygate
else
    echo "no tinygate: set TINYGATE to a binary, put it on PATH, or set TINYGATE_GIT to its repository" >&2
    exit 2
fi
"$tinygate" --version

echo "== tinygate test"
mkdir -p reports
status=0
"$tinygate" test --format junit tests/*.yaml > reports/junit.xml || status=$?
# The JUnit report is for the CI system; people read the text summary.
"$tinygate" test tests/*.yaml || true
echo "== reports/junit.xml written; tinygate test exited $status"
exit "$status"
