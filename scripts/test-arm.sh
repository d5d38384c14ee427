#!/usr/bin/env bash
# The integration suite against the static aarch64 build, under qemu-user
# (issue #7).
#
#   scripts/test-arm.sh              build, then run the whole suite
#   scripts/test-arm.sh --smoke      build, then run the CI subset
#   scripts/test-arm.sh --no-build   reuse target/static/tinygate-aarch64-unknown-linux-musl
#
# The test harness (tests/util/mod.rs) starts $TINYGATE_BIN through
# $TINYGATE_RUNNER instead of the binary cargo built, so every test drives the
# aarch64 tinygate, emulated, with the same real upstreams and .wasm fixtures
# as the native run. The test code itself runs natively.
#
# Nothing is skipped. One test checks less under emulation, and says so:
# hardening::plugin_traffic_through_every_fixture_leaves_no_executable_memory
# still drives traffic through every fixture, but does not read
# /proc/<pid>/maps, because the pid is qemu's, and qemu is a JIT with an rwx
# code buffer. For the same reason the memory lock is not taken under
# qemu-user: qemu does not pass PR_SET_MDWE on to the kernel (tinygate logs a
# warning and serves).
#
# The smoke subset (for CI): the article scenario, routing, one upstream test,
# one plugin-failure test, HTTPS through a listener with plugins, and etcd
# over TLS (needs Debian's etcd-server, which .ci/run installs before).

set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-musl
build=1
smoke=0
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --smoke) smoke=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done

start=$(date +%s)
if [ "$build" = 1 ]; then
    bash scripts/build-static.sh "$TARGET"
fi
if ! command -v qemu-aarch64 >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
fi
built=$(date +%s)

bin="$PWD/target/static/tinygate-$TARGET"
[ -x "$bin" ] || { echo "no $bin: run without --no-build" >&2; exit 1; }
echo "== $(qemu-aarch64 "$bin" --version) under $(qemu-aarch64 --version | head -1)"

filters=()
if [ "$smoke" = 1 ]; then
    filters=(
        article::
        routing::
        upstreams::retries_skip_a_dead_node
        plugins::trapping_plugin_gives_503_while_another_route_keeps_serving
        # TLS on aarch64 (ring's assembly): etcd put and a node's watch
        # over https with client certificates, verification and SNI.
        etcd_tls::etcd_over_tls_with_client_certificates_verification_and_sni
        # The TLS server side: an HTTPS listener, SNI, plugins, access log.
        tls::https_requests_go_through_routing_plugins_and_the_access_log
    )
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
TINYGATE_BIN="$bin" TINYGATE_RUNNER=qemu-aarch64 \
    cargo test --locked --test tests -- "${filters[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s)

echo
echo "== aarch64 under qemu-aarch64: $(grep '^test result:' "$log" | tail -1)"
echo "== time: build $(( built - start )) s, tests $(( end - built )) s, total $(( end - start )) s"
exit "$status"
