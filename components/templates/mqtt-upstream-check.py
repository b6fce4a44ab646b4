#!/usr/bin/env python3
"""Active MQTT health checks for nginx open source, which has none of its own.

Every round, each server of one nginx upstream gets an MQTT CONNECT (after a PROXY v1 line when
the brokers' listener expects one) and must answer with a CONNACK — any return code: a broker
refusing this anonymous client is alive. A server failing FALL rounds in a row is marked
"down" in nginx.conf (nginx/nginx release-1.22.1 src/stream/ngx_stream_upstream.c:503-509), one
answering RISE rounds in a row loses the flag, and nginx reloads gracefully — SIGHUP to the master,
which is what "nginx -s reload" sends (src/core/ngx_config.h:63, src/os/unix/ngx_process.c:42) —
only when a flag changed. Servers of the FOLLOW upstreams (the WebSocket path) on the same host
follow their MQTT server. If every server fails, none is marked down: with all of them down
nginx would refuse everybody, so it keeps trying them (fail open, as a load balancer does).

Only "down" flags are touched; everything else in the file stays as rendered. Python 3 stdlib
only (AL2023 ships python3).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

SERVER = re.compile(r"^(?P<lead>\s*server\s+)(?P<addr>\S+?)(?P<params>(?:\s+[^;#\s]+)*)\s*;", re.M)


def connect_packet(client_id: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keepalive 60 s."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(body)]) + body


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def probe(addr: str, proxy_protocol: bool, timeout: float, client_id: str) -> bool:
    """True when the server answers CONNECT with a CONNACK within the timeout."""
    host, port = split_addr(addr)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if proxy_protocol:
                src, dst = s.getsockname(), s.getpeername()
                family = "TCP6" if s.family == socket.AF_INET6 else "TCP4"
                s.sendall(f"PROXY {family} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode())
            s.sendall(connect_packet(client_id))
            got = b""
            while len(got) < 2:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                chunk = s.recv(2 - len(got))
                if not chunk:
                    return False
                got += chunk
            s.sendall(b"\xe0\x00")  # DISCONNECT
            return got == b"\x20\x02"  # CONNACK, remaining length 2
    except OSError:
        return False


def upstream_block(text: str, name: str) -> tuple[int, int]:
    """The span of "upstream NAME { … }" (no nested braces inside an upstream)."""
    m = re.search(r"^\s*upstream\s+" + re.escape(name) + r"\s*\{", text, re.M)
    if not m:
        raise SystemExit(f"no upstream {name}")
    return m.end(), text.index("}", m.end())


def servers(text: str, name: str) -> dict[str, bool]:
    """Server address -> marked down, in one upstream."""
    start, end = upstream_block(text, name)
    return {m["addr"]: "down" in m["params"].split() for m in SERVER.finditer(text, start, end)}


def with_down(text: str, name: str, down_hosts: set[str]) -> str:
    """The config with exactly the servers on down_hosts marked down in upstream NAME."""
    start, end = upstream_block(text, name)

    def mark(m: re.Match) -> str:
        params = [p for p in m["params"].split() if p != "down"]
        if split_addr(m["addr"])[0] in down_hosts:
            params.append("down")
        return f"{m['lead']}{m['addr']}{''.join(' ' + p for p in params)};"

    return text[:start] + SERVER.sub(mark, text[start:end]) + text[end:]


def write_atomically(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".mqtt-upstream-check.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def reload_nginx(text: str) -> None:
    m = re.search(r"^\s*pid\s+(\S+?);", text, re.M)
    with open(m.group(1) if m else "/run/nginx.pid") as f:
        os.kill(int(f.read().strip()), signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conf", default="/etc/nginx/nginx.conf")
    ap.add_argument("--upstream", default="mqtt_brokers", help="the MQTT upstream, whose servers are probed")
    ap.add_argument("--follow", action="append", default=[], help="an upstream whose servers follow the MQTT one's per host")
    ap.add_argument("--proxy-protocol", action="store_true", help="open each probe with a PROXY v1 line")
    ap.add_argument("--inter", type=float, default=1.0, help="seconds between rounds while every server is settled")
    ap.add_argument("--fastinter", type=float, default=0.5, help="seconds between rounds while a server is changing state")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds for connect + CONNACK")
    ap.add_argument("--fall", type=int, default=2)
    ap.add_argument("--rise", type=int, default=3)
    ap.add_argument("--client-id", default="mqtt-cluster-check")
    ap.add_argument("--rounds", type=int, default=0, help="stop after this many rounds (0: run until stopped)")
    a = ap.parse_args(argv)

    with open(a.conf) as f:
        text = f.read()
    marked = servers(text, a.upstream)
    down = {addr for addr, is_down in marked.items() if is_down}
    streak: dict[str, int] = dict.fromkeys(marked, 0)  # >0: passes in a row, <0: failures in a row
    pool = ThreadPoolExecutor(max_workers=max(1, len(marked)))
    rounds = 0
    print(f"checking {len(marked)} servers of {a.upstream} every {a.inter}s", file=sys.stderr, flush=True)
    while a.rounds == 0 or rounds < a.rounds:
        rounds += 1
        began = time.monotonic()
        results = dict(zip(marked, pool.map(lambda s: probe(s, a.proxy_protocol, a.timeout, a.client_id), marked), strict=True))
        for addr, ok in results.items():
            streak[addr] = max(1, streak[addr] + 1) if ok else min(-1, streak[addr] - 1)
        want = {addr for addr in marked if (addr in down and streak[addr] < a.rise) or streak[addr] <= -a.fall}
        if want == set(marked):
            want = set()  # fail open
        if want != down:
            with open(a.conf) as f:
                text = f.read()
            hosts = {split_addr(addr)[0] for addr in want}
            for name in [a.upstream, *a.follow]:
                text = with_down(text, name, hosts)
            write_atomically(a.conf, text)
            try:
                reload_nginx(text)
                print(f"down: {sorted(want) or 'none'}; nginx reloaded", file=sys.stderr, flush=True)
            except (OSError, ValueError) as e:  # nginx not running: it starts with the file as written
                print(f"down: {sorted(want) or 'none'}; nginx not reloaded: {e}", file=sys.stderr, flush=True)
            down = want
        changing = any((0 < streak[addr] < a.rise) if addr in down else (-a.fall < streak[addr] < 0) for addr in marked)
        time.sleep(max(0.0, (a.fastinter if changing else a.inter) - (time.monotonic() - began)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
