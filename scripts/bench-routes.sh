# Route scaling rows of scripts/bench.sh (issue #20), sourced by it when
# --rows includes r; not meant to run alone. Uses bench.sh's helpers (say,
# die, nginx_conf, start_nginx, gate_conf, start_gate, stop, wait_http,
# parse_wrk, median, cmp, cpu_ticks, rss_kb, total_ticks, proc_snapshot,
# other_cpu_percent, free_port) and variables (BIN, NGINX, UP_PORT, TMP,
# ROUNDS, THREADS, CONNECTIONS, DURATION, CLK_TCK, ARTICLE_CONF, FIXTURE).
#
# For 1, 1,000 and 10,000 tenant routes (prefix /api/v1/tenant<i>/* each,
# plus a catch-all /*), one nginx (2 workers, one prefix `location` per
# tenant plus `location /`) and one tinygate (2 workers, no plugin) run side
# by side, all proxying to the same upstream. Rounds alternate over every
# (count, server, path) so that other load hits all rows alike. Measured:
#   - req/s, p99 and server CPU per request on a path under the last route
#     (/api/v1/tenant<N-1>/x) and on one that falls to the catch-all (/other);
#   - start-up (launch to the first 200 answer) and RSS, idle and after
#     traffic on every route, also for tinygate with the article's plugin
#     on every route;
#   - at 10,000 routes: a Prometheus scrape once every route has served
#     traffic (time, size), and req/s and p99 under load with scrapes in a
#     loop against the same load without.
# With --baseline BIN, an older tinygate runs the same rows beside it.

ROUTE_COUNTS=(1 1000 10000)
ROUTE_STARTS=5            # start-up measurements per configuration
ROUTE_TOUCH_SECONDS=3     # traffic over every route before "RSS after"
ROUTE_PATH_CATCH=/other/x

route_last_path() { echo "/api/v1/tenant$(($1 - 1))/x"; }

# wrk script that walks every tenant route in turn (ROUTES in the environment).
cat >"$TMP/rotate.lua" <<'EOF'
local n = tonumber(os.getenv("ROUTES"))
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", "/api/v1/tenant" .. (i % n) .. "/x")
end
EOF

# nginx: $1 dir, $2 routes, $3 port.
routes_nginx_conf() {
    local dir=$1 n=$2 port=$3 locations
    locations=$(awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++)
        printf "        location /api/v1/tenant%d/ { proxy_pass http://backend; }\n", i }')
    nginx_conf "$dir" 2 "    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
$locations
        location / { proxy_pass http://backend; }
    }"
}

# tinygate: $1 dir, $2 routes, $3 "plugin" or "", $4 status port or "".
routes_gate_conf() {
    local dir=$1 n=$2 plugin=$3 status=$4
    if [[ $plugin == plugin ]]; then
        gate_conf "$dir" "custom-response-header:7000"
    else
        gate_conf "$dir"
    fi
    [[ -n $status ]] && printf '  status_listen: 127.0.0.1:%s\n' "$status" >>"$dir/config.yaml"
    awk -v n="$n" -v up="$UP_PORT" -v plugin="$plugin" -v conf="$ARTICLE_CONF" 'BEGIN {
        printf "upstreams:\n  - id: origin\n    nodes:\n      \"127.0.0.1:%s\": 1\nroutes:\n", up
        p = (plugin == "plugin") ? sprintf(", plugins: {custom-response-header: {conf: '\''%s'\''}}", conf) : ""
        for (i = 0; i < n; i++)
            printf "  - {id: t%d, uri: \"/api/v1/tenant%d/*\", upstream_id: origin%s}\n", i, i, p
        printf "  - {id: catchall, uri: \"/*\", upstream_id: origin%s}\n#END\n", p
    }' >"$dir/apisix.yaml"
}

# Launch to the first 200 answer on PATH, ROUTE_STARTS times: "median min max" ms.
# $1 gate|nginx, $2 path, $3 address (nginx; tinygate prints its own), then the command.
startup_ms() {
    python3 - "$ROUTE_STARTS" "$@" <<'EOF'
import os, socket, statistics, subprocess, sys, time
n, mode, path, addr, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
env = dict(os.environ, RUST_LOG="warn")

def ok(addr):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path).encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

times = []
for _ in range(n):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    where = addr
    if mode == "gate":
        where = ""
        for line in p.stdout:
            if line.startswith(b"listening on "):
                where = line.split()[-1].decode()
                break
    deadline = t0 + 30
    while where and not ok(where) and time.perf_counter() < deadline and p.poll() is None:
        time.sleep(0.001)
    t = (time.perf_counter() - t0) * 1000
    good = bool(where) and ok(where)
    p.terminate()
    p.wait()
    if not good:
        print("nan nan nan")
        sys.exit(0)
    times.append(t)
print("%.1f %.1f %.1f" % (statistics.median(times), min(times), max(times)))
EOF
}

# One wrk run: $1 result file, $2 server pid, $3 URL, then extra wrk args.
# Writes "rps p50 p99 errors requests other_cpu cpu_us_per_req".
route_wrk() {
    local res=$1 pid=$2 url=$3 out total0 cpu0 cpu1 other rps p50 p99 err reqs cpu
    shift 3
    out="$res.wrk"
    total0=$(total_ticks)
    cpu0=$(cpu_ticks "$pid")
    proc_snapshot >"$TMP/routes/procs0"
    wrk "-t$THREADS" "-c$CONNECTIONS" "-d${DURATION}s" --latency "$@" "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed on $url"; }
    cpu1=$(cpu_ticks "$pid")
    proc_snapshot >"$TMP/routes/procs1"
    other=$(other_cpu_percent "$TMP/routes/procs0" "$TMP/routes/procs1" "$(($(total_ticks) - total0))")
    read -r rps p50 p99 err reqs <<<"$(parse_wrk "$out")"
    cpu=$(awk -v t="$((cpu1 - cpu0))" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "nan" }')
    echo "$rps $p50 $p99 $err $reqs $other $cpu" >"$res"
}

# Column $2 of files matching $1, median.
route_median() { cat $1 2>/dev/null | awk -v c="$2" '{print $c}' | median; }

mkdir -p "$TMP/routes"
declare -A R_URL R_PID R_ADDR R_LABEL R_CMD
R_SERVERS=(nginx gate)
[[ -n ${BASELINE:-} ]] && R_SERVERS+=(base)
R_LABEL[nginx]="nginx"
R_LABEL[gate]="tinygate"
R_LABEL[base]="tinygate baseline"

say ""
say ".. route scaling: writing configs for ${ROUTE_COUNTS[*]} routes"
for n in "${ROUTE_COUNTS[@]}"; do
    port=$(free_port)
    routes_nginx_conf "$TMP/routes/nginx-$n" "$n" "$port"
    R_ADDR[nginx-$n]="127.0.0.1:$port"
    status=""
    [[ $n == "${ROUTE_COUNTS[-1]}" ]] && status=$(free_port) && R_STATUS="127.0.0.1:$status"
    routes_gate_conf "$TMP/routes/gate-$n" "$n" "" "$status"
    routes_gate_conf "$TMP/routes/plugin-$n" "$n" plugin ""
    [[ -n ${BASELINE:-} ]] && routes_gate_conf "$TMP/routes/base-$n" "$n" "" ""
done

# ---- start-up and memory, one configuration at a time
say ".. route scaling: start-up ($ROUTE_STARTS starts each) and RSS"
declare -A R_START R_RSS_IDLE R_RSS_TOUCHED
route_footprint() { # $1 key, $2 routes, $3 nginx|gate, $4 binary (gate)
    local key=$1 n=$2 mode=$3 bin=${4:-} pid url addr cmd
    if [[ $mode == gate ]]; then
        cmd=("$bin" -c "$TMP/routes/$key/config.yaml")
    else
        cmd=("$NGINX" -e stderr -p "$TMP/routes/$key/" -c "$TMP/routes/$key/conf/nginx.conf")
    fi
    R_START[$key]=$(startup_ms "$mode" "$(route_last_path "$n")" "${R_ADDR[nginx-$n]}" "${cmd[@]}")
    if [[ $mode == gate ]]; then
        route_start_gate "$key" "$bin"
        pid=$GATE_PID addr=$GATE_ADDR
    else
        start_nginx "$TMP/routes/$key" "$key"
        pid=$NGINX_PID addr=${R_ADDR[nginx-$n]}
    fi
    url="http://$addr$(route_last_path "$n")"
    wait_http "$url" "$pid" "$key" "$TMP/routes/$key/stderr"
    sleep 1
    R_RSS_IDLE[$key]=$(rss_kb "$pid")
    ROUTES=$n wrk -t2 -c"$CONNECTIONS" -d"${ROUTE_TOUCH_SECONDS}s" -s "$TMP/rotate.lua" "http://$addr/" >"$TMP/routes/$key.touch" 2>&1 ||
        { cat "$TMP/routes/$key.touch" >&2; die "wrk over every route failed for $key"; }
    R_RSS_TOUCHED[$key]=$(rss_kb "$pid")
    stop "$pid"
}
# start_gate with another binary: $1 key, $2 binary.
route_start_gate() {
    local saved=$BIN
    BIN=$2
    start_gate "$TMP/routes/$1" "$1"
    BIN=$saved
}
for n in "${ROUTE_COUNTS[@]}"; do
    route_footprint "nginx-$n" "$n" nginx
    route_footprint "gate-$n" "$n" gate "$BIN"
    route_footprint "plugin-$n" "$n" gate "$BIN"
    [[ -n ${BASELINE:-} ]] && route_footprint "base-$n" "$n" gate "$BASELINE"
done

# ---- throughput: every server up at once, rounds alternating over the rows
say ".. route scaling: starting ${#R_SERVERS[@]} servers x ${#ROUTE_COUNTS[@]} route counts"
for n in "${ROUTE_COUNTS[@]}"; do
    for s in "${R_SERVERS[@]}"; do
        key="$s-$n"
        if [[ $s == nginx ]]; then
            start_nginx "$TMP/routes/$key" "$key"
            R_PID[$key]=$NGINX_PID
            R_URL[$key]="http://${R_ADDR[$key]}"
        else
            bin=$BIN
            [[ $s == base ]] && bin=$BASELINE
            route_start_gate "$key" "$bin"
            R_PID[$key]=$GATE_PID
            R_URL[$key]="http://$GATE_ADDR"
        fi
        wait_http "${R_URL[$key]}$(route_last_path "$n")" "${R_PID[$key]}" "$key" "$TMP/routes/$key/stderr"
        for p in "$(route_last_path "$n")" "$ROUTE_PATH_CATCH"; do
            code=$(curl -s -o /dev/null -w '%{http_code}' "${R_URL[$key]}$p")
            [[ $code == 200 ]] || die "route scaling: $key answered $code on $p"
        done
    done
done
for n in "${ROUTE_COUNTS[@]}"; do
    for s in "${R_SERVERS[@]}"; do
        wrk -t2 -c"$CONNECTIONS" -d1s "${R_URL[$s-$n]}$(route_last_path "$n")" >/dev/null 2>&1 || true
    done
done
for ((round = 1; round <= ROUNDS; round++)); do
    say ""
    say ".. route scaling: round $round/$ROUNDS"
    for n in "${ROUTE_COUNTS[@]}"; do
        for s in "${R_SERVERS[@]}"; do
            for kind in last catch; do
                key="$s-$n"
                path=$ROUTE_PATH_CATCH
                [[ $kind == last ]] && path=$(route_last_path "$n")
                res="$TMP/routes/$key.$kind.$round.res"
                route_wrk "$res" "${R_PID[$key]}" "${R_URL[$key]}$path"
                read -r rps _ p99 err _ other cpu <"$res"
                printf '   %6s routes  %-18s %-5s %10s req/s  p99 %7s ms  CPU %5s us/req  errors %s  other CPU %s%%\n' \
                    "$n" "${R_LABEL[$s]}" "$kind" "$rps" "$p99" "$cpu" "$err" "$other"
            done
        done
    done
done

# ---- a scrape with every route active
N_MAX=${ROUTE_COUNTS[-1]}
SCRAPE_URL="http://$R_STATUS/apisix/prometheus/metrics"
say ""
say ".. route scaling: scrape with $N_MAX active routes"
ROUTES=$N_MAX wrk -t2 -c"$CONNECTIONS" -d"${ROUTE_TOUCH_SECONDS}s" -s "$TMP/rotate.lua" "${R_URL[gate-$N_MAX]}/" >/dev/null 2>&1 ||
    die "wrk over every route failed"
for i in 1 2 3 4 5; do
    curl -s -o "$TMP/routes/scrape.txt" -w '%{time_total} %{size_download}\n' "$SCRAPE_URL"
done >"$TMP/routes/scrape.times"
SCRAPE_MS=$(awk '{print $1 * 1000}' "$TMP/routes/scrape.times" | median)
SCRAPE_MAX_MS=$(awk '{print $1 * 1000}' "$TMP/routes/scrape.times" | sort -g | tail -n 1)
SCRAPE_BYTES=$(tail -n 1 "$TMP/routes/scrape.times" | awk '{print $2}')
SCRAPE_LINES=$(wc -l <"$TMP/routes/scrape.txt")
SCRAPE_ROUTES=$(grep -c '^apisix_http_status{' "$TMP/routes/scrape.txt" || true)
# Load over every route, without and then with a scrape every
# SCRAPE_INTERVAL seconds (each scrape's time under load is kept).
SCRAPE_INTERVAL=0.5
export ROUTES=$N_MAX
for ((round = 1; round <= ROUNDS; round++)); do
    route_wrk "$TMP/routes/noscrape.$round.res" "${R_PID[gate-$N_MAX]}" "${R_URL[gate-$N_MAX]}/" -s "$TMP/rotate.lua"
    : >"$TMP/routes/scraping"
    (
        while [[ -e $TMP/routes/scraping ]]; do
            curl -s -o /dev/null -w '%{time_total}\n' "$SCRAPE_URL" || true
            sleep "$SCRAPE_INTERVAL"
        done >>"$TMP/routes/scrape.loaded"
    ) &
    scraper=$!
    PIDS+=("$scraper")
    route_wrk "$TMP/routes/scrape.$round.res" "${R_PID[gate-$N_MAX]}" "${R_URL[gate-$N_MAX]}/" -s "$TMP/rotate.lua"
    rm -f "$TMP/routes/scraping"
    wait "$scraper" || true
    forget "$scraper"
done
export -n ROUTES

# ---- report
say ""
say "== route scaling: median of $ROUNDS round(s), wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; tenant routes /api/v1/tenant<i>/* + catch-all /*"
say ""
say "| routes | server | last route req/s | catch-all req/s | last p99 ms | catch-all p99 ms | CPU us/req (last) | start ms | RSS idle MiB | RSS after every route MiB |"
say "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
declare -A R_RPS
for n in "${ROUTE_COUNTS[@]}"; do
    for s in "${R_SERVERS[@]}" plugin; do
        key="$s-$n"
        if [[ $s == plugin ]]; then
            row="| $n | tinygate, plugin on every route | | | | | |"
        else
            R_RPS[$key.last]=$(route_median "$TMP/routes/$key.last.*.res" 1)
            R_RPS[$key.catch]=$(route_median "$TMP/routes/$key.catch.*.res" 1)
            row=$(printf '| %s | %s | %.0f | %.0f | %s | %s | %s |' "$n" "${R_LABEL[$s]}" \
                "${R_RPS[$key.last]}" "${R_RPS[$key.catch]}" \
                "$(route_median "$TMP/routes/$key.last.*.res" 3)" "$(route_median "$TMP/routes/$key.catch.*.res" 3)" \
                "$(route_median "$TMP/routes/$key.last.*.res" 7)")
        fi
        say "$row ${R_START[$key]%% *} | $(mib "${R_RSS_IDLE[$key]}") | $(mib "${R_RSS_TOUCHED[$key]}") |"
    done
done
say ""
say "req/s, p99 and CPU: median over rounds. start: launch to the first 200 answer on the last route, median of"
say "$ROUTE_STARTS starts. RSS after every route: after ${ROUTE_TOUCH_SECONDS} s of wrk walking every tenant route in turn"
say "(nginx: master + workers)."
say "req/s per round (last route / catch-all):"
for n in "${ROUTE_COUNTS[@]}"; do
    for s in "${R_SERVERS[@]}"; do
        line=""
        for ((round = 1; round <= ROUNDS; round++)); do
            read -r a _ _ _ _ oa _ <"$TMP/routes/$s-$n.last.$round.res"
            read -r b _ _ _ _ ob _ <"$TMP/routes/$s-$n.catch.$round.res"
            line+=$(printf ' %.0f/%.0f (other CPU %s%%/%s%%)' "$a" "$b" "$oa" "$ob")
        done
        say "   $n ${R_LABEL[$s]}:$line"
    done
done
say ""
say "scrape with $N_MAX active routes: median $SCRAPE_MS ms (max $SCRAPE_MAX_MS) over 5, $SCRAPE_BYTES bytes, $SCRAPE_LINES lines, $SCRAPE_ROUTES apisix_http_status series"
NS_RPS=$(route_median "$TMP/routes/noscrape.*.res" 1)
NS_P99=$(route_median "$TMP/routes/noscrape.*.res" 3)
S_RPS=$(route_median "$TMP/routes/scrape.*.res" 1)
S_P99=$(route_median "$TMP/routes/scrape.*.res" 3)
LOADED_MS=$(awk '{print $1 * 1000}' "$TMP/routes/scrape.loaded" | median)
LOADED_MAX_MS=$(awk '{print $1 * 1000}' "$TMP/routes/scrape.loaded" | sort -g | tail -n 1)
say "load walking every route (tinygate, $N_MAX routes): without scrapes $(printf '%.0f' "$NS_RPS") req/s, p99 $NS_P99 ms, CPU $(route_median "$TMP/routes/noscrape.*.res" 7) us/req;"
say "    with a scrape every ${SCRAPE_INTERVAL} s: $(printf '%.0f' "$S_RPS") req/s, p99 $S_P99 ms, CPU $(route_median "$TMP/routes/scrape.*.res" 7) us/req;"
say "    scrapes under load: $(wc -l <"$TMP/routes/scrape.loaded"), median $LOADED_MS ms, max $LOADED_MAX_MS ms"
say ""
say "== targets (issue #20)"
ratio1=$(awk -v a="${R_RPS[gate-1.last]}" -v b="${R_RPS[nginx-1.last]}" 'BEGIN { print (b > 0 ? a / b : 0) }')
for kind in last catch; do
    verdict "tinygate $N_MAX routes >= 0.9x 1 route ($kind)" "${R_RPS[gate-$N_MAX.$kind]} >= 0.9 * ${R_RPS[gate-1.$kind]}" \
        "$(ratio "${R_RPS[gate-$N_MAX.$kind]}" "${R_RPS[gate-1.$kind]}")"
    want=$(awk -v r="$ratio1" -v b="${R_RPS[nginx-$N_MAX.$kind]}" 'BEGIN { printf "%.0f", r * b }')
    verdict "tinygate $N_MAX >= nginx $N_MAX x ratio at 1 ($kind)" "${R_RPS[gate-$N_MAX.$kind]} >= $want" \
        "$(printf '%.0f' "${R_RPS[gate-$N_MAX.$kind]}") vs $want (nginx $(printf '%.0f' "${R_RPS[nginx-$N_MAX.$kind]}") x $(printf '%.2f' "$ratio1"))"
done
