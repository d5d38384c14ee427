# Reload rows of scripts/bench.sh (issue #20, item 2), sourced by it when
# --rows includes u; not meant to run alone (scripts/reload_apply.py does
# the work and runs alone too). Uses bench.sh's say, die, BIN, BASELINE,
# FIXTURE, ROOT.
#
# With 10,000 prefix routes (/api/v1/tenant<i>/*, all on one named upstream,
# plus a catch-all), without and with the article's plugin on every route,
# one route in the middle is moved to another upstream and back,
# RELOAD_CHANGES times each way, by each of:
#   file    the routes file rewritten, noticed by the 1 s poll;
#   sighup  the routes file rewritten, then SIGHUP;
#   etcd    `PUT /apisix/routes/t5000` (etcd loaded with `tinygate etcd put`).
# Measured per change (median and max): served (the change made to the
# first answer from the new upstream, polling every millisecond; not for
# `file`, where it includes the wait for the poll), apply (tinygate's own
# log figure: from the change noticed to the new configuration swapped in)
# and CPU (of the applying thread, from /proc: the cost of the change,
# whatever else the machine runs). With --baseline BIN, an older tinygate
# runs the same changes first (it logs no apply figure).

RELOAD_ROUTES=10000
RELOAD_CHANGES=5

command -v etcd >/dev/null || die "row u needs etcd (Debian: apt-get install etcd-server)"

say ""
say "== reload: one route changed among $RELOAD_ROUTES (ms; median / max of $((RELOAD_CHANGES * 2)) changes; machine shared)"
printf '%-20s %-8s %-8s %15s %15s %15s\n' "tinygate" "plugin" "change" "served" "apply" "cpu"
reload_rows() {
    local label=$1 bin=$2 plugin=$3 args=()
    [[ $plugin == yes ]] && args=(--plugin "$FIXTURE")
    python3 "$ROOT/scripts/reload_apply.py" "$bin" --routes "$RELOAD_ROUTES" \
        --changes "$RELOAD_CHANGES" "${args[@]}" >"$TMP/reload.out" ||
        die "reload_apply.py failed with $bin"
    while read -r mode s_med s_max a_med a_max c_med c_max; do
        printf '%-20s %-8s %-8s %15s %15s %15s\n' "$label" "$plugin" "$mode" \
            "$s_med / $s_max" "$a_med / $a_max" "$c_med / $c_max"
    done <"$TMP/reload.out"
}
for plugin in no yes; do
    [[ -n ${BASELINE:-} ]] && reload_rows baseline "$BASELINE" "$plugin"
    reload_rows "this build" "$BIN" "$plugin"
done
