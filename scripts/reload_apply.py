#!/usr/bin/env python3
"""Apply time of a one-route change with many routes (issue #20), for
scripts/bench-reload.sh; runs alone too:

    scripts/reload_apply.py BIN [--routes N] [--changes K] [--plugin WASM]
                            [--modes file,sighup,etcd]

Starts two upstreams (each answers its own name), writes N prefix routes
(/api/v1/tenant<i>/*, all on upstream "a", each with the plugin WASM when
given) plus a catch-all, starts tinygate (the routes file, or etcd loaded
with `tinygate etcd put`), then K times moves one route in the middle to
upstream "b" and back, and measures:

  - served: from the change (the file written and SIGHUP sent; the etcd put
    acknowledged) to the first answer from the new upstream, polling every
    millisecond; for `file` (the 1 s poll notices the change) this includes
    the wait for the poll, so only tinygate's own figure is shown;
  - apply: tinygate's own figure from its log line ("served X ms after the
    change was noticed": validation, plugin checks, route index, swap);
  - cpu: CPU time the applying thread ("main" for the file and SIGHUP,
    "etcd" for etcd) used from the change to the first new answer, from
    /proc/PID/task/*/schedstat: what the change cost, however loaded the
    machine is (wall-clock figures are not, on a shared machine).

Prints one line per mode: "mode served-median served-max apply-median
apply-max cpu-median cpu-max", in ms. Everything listens on 127.0.0.1, on
ports chosen by the system; everything started is stopped.
"""

import argparse
import http.server
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import base64


def upstream(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Head and body are written apart: without this, Nagle's algorithm
        # and tinygate's delayed ACK hold the body ~40 ms.
        disable_nagle_algorithm = True

        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route_line(i, upstream_id, plugin_conf):
    plugins = ""
    if plugin_conf:
        plugins = ", plugins: {custom-response-header: {conf: '%s'}}" % plugin_conf
    return '  - {id: t%d, uri: "/api/v1/tenant%d/*", upstream_id: %s%s}\n' % (
        i, i, upstream_id, plugins)


def routes_text(n, ports, moved, plugin_conf):
    out = ["upstreams:\n"]
    for name, port in ports.items():
        out.append('  - {id: %s, nodes: {"127.0.0.1:%d": 1}}\n' % (name, port))
    out.append("routes:\n")
    for i in range(n):
        out.append(route_line(i, moved.get(i, "a"), plugin_conf))
    out.append('  - {id: catchall, uri: "/*", upstream_id: a}\n#END\n')
    return "".join(out)


def route_json(i, upstream_id, plugin_conf):
    item = {"uri": "/api/v1/tenant%d/*" % i, "upstream_id": upstream_id}
    if plugin_conf:
        item["plugins"] = {"custom-response-header": {"conf": plugin_conf}}
    return json.dumps(item)


class Gate:
    def __init__(self, binary, config):
        env = dict(os.environ, RUST_LOG="info")
        self.proc = subprocess.Popen([binary, "-c", config], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()
        self.addr = None
        for line in self.proc.stdout:
            if line.startswith(b"listening on "):
                self.addr = line.split()[-1].decode()
                break
        if not self.addr:
            sys.exit("tinygate did not start:\n" + "".join(self.lines[-20:]))
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        host, port = self.addr.rsplit(":", 1)
        self.sock_addr = (host, int(port))

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.decode(errors="replace"))
                self.cond.notify_all()

    def get(self, path):
        with socket.create_connection(self.sock_addr, timeout=5) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                       % path).encode())
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")

    def wait_for(self, path, want, limit=30.0):
        """Seconds until `path` answers `want`, polling every millisecond."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < limit:
            if self.get(path) == want:
                return time.perf_counter() - t0
            time.sleep(0.001)
        sys.exit("%s never answered %r:\n%s" % (path, want, "".join(self.lines[-20:])))

    def apply_ms(self, count):
        """tinygate's own apply time in the count-th reload line (NaN from
        a tinygate that does not log it)."""
        figure = re.compile(r"served ([0-9.]+) ms after the change was noticed")
        deadline = time.time() + 10
        with self.cond:
            while True:
                reloads = [line for line in self.lines if "reloaded (" in line]
                if len(reloads) >= count:
                    m = figure.search(reloads[count - 1])
                    return float(m.group(1)) if m else float("nan")
                if time.time() > deadline:
                    return float("nan")
                self.cond.wait(0.1)

    def cpu_ms(self, thread):
        """CPU time so far of this process's threads named `thread`."""
        total = 0
        task = "/proc/%d/task" % self.proc.pid
        for tid in os.listdir(task):
            try:
                with open("%s/%s/comm" % (task, tid)) as f:
                    if f.read().strip() != thread:
                        continue
                with open("%s/%s/schedstat" % (task, tid)) as f:
                    total += int(f.read().split()[0])
            except OSError:
                continue
        return total / 1e6

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Etcd:
    def __init__(self, tmp):
        self.client = "http://127.0.0.1:%d" % free_port()
        peer = "http://127.0.0.1:%d" % free_port()
        self.proc = subprocess.Popen(
            ["etcd", "--name", "n0", "--data-dir", os.path.join(tmp, "etcd"),
             "--listen-client-urls", self.client, "--advertise-client-urls", self.client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "n0=" + peer],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                self.post("/v3/kv/range", {"key": base64.b64encode(b"x").decode()})
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("etcd did not start")

    def post(self, path, body):
        req = urllib.request.Request(self.client + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def put(self, key, value):
        self.post("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                 "value": base64.b64encode(value.encode()).decode()})

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def measure(args, mode, ports, tmp):
    d = tempfile.mkdtemp(dir=tmp)
    routes_file = os.path.join(d, "apisix.yaml")
    config = os.path.join(d, "config.yaml")
    lines = ["apisix:\n  node_listen:\n    - {ip: 127.0.0.1, port: 0}\n",
             "deployment:\n  role: data_plane\n  role_data_plane:\n"]
    etcd = None
    if mode == "etcd":
        etcd = Etcd(d)
        lines.append("    config_provider: etcd\n  etcd:\n    host: [\"%s\"]\n"
                     "    prefix: /apisix\n    timeout: 5\n" % etcd.client)
    else:
        lines.append("    config_provider: yaml\n")
    if args.plugin:
        lines.append("wasm:\n  plugins:\n    - {name: custom-response-header, priority: 7000, "
                     "file: \"%s\"}\n" % os.path.abspath(args.plugin))
    lines.append("tinygate:\n  workers: 2\n")
    with open(config, "w") as f:
        f.write("".join(lines))
    conf = args.conf if args.plugin else ""
    with open(routes_file, "w") as f:
        f.write(routes_text(args.routes, ports, {}, conf))
    if etcd:
        subprocess.run([args.bin, "etcd", "put", "-c", config, routes_file], check=True,
                       stdout=subprocess.DEVNULL)
    gate = Gate(args.bin, config)
    try:
        middle = args.routes // 2
        path = "/api/v1/tenant%d/x" % middle
        gate.wait_for(path, "a")
        served, applied, cpu = [], [], []
        thread = "etcd" if mode == "etcd" else "main"
        for k in range(args.changes * 2):
            target = "b" if k % 2 == 0 else "a"
            cpu0 = gate.cpu_ms(thread)
            t0 = time.perf_counter()
            if mode == "etcd":
                etcd.put("/apisix/routes/t%d" % middle, route_json(middle, target, conf))
            else:
                text = routes_text(args.routes, ports, {middle: target}, conf)
                tmp_file = routes_file + ".new"
                with open(tmp_file, "w") as f:
                    f.write(text)
                os.replace(tmp_file, routes_file)
                t0 = time.perf_counter()
                if mode == "sighup":
                    gate.proc.send_signal(1)
            gate.wait_for(path, target)
            served.append((time.perf_counter() - t0) * 1000)
            cpu.append(gate.cpu_ms(thread) - cpu0)
            applied.append(gate.apply_ms(k + 1))
            # Another route still answers from its upstream, unchanged.
            assert gate.get("/api/v1/tenant%d/x" % (middle + 1)) == "a"
            # Let the file poll see this state before the next change.
            time.sleep(1.2 if mode == "file" else 0.2)
        return served, applied, cpu
    finally:
        gate.stop()
        if etcd:
            etcd.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bin")
    p.add_argument("--routes", type=int, default=10000)
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--plugin", help="wasm file put on every route")
    p.add_argument("--conf", default='{"headers":[{"name":"X-Go-Wasm","value":"APISIX"}]}')
    p.add_argument("--modes", default="file,sighup,etcd")
    args = p.parse_args()
    ports = {"a": upstream("a"), "b": upstream("b")}
    tmp = tempfile.mkdtemp(prefix="tinygate-reload-")
    try:
        for mode in args.modes.split(","):
            served, applied, cpu = measure(args, mode, ports, tmp)
            fmt = lambda xs: "%.1f %.1f" % (statistics.median(xs), max(xs))
            shown = "n/a n/a" if mode == "file" else fmt(served)
            print("%s %s %s %s" % (mode, shown, fmt(applied), fmt(cpu)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
