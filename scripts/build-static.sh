#!/usr/bin/env bash
# Static, stripped release builds of tinygate (issue #7).
#
# Builds one binary per target that depends on no shared library (musl libc
# linked in, no ELF interpreter, no NEEDED entries), checks that with
# readelf, file and ldd, copies it to target/static/tinygate-<target> and
# prints a size table.
#
#   scripts/build-static.sh                       x86_64 and aarch64 (default)
#   scripts/build-static.sh aarch64-unknown-linux-musl
#   scripts/build-static.sh --no-install ...      assume the tools are there
#   CARGO_FEATURE_ARGS=--no-default-features scripts/build-static.sh
#                                                  without TLS (no C at all)
#   scripts/build-static.sh --print-rustflags TARGET
#                                                  the RUSTFLAGS it builds
#                                                  TARGET with, nothing else
#                                                  (scripts/image-root.sh)
#
# Installs what is missing, once: Debian packages musl-tools (x86_64 musl),
# gcc-aarch64-linux-gnu + libc6-dev-arm64-cross (aarch64 linker, and C
# compiler and headers for ring), gcc-arm-linux-gnueabihf (armv7, only when
# that target is asked for), binutils, file; and the
# rust-std of each target with `rustup target add`.
#
# armv7-unknown-linux-musleabihf is wired up (linker arm-linux-gnueabihf-gcc)
# but is not in the default set: its rust-std could not be downloaded with
# `rustup target add` on the machines this was written on, so it is untested.

set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
install=1
print_rustflags=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        --print-rustflags) print_rustflags=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "unknown option $arg" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${DEFAULT_TARGETS[@]}")

# Linker and Debian package per target.
linker_of() {
    case "$1" in
        x86_64-unknown-linux-musl) echo "${CC_X86_64_MUSL:-cc}" ;;
        aarch64-unknown-linux-musl) echo aarch64-linux-gnu-gcc ;;
        armv7-unknown-linux-musleabihf) echo arm-linux-gnueabihf-gcc ;;
        *) echo "unsupported target $1" >&2; return 1 ;;
    esac
}
c_compiler_of() {
    case "$1" in
        x86_64-unknown-linux-musl) echo musl-gcc ;;
        *) linker_of "$1" ;;
    esac
}
archiver_of() {
    case "$1" in
        x86_64-unknown-linux-musl) echo ar ;;
        aarch64-unknown-linux-musl) echo aarch64-linux-gnu-ar ;;
        armv7-unknown-linux-musleabihf) echo arm-linux-gnueabihf-ar ;;
    esac
}
# Code generation flags for one target, on top of the release profile.
# x86_64: no padding before loops and functions (LLVM aligns loop heads
# and functions to 16 bytes with multi-byte NOPs; clang and gcc do not at
# -Os): 45 KB and 34 KB, with the request path's and the plugin path's CPU
# time unchanged within this machine's noise. aarch64 keeps LLVM's
# defaults.
codegen_flags_of() {
    case "$1" in
        x86_64-*) echo " -C llvm-args=-align-loops=1 -C llvm-args=-align-all-functions=1" ;;
    esac
}
package_of() {
    case "$1" in
        x86_64-unknown-linux-musl) echo musl-tools ;;
        # libc6-dev-*-cross: the C headers ring's C code includes
        # (stdint.h, string.h) for the cross gcc.
        aarch64-unknown-linux-musl) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
        armv7-unknown-linux-musleabihf) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
    esac
}

# Linked by rust-lld, which ships with every rustup toolchain (the target's
# gcc only drives it; -B makes it find ld.lld): --icf=all folds functions
# that compiled to the same bytes (31 KB), and -z pack-relative-relocs
# stores the relocations of x86_64's static-pie as RELR, a bitmap of
# pointer slots instead of 24 bytes per pointer (139 KB; musl applies
# them at start-up since 1.2.4, Rust's musl targets ship 1.2.5). RELR is
# a no-op on aarch64, which links a non-PIE static executable. Without
# rust-lld, GNU ld (2.38 or later) still packs the relocations.
link_flags() {
    local gcc_ld
    gcc_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
    if [ -x "$gcc_ld/ld.lld" ]; then
        echo " -C link-arg=-fuse-ld=lld -C link-arg=-B$gcc_ld -C link-arg=-Wl,--icf=all -C link-arg=-Wl,-z,pack-relative-relocs"
    else
        echo "warning: no rust-lld in this toolchain ($gcc_ld): linking with the system's ld, without identical-code folding (about 31 KB larger)" >&2
        echo " -C link-arg=-Wl,-z,pack-relative-relocs"
    fi
}
# Panic messages name their source file: paths into the cargo registry
# become crate-version/src/..., which keeps the build machine's home
# directory out of the binary (and 16 KB).
remap_flags() {
    local dir
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
        [ -d "$dir" ] && echo -n " --remap-path-prefix=$dir="
    done
    echo
}
# Everything a static build of target $1 is compiled and linked with.
# crt-static is musl's default; it is spelled out so the intent is visible.
rustflags_of() {
    echo "-C target-feature=+crt-static$(link_flags)$(remap_flags)$(codegen_flags_of "$1")"
}

if [ "$print_rustflags" = 1 ]; then
    for t in "${targets[@]}"; do rustflags_of "$t"; done
    exit 0
fi

if [ "$install" = 1 ]; then
    need=()
    for pkg in binutils file $(for t in "${targets[@]}"; do package_of "$t"; done); do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        echo "installing: ${need[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    installed=$(rustup target list --installed)
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
fi

mkdir -p target/static
for t in "${targets[@]}"; do
    linker=$(linker_of "$t")
    var=$(tr 'a-z-' 'A-Z_' <<<"$t")
    echo "== building $t (linker $linker)"
    start=$(date +%s)
    # Symbols are stripped by rustc (profile strip), so no
    # per-architecture strip tool is needed.
    # ring (TLS, the default cargo feature `tls`) compiles some C and
    # assembly for the target: the same cross gcc that links is its C
    # compiler (musl-gcc for x86_64), found by the cc crate through
    # CC_<target>/AR_<target>. Its code needs no libc headers beyond the
    # compiler's own, so a glibc-targeting cross gcc serves musl too.
    cc_var="CC_$(tr '-' '_' <<<"$t")"
    ar_var="AR_$(tr '-' '_' <<<"$t")"
    env "CARGO_TARGET_${var}_LINKER=$linker" \
        "$cc_var=${!cc_var:-$(c_compiler_of "$t")}" \
        "$ar_var=${!ar_var:-$(archiver_of "$t")}" \
        "CARGO_TARGET_${var}_RUSTFLAGS=$(rustflags_of "$t")" \
        CARGO_PROFILE_RELEASE_STRIP=symbols \
        cargo build --locked --release --target "$t" ${CARGO_FEATURE_ARGS:-}
    out="target/static/tinygate-$t"
    cp "target/$t/release/tinygate" "$out"
    echo "   built in $(( $(date +%s) - start )) s: $(file -b "$out")"
    # Static means: no program interpreter and no shared library needed.
    if readelf -lW "$out" | grep -q 'INTERP'; then
        echo "error: $out has an ELF interpreter (dynamically linked)" >&2; exit 1
    fi
    if readelf -dW "$out" | grep -q 'NEEDED'; then
        echo "error: $out needs shared libraries:" >&2
        readelf -dW "$out" | grep NEEDED >&2; exit 1
    fi
    echo "   ldd: $(ldd "$out" 2>&1 | head -1 | sed 's/^[[:space:]]*//')"
done

echo
echo "| target | bytes | MiB |"
echo "|---|---:|---:|"
for t in "${targets[@]}"; do
    size=$(stat -c %s "target/static/tinygate-$t")
    printf '| `%s` | %s | %s |\n' "$t" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')"
done
