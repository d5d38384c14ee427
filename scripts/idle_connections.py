#!/usr/bin/env python3
"""Memory per idle keep-alive connection of one HTTP server (issue #16, 5).

usage: scripts/idle_connections.py [--tls] PID HOST:PORT [N] [ROUNDS]

Measures the resident memory of process PID (plus its direct children, as
for nginx's master and workers) while N client connections sit idle on
HOST:PORT, each after one complete keep-alive request, and after they close;
ROUNDS times, to show whether the memory comes back. With --tls each
connection is an HTTPS one (a full handshake, no SNI, the certificate not
checked: the server's memory is what is measured). Prints one line per
round and a last line `idle-per-conn-kb K after-close-kb C` for scripts
(K: the growth per idle connection in the first round; C: the RSS after the
last round's close, minus the RSS before the first).

Loopback only, bounded: N connections (default 3000) at most, each sending
one small GET and reading its whole response (Content-Length framing).
"""

import resource
import selectors
import socket
import ssl
import sys
import time


def rss_kb(pid):
    """RSS of pid plus its direct children, in KiB (from /proc)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def settle(pid, seconds=3.0):
    """Waits for the server to be done with what it was sent (tinygate gives
    an idle connection's buffers back after 1 s), then reads RSS."""
    time.sleep(seconds)
    return rss_kb(pid)


def response_complete(data):
    """True when data holds a whole response framed by Content-Length."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(data) >= end + 4 + length


def request_for(addr):
    return f"GET / HTTP/1.1\r\nHost: {addr[0]}\r\nUser-Agent: idle-bench\r\n\r\n".encode()


def open_idle_tls(addr, n):
    """Opens n HTTPS connections one after the other (a handshake each),
    each with one request answered in full."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = request_for(addr)
    conns = []
    for _ in range(n):
        raw = socket.create_connection(addr, timeout=30)
        s = context.wrap_socket(raw)
        s.sendall(request)
        data = b""
        while not response_complete(data):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("idle_connections: the server closed a connection early")
            data += chunk
        conns.append(s)
    return conns


def open_idle(addr, n):
    """Opens n connections, each with one request answered in full."""
    request = request_for(addr)
    sel = selectors.DefaultSelector()
    conns = []
    pending = {}
    for _ in range(n):
        s = socket.create_connection(addr)
        s.sendall(request)
        s.setblocking(False)
        conns.append(s)
        pending[s.fileno()] = b""
        sel.register(s, selectors.EVENT_READ)
    deadline = time.time() + 60
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise SystemExit(f"idle_connections: the server closed a connection early")
            data = pending[s.fileno()] + chunk
            if response_complete(data):
                del pending[s.fileno()]
                sel.unregister(s)
            else:
                pending[s.fileno()] = data
    if pending:
        raise SystemExit(f"idle_connections: {len(pending)} responses did not come in 60 s")
    return conns


def main():
    args = [a for a in sys.argv[1:] if a != "--tls"]
    tls = len(args) < len(sys.argv) - 1
    if len(args) < 2:
        raise SystemExit(__doc__)
    pid = int(args[0])
    host, port = args[1].rsplit(":", 1)
    n = int(args[2]) if len(args) > 2 else 3000
    rounds = int(args[3]) if len(args) > 3 else 3
    opener = open_idle_tls if tls else open_idle
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
    before = settle(pid, 0.2)
    per_conn = None
    closed = before
    for round_ in range(1, rounds + 1):
        start = rss_kb(pid)
        conns = opener((host, int(port)), n)
        idle = settle(pid)
        for s in conns:
            s.close()
        closed = settle(pid)
        grew = (idle - start) / n
        if per_conn is None:
            per_conn = grew
        print(
            f"round {round_}: RSS {start / 1024:.1f} MiB -> {idle / 1024:.1f} MiB with {n} idle "
            f"connections ({grew:.2f} KiB each) -> {closed / 1024:.1f} MiB after they closed"
        )
    print(f"idle-per-conn-kb {per_conn:.2f} after-close-kb {closed - before}")


if __name__ == "__main__":
    main()
