"""Faults on the loopback data plane: a frozen broker, a vanished one, a killed proxy, a reconnect storm.

Used by tests/test_faults.py (short windows) and bench/faults.py (30 s windows). Devices are
asyncio TLS MQTT clients; every loop is bounded by a deadline; every process touched was started
by the Lab and is signalled by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from components import config as c
from components.renderers.proxy import CHECKER_PATH, upstream_checker
from tests.harness import Broker, Lab, free_port, haproxy_stats, tls_context

# paho-mqtt 2.2.0 gives up on a CONNECT after 5 s (paho/mqtt/client.py:748): a device whose CONNACK
# has not come by then counts as failed.
CLIENT_CONNECT_TIMEOUT = 5.0
NEW_CONNECTION_EVERY = 0.1


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(body)]) + body


async def mqtt_open(port: int, ctx: ssl.SSLContext, client_id: str, host: str = "127.0.0.1"):
    """TLS + CONNECT; (reader, writer) once an accepted CONNACK arrived."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost")
    try:
        writer.write(connect_packet(client_id))
        await writer.drain()
        if await reader.readexactly(4) != b"\x20\x02\x00\x00":
            raise ConnectionError("CONNACK refused")
    except BaseException:
        writer.close()
        raise
    return reader, writer


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


@dataclass
class Attempt:
    started: float
    """Seconds since the window opened."""
    ok: bool = False
    took: float | None = None
    via: int | None = None
    """Which address answered, for clients holding several."""


async def attempt(ports: list[int], ctx: ssl.SSLContext, client_id: str, t0: float, per_address: float) -> Attempt:
    """One device connecting: tries each address in order (a multivalue DNS answer), within the
    client's connect timeout in all."""
    a = Attempt(time.monotonic() - t0)
    deadline = time.monotonic() + CLIENT_CONNECT_TIMEOUT
    for i, port in enumerate(ports):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            _, w = await asyncio.wait_for(mqtt_open(port, ctx, client_id), min(left, per_address))
        except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            continue
        w.write(b"\xe0\x00")
        _close(w)
        a.ok, a.took, a.via = True, time.monotonic() - t0 - a.started, i
        break
    return a


@dataclass
class Window:
    attempts: list[Attempt] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)
    """Seconds since the window opened: "fault", "detected", …"""

    @property
    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]

    def summary(self) -> dict:
        fault = self.events.get("fault", 0.0)
        fails = self.failed
        slow = [a.took for a in self.attempts if a.ok and a.started >= fault]
        return {
            "new_connections": len(self.attempts),
            "failed": len(fails),
            "failed_pct": round(100 * len(fails) / max(1, len(self.attempts)), 1),
            "last_failure_after_fault_s": round(max(a.started for a in fails) - fault, 2) if fails else None,
            "detected_after_fault_s": round(self.events["detected"] - fault, 2) if "detected" in self.events else None,
            "connect_s_max_after_fault": round(max(slow), 3) if slow else None,
        }


async def run_window(
    ports: list[int],
    ca: Path,
    seconds: float,
    fault_at: float,
    fault: Callable[[], None],
    detected: Callable[[], bool] | None = None,
    per_address: float = CLIENT_CONNECT_TIMEOUT,
) -> Window:
    """One new TLS MQTT connection every 100 ms for `seconds`; `fault` runs at `fault_at`;
    `detected` is polled every 50 ms after it (the proxy's own view that the broker is gone)."""
    ctx = tls_context(ca)
    w = Window()
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()

    async def watch() -> None:
        await asyncio.sleep(fault_at)
        await loop.run_in_executor(None, fault)
        w.events["fault"] = time.monotonic() - t0
        while detected and time.monotonic() - t0 < seconds + CLIENT_CONNECT_TIMEOUT:
            if await loop.run_in_executor(None, detected):
                w.events["detected"] = time.monotonic() - t0
                return
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    tasks = []
    n = int(seconds / NEW_CONNECTION_EVERY)
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i * NEW_CONNECTION_EVERY - time.monotonic()))
        tasks.append(asyncio.create_task(attempt(ports, ctx, f"device-{i}", t0, per_address)))
    w.attempts = list(await asyncio.gather(*tasks))
    await asyncio.wait_for(watcher, CLIENT_CONNECT_TIMEOUT + 2)
    return w


class Devices:
    """Sessions held as devices hold them: connected, silent, and reconnecting (after a random
    0.1-1 s back-off, as MQTT clients jitter) whenever the connection drops."""

    def __init__(self, ports: list[int], ca: Path, n: int, tag: str = "session"):
        self.ports, self.ctx, self.n, self.tag = ports, tls_context(ca), n, tag
        self.connected: dict[int, float] = {}
        self.drops: dict[int, int] = dict.fromkeys(range(n), 0)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self, timeout: float = 60.0) -> None:
        sem = asyncio.Semaphore(100)
        self._sem = sem
        self._tasks = [asyncio.create_task(self._device(i)) for i in range(self.n)]
        await self.wait_all(timeout)

    async def wait_all(self, timeout: float) -> float:
        """Seconds until every device is connected again (TimeoutError past the timeout)."""
        t0 = time.monotonic()
        while len(self.connected) < self.n:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{self.n - len(self.connected)} of {self.n} sessions not back after {timeout}s")
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    async def _device(self, i: int) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                await asyncio.sleep(random.uniform(0.1, 1.0))  # noqa: S311 - back-off jitter, not security
            first = False
            w = None
            for port in self.ports:
                try:
                    async with self._sem:
                        r, w = await asyncio.wait_for(mqtt_open(port, self.ctx, f"{self.tag}-{i}"), CLIENT_CONNECT_TIMEOUT)
                    break
                except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                    w = None
            if w is None:
                continue
            self.connected[i] = time.monotonic()
            try:
                stop = asyncio.create_task(self._stop.wait())
                read = asyncio.create_task(r.read(1))
                await asyncio.wait({stop, read}, return_when=asyncio.FIRST_COMPLETED)
                for t in (stop, read):
                    t.cancel()
            finally:
                _close(w)
                if not self._stop.is_set():
                    self.connected.pop(i, None)
                    self.drops[i] += 1

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10)


# --- faults ---------------------------------------------------------------------------------------


def freeze(b: Broker) -> None:
    """The broker hangs: the kernel still completes handshakes (the listener accepts and relays),
    MQTT is never answered."""
    os.kill(b.proc.popen.pid, signal.SIGSTOP)


def thaw(b: Broker) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(b.proc.popen.pid, signal.SIGCONT)


class SynDrop:
    """An address whose SYNs go unanswered, as a vanished host's: a listener with a zero backlog
    whose one queue slot is taken, so the kernel drops every further SYN (Linux drops a SYN when the
    accept queue is full). No iptables here; nothing outside 127.0.0.0/8 is touched."""

    def __init__(self, host: str, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:  # the listener it replaces (a killed proxy, a stopped shim) may still be closing
            try:
                self.sock.bind((host, port))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    self.sock.close()
                    raise
                time.sleep(0.01)
        self.sock.listen(0)
        self.filler = socket.create_connection((host, port), timeout=2)

    def close(self) -> None:
        self.filler.close()
        self.sock.close()


def vanish(b: Broker) -> SynDrop:
    """The broker's host disappears: its connections go silent and new SYNs are dropped."""
    b.mqtt_shim.stop()
    return SynDrop(b.host, b.port)


# --- what the proxy itself thinks -----------------------------------------------------------------


def haproxy_down(stats_port: int, conf: Path, host: str) -> Callable[[], bool]:
    """haproxy's stats show the MQTT server on `host` DOWN (the page hides addresses: the server
    is found by its name in the localised config)."""
    name = re.search(rf"^\s*server (\S+) {re.escape(host)}:", conf.read_text(), flags=re.M).group(1)

    def check() -> bool:
        rows = haproxy_stats(stats_port)
        return any(r["pxname"] == "mqtt_brokers" and r["svname"] == name and r["status"].startswith("DOWN") for r in rows)

    return check


def nginx_down(conf: Path, host: str) -> Callable[[], bool]:
    pattern = re.compile(rf"^\s*server {re.escape(host)}:\d+ [^;]*\bdown;", re.M)

    def check() -> bool:
        stream = conf.read_text().partition("\nhttp {")[0]
        return bool(pattern.search(stream))

    return check


def start_checker(lab: Lab, unit: str) -> subprocess.Popen:
    """Run the shipped checker, with the arguments of the shipped systemd unit, against the Lab's
    localised nginx.conf (the only argument changed is --conf)."""
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[:2] == ["/usr/bin/python3", CHECKER_PATH], argv
    script = lab.workdir / "mqtt-upstream-check"
    script.write_text(upstream_checker())
    args = argv[2:]
    args[args.index("--conf") + 1] = str(lab.workdir / "nginx.conf")
    log = open(lab.workdir / "checker.log", "wb")  # noqa: SIM115 - closed with the process
    p = subprocess.Popen([sys.executable, str(script), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lab.procs.append(_Proc("checker", p))
    return p


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(timeout=5)


def kill_proxy(pid: int) -> None:
    """A proxy host dies: its process (group) is killed at once; its port refuses."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


__all__ = ["c", "free_port"]
