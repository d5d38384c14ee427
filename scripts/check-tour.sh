#!/usr/bin/env bash
# Follows README.md's Install section and its tour literally, as a newcomer
# would, and fails where they would get stuck (issue #21): the commands are
# the README's own code blocks, so the README and this check cannot drift.
#
#   scripts/check-tour.sh           run by .ci/run after the install check
#
# From a fresh copy of the repository (the files git tracks or would track:
# no target/, nothing installed, nothing running), it runs, in order, every
# code block of README.md that follows a marker comment, all in one shell,
# so that the working folder, variables and background jobs carry from one
# block to the next as they do in a reader's terminal:
#
#   <!-- tour: run -->            the block is shell commands: run them
#   <!-- tour: install -->        the same, for the Install section's block:
#                                 `cargo install` puts tinygate in a
#                                 temporary root (first on PATH) and reuses
#                                 the repository's target/ (see below)
#   <!-- tour: build -->          the same, when the rustup target
#                                 wasm32-wasip1 is installed; without it
#                                 (CI has no wasm toolchain) the block is
#                                 skipped, loudly, and the copy's committed
#                                 .wasm is used
#   <!-- tour: start -->          shell commands that start tinygate in the
#                                 background: its output goes to a pipe the
#                                 check reads, and the check goes on once it
#                                 has printed "listening on" (30 s at most)
#   <!-- tour: session -->        "$ command" lines, each followed by lines of
#                                 its expected output: each command must exit
#                                 0 and print those lines in that order
#                                 ("..." stands for any text; other lines
#                                 may come between)
#   <!-- tour: log TEXT -->       no block: wait until the running tinygate
#                                 logs a line containing TEXT (30 s at most)
#   <!-- tour: insert FILE after LINE -->    the block (YAML a reader adds
#   <!-- tour: insert FILE before LINE -->   with an editor) goes into FILE
#                                 after or before the first line equal to LINE
#   <!-- tour: excerpt FILE -->   the block must appear in FILE as shown
#
# The README's commands are taken as they are; only the environment says
# where things go: CARGO_INSTALL_ROOT puts `cargo install` in a temporary
# root (on PATH first), and, for the install block alone, CARGO_TARGET_DIR
# names the repository's target/, which holds the release build of the
# install check .ci/run runs just before: `cargo install` then only checks
# and copies the binary (0.2 s; from a cold target/ it builds, ~2.5 to 6
# minutes on 2 cores).
#
# Network: the tour uses the shipped conf's ports (9080, 1980). Where the
# kernel allows it (unshare -rn), the check runs in a network namespace of
# its own that has nothing but loopback, so those ports are free by
# construction and no other process on the machine is reached (cargo runs
# offline there, from its cache); otherwise it
# uses the host's loopback, after checking that nothing listens on them
# (both are below the ephemeral port range, so no port-0 listener and no
# outgoing connection can take them meanwhile). The whole check is bounded
# by a 10-minute watchdog; every wait has its own 30 s bound.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
TOUR_TIMEOUT=${TOUR_TIMEOUT:-600}

# Bounded time, then its own network namespace when the kernel allows one.
if [ -z "${TOUR_WATCHED:-}" ]; then
    export TOUR_WATCHED=1
    exec timeout --kill-after=10 "$TOUR_TIMEOUT" "$0" "$@"
fi
if [ -z "${TOUR_NETNS:-}" ] && command -v ip >/dev/null \
    && unshare -rn true 2>/dev/null; then
    export TOUR_NETNS=1
    exec unshare -rn "$0" "$@"
fi
if [ "${TOUR_NETNS:-}" = 1 ]; then
    ip link set lo up
    # No network at all in here: cargo uses the crates already in its cache
    # (the builds before this check fetched them).
    export CARGO_NET_OFFLINE=true
    echo "== tour: in a network namespace of its own (loopback only)"
else
    for port in 9080 1980; do
        # A connection that succeeds means something listens there.
        if (exec 6<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "tour: port $port (the shipped conf's) is in use on this host;" \
                "stop that listener, or run where unshare -rn is allowed" >&2
            exit 1
        fi
    done
    echo "== tour: on the host's loopback (no network namespace available)"
fi

work=$(mktemp -d)
server_pids=()
cleanup() {
    local pid
    for pid in "${server_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A fresh copy: what a clone would hold, without build output.
mkdir "$work/tinygate" "$work/root"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -x -C "$work/tinygate"
export CARGO_INSTALL_ROOT="$work/root"
export PATH="$work/root/bin:$PATH"

# The steps, from the copy's README: "STEP <marker words>", the block's
# lines, "END".
awk '
    /^<!-- tour: .* -->$/ {
        marker = $0; sub(/^<!-- tour: /, "", marker); sub(/ -->$/, "", marker)
        if (marker ~ /^log /) { print "STEP " marker; print "END"; next }
        pending = marker; next
    }
    pending != "" && /^```/ && !inblock { inblock = 1; print "STEP " pending; next }
    inblock && /^```/ { inblock = 0; pending = ""; print "END"; next }
    inblock { print }
' "$work/tinygate/README.md" >"$work/steps"
count=$(grep -c '^STEP ' "$work/steps" || true)
[ "$count" -gt 0 ] || { echo "tour: no <!-- tour: ... --> blocks in README.md" >&2; exit 1; }

# tinygate's output (stdout and stderr) goes through this pipe; the check
# reads it line by line for what it waits for. Opened read-write so that
# writers never block on a missing reader and the pipe outlives them.
mkfifo "$work/server.pipe"
exec 3<>"$work/server.pipe"

# Reads tinygate's output until a line contains $1, at most 30 s.
wait_for_output() {
    local want=$1 line deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if IFS= read -r -t $((deadline - SECONDS)) -u 3 line; then
            printf '   | %s\n' "$line"
            case $line in *"$want"*) return 0 ;; esac
        fi
    done
    echo "tour: tinygate never printed \"$want\" within 30 s" >&2
    return 1
}

# "..." in an expected line stands for any text; the rest is literal.
pattern_of() {
    local line=$1 pattern="" piece
    while [[ $line == *...* ]]; do
        piece=${line%%...*}
        pattern+=$(printf '%q' "$piece")'*'
        line=${line#*...}
    done
    [ -n "$line" ] && pattern+=$(printf '%q' "$line")
    printf '%s' "$pattern"
}

# Runs one "$ command" of a session and checks its expected lines.
session_command() {
    local command=$1 expected=$2 out="$work/out" status=0 want pattern got
    echo "   \$ $command"
    eval "$command" </dev/null >"$out" 2>&1 || status=$?
    tr -d '\r' <"$out" | sed 's/^/   > /'
    [ ! -s "$out" ] || [ -z "$(tail -c 1 "$out")" ] || echo
    if [ "$status" != 0 ]; then
        echo "tour: \"$command\" exited $status" >&2
        return 1
    fi
    got=$(tr -d '\r' <"$out")
    while IFS= read -r want; do
        [ -z "$want" ] || [ "$want" = ... ] && continue
        pattern=$(pattern_of "$want")
        local rest="" found=0 line
        while IFS= read -r line; do
            if [ "$found" = 1 ]; then rest+=$line$'\n'; continue; fi
            # shellcheck disable=SC2053 # $pattern is a glob on purpose
            [[ $line == $pattern ]] && found=1
        done <<<"$got"
        if [ "$found" = 0 ]; then
            echo "tour: \"$command\" did not print (in this order): $want" >&2
            return 1
        fi
        got=$rest
    done <<<"$expected"
}

run_session() {
    local block=$1 command="" expected="" line
    while IFS= read -r line; do
        if [[ $line == '$ '* ]]; then
            [ -z "$command" ] || session_command "$command" "$expected"
            command=${line#'$ '}
            expected=""
        else
            expected+=$line$'\n'
        fi
    done <<<"$block"
    [ -z "$command" ] || session_command "$command" "$expected"
}

insert_lines() {
    local file=$1 where=$2 anchor=$3 block=$4
    [ -f "$file" ] || { echo "tour: insert: no file $file" >&2; return 1; }
    grep -qxF -- "$anchor" "$file" || {
        echo "tour: insert: no line \"$anchor\" in $file" >&2; return 1; }
    awk -v where="$where" -v anchor="$anchor" -v block="$block" '
        !done && $0 == anchor && where == "before" { print block; print; done = 1; next }
        !done && $0 == anchor && where == "after" { print; print block; done = 1; next }
        { print }
    ' "$file" >"$file.tour" && mv "$file.tour" "$file"
}

cd "$work/tinygate"
step=0
exec 5<"$work/steps"
while IFS= read -r -u 5 header; do
    marker=${header#STEP }
    block=""
    while IFS= read -r -u 5 line && [ "$line" != END ]; do block+=$line$'\n'; done
    block=${block%$'\n'}
    step=$((step + 1))
    echo "== tour step $step/$count: $marker"
    case $marker in
        run)
            printf '%s\n' "$block" | sed 's/^/   \$ /'
            eval "$block" </dev/null
            ;;
        install)
            printf '%s\n' "$block" | sed 's/^/   \$ /'
            CARGO_TARGET_DIR="$repo/target" eval "$block" </dev/null
            ;;
        build)
            if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
                printf '%s\n' "$block" | sed 's/^/   \$ /'
                eval "$block" </dev/null
            else
                echo "   SKIPPED: the rustup target wasm32-wasip1 is not installed here;"
                echo "   the tour goes on with the .wasm committed in the copy"
            fi
            ;;
        start)
            printf '%s\n' "$block" | sed 's/^/   \$ /'
            eval "$block" </dev/null >&3 2>&3
            server_pids+=("$!")
            wait_for_output "listening on"
            ;;
        session) run_session "$block" ;;
        log\ *) wait_for_output "${marker#log }" ;;
        insert\ *)
            read -r _ file where anchor <<<"$marker"
            anchor=${marker#insert "$file" "$where" }
            echo "   (into $file, $where \"$anchor\")"
            insert_lines "$file" "$where" "$anchor" "$block"
            ;;
        excerpt\ *)
            file=${marker#excerpt }
            case "$(cat "$file")" in
                *"$block"*) echo "   (shown as it is in $file)" ;;
                *) echo "tour: README shows text that is not in $file" >&2; exit 1 ;;
            esac
            ;;
        *) echo "tour: unknown marker \"$marker\"" >&2; exit 1 ;;
    esac
done
echo "== tour: all $count steps passed"
