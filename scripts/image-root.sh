#!/usr/bin/env bash
# Lays out the container image's files (issue #21): what the Dockerfile's
# builder stage copies onto the empty image, so CI can check the same
# layout without a container engine.
#
#   scripts/image-root.sh OUT           build tinygate (static where the host
#                                       libc is musl, as in the Alpine
#                                       builder), check it is static, lay out
#   scripts/image-root.sh OUT BINARY    lay out with an already built BINARY
#                                       (no static check: CI's glibc build)
#
# OUT gets:
#   tinygate                       the binary
#   conf/config.yaml               the shipped config, listening on 0.0.0.0
#                                  (a container's port is unreachable from
#                                  outside it on 127.0.0.1)
#   conf/apisix.yaml               the shipped routes
#   fixtures/custom_response_header.wasm
#                                  the article's plugin, where config.yaml's
#                                  ../fixtures/ path finds it from /conf
# Everything readable by any user: the image runs as nobody.

set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
out=$1
binary=${2:-}

if [ -z "$binary" ]; then
    # Symbols stripped by rustc, as scripts/build-static.sh does: no
    # binutils needed. CARGO_BUILD_TARGET (if set) picks the target, e.g.
    # x86_64-unknown-linux-musl to try this on a glibc host. A musl build
    # is compiled and linked as build-static.sh's are (rust-lld, RELR
    # relocations, ...): without that, x86_64 is over the 5 MiB budget.
    target=${CARGO_BUILD_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}
    if [[ $target == *-linux-musl* ]]; then
        var="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$target")_RUSTFLAGS"
        export "$var=${!var:-$(scripts/build-static.sh --print-rustflags "$target")}"
        # Named, so that the flags reach only tinygate's code, not build
        # scripts (a static-pie build script is fine; a proc-macro is not).
        export CARGO_BUILD_TARGET=$target
    fi
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --locked --release
    binary="target/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/tinygate"
    # FROM scratch has no libc and no loader: the binary must need neither.
    if readelf -lW "$binary" | grep -q INTERP || readelf -dW "$binary" | grep -q NEEDED; then
        echo "error: $binary is dynamically linked; the image has no libc" >&2
        exit 1
    fi
fi

mkdir -p "$out/conf" "$out/fixtures"
install -m 0755 "$binary" "$out/tinygate"
install -m 0644 conf/apisix.yaml "$out/conf/apisix.yaml"
install -m 0644 fixtures/custom_response_header.wasm "$out/fixtures/"
sed 's/^\( *- ip: \)127\.0\.0\.1$/\10.0.0.0/' conf/config.yaml >"$out/conf/config.yaml"
chmod 0644 "$out/conf/config.yaml"
chmod 0755 "$out" "$out/conf" "$out/fixtures"
if ! grep -q '^ *- ip: 0\.0\.0\.0$' "$out/conf/config.yaml"; then
    echo "error: conf/config.yaml no longer has a '- ip: 127.0.0.1' listener to open up" >&2
    exit 1
fi
