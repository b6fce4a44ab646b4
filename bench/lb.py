"""Benchmark: TLS MQTT through the rendered haproxy and nginx configs versus straight to a broker.

    python -m bench.lb [--connections 8000] [--out build/bench/lb.json]

The committed figures (bench/results/lb.json) change only when asked: ``make bench BENCH_SAVE=1``
or ``--out bench/results/lb.json``.

For each target (direct TLS to mosquitto, haproxy, nginx) on loopback: concurrent TLS MQTT
connections held, connect rate, publish->receive latency p50/p99 (QoS 0, one subscriber), and the
proxy's resident memory per held connection. Every phase is bounded in count and time; every
process is started here and stopped by PID. The open-file limit (20 000 here) bounds N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.renderers.proxy import Backend  # noqa: E402
from tests.harness import Lab, free_port, make_certs, proc_stats, tls_context, wait_port  # noqa: E402

PHASE_TIMEOUT = 90.0


def connect_packet(client_id: str, keepalive: int = 600) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(body)]) + body


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def open_mqtt(port: int, ctx: ssl.SSLContext, client_id: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    writer.write(connect_packet(client_id))
    await writer.drain()
    ack = await reader.readexactly(4)
    if ack != b"\x20\x02\x00\x00":
        raise ConnectionError(f"CONNACK {ack!r}")
    return reader, writer


async def hold(port: int, ctx: ssl.SSLContext, n: int, tag: str) -> tuple[list, float, int]:
    sem = asyncio.Semaphore(200)
    conns: list = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                conns.append(await asyncio.wait_for(open_mqtt(port, ctx, f"{tag}-{i}"), 20))
            except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError):
                failures += 1

    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), PHASE_TIMEOUT)
    return conns, time.monotonic() - t0, failures


async def latency(port: int, ctx: ssl.SSLContext, messages: int) -> list[float]:
    sr, sw = await open_mqtt(port, ctx, "bench-sub")
    topic = b"bench/latency"
    sub = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x00"
    sw.write(b"\x82" + _remaining_length(len(sub)) + sub)
    await sw.drain()
    await sr.readexactly(5)  # SUBACK
    _, pw = await open_mqtt(port, ctx, "bench-pub")
    samples: list[float] = []
    for _ in range(messages):
        payload = struct.pack("!d", time.perf_counter())
        body = len(topic).to_bytes(2, "big") + topic + payload
        pw.write(b"\x30" + _remaining_length(len(body)) + body)
        await pw.drain()
        await asyncio.wait_for(sr.readexactly(1), 5)
        length, mult = 0, 1
        while True:
            b = (await sr.readexactly(1))[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        data = await sr.readexactly(length)
        sent = struct.unpack("!d", data[-8:])[0]
        samples.append((time.perf_counter() - sent) * 1000)
    for w in (sw, pw):
        w.close()
    return samples


def rss_kib(pgid: int) -> int:
    total = 0
    for pid, stat in proc_stats():
        if int(stat[2]) != pgid:
            continue
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 3)


async def measure(port: int, ca: Path, n: int, pgid: int | None, tag: str) -> dict:
    ctx = tls_context(ca)
    base = rss_kib(pgid) if pgid else 0
    conns, elapsed, failures = await hold(port, ctx, n, tag)
    held = len(conns)
    loaded = rss_kib(pgid) if pgid else 0
    lat = await latency(port, ctx, 500)
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.5)
    return {
        "connections_requested": n,
        "connections_held": held,
        "connect_failures": failures,
        "connect_rate_per_s": round(held / elapsed, 1) if elapsed else None,
        "latency_ms_p50": pct(lat, 0.50),
        "latency_ms_p99": pct(lat, 0.99),
        "proxy_rss_kib_per_connection": round((loaded - base) / held, 2) if pgid and held else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", "8000")))
    ap.add_argument("--out", type=Path, default=Path("build/bench/lb.json"))
    args = ap.parse_args()
    n = args.connections
    results: dict = {"connections": n, "machine": {"cpus": os.cpu_count()}, "targets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        with Lab(work) as lab:
            port, tls_port = free_port("127.0.0.2"), free_port("127.0.0.2")
            conf = work / "mosquitto-tls.conf"
            conf.write_text(
                "persistence false\nlog_dest stdout\nmax_connections -1\nuser root\n"
                f"listener {port} 127.0.0.2\nallow_anonymous true\n"
                f"listener {tls_port} 127.0.0.1\ncafile {certs['ca']}\ncertfile {certs['crt']}\nkeyfile {certs['key']}\ntls_version tlsv1.2\n"
            )
            lab._spawn("mosquitto", ["mosquitto", "-c", str(conf)])
            try:
                wait_port("127.0.0.2", port)
                wait_port("127.0.0.1", tls_port)
            except TimeoutError:
                print((work / "mosquitto.log").read_text(), file=sys.stderr)
                raise
            results["targets"]["direct"] = asyncio.run(measure(tls_port, certs["ca"], n, None, "direct"))
            print("direct", results["targets"]["direct"], flush=True)
            for kind in ("haproxy", "nginx"):
                s = lab.settings(certs, [Backend("b0", "127.0.0.2", port, port)], maxconn=9000, mqtts_port=free_port(), wss_port=None)
                proc = lab.start_proxy(kind, s)
                results["targets"][kind] = asyncio.run(measure(s.mqtts_port, certs["ca"], n, proc.popen.pid, kind))
                print(kind, results["targets"][kind], flush=True)
                proc.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
