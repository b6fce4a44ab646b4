"""Benchmark: the data path under faults, through the proxy configs exactly as the stacks ship them.

    python -m bench.faults [--window 30] [--storm 3000] [--out build/bench/faults.json]

The committed figures (bench/results/faults.json) change only when asked: ``make bench-faults
BENCH_SAVE=1`` or ``--out bench/results/faults.json``.

Per proxy kind (haproxy: stack vernemq; nginx: stack edge, with its shipped checker), three brokers
behind PROXY-protocol listener shims, one new TLS MQTT connection every 100 ms for the window while
sessions are held:
- hung: one broker frozen (SIGSTOP) — failed connections, when the proxy marked it down;
- vanished: one broker's SYNs dropped — failed connections, slowest CONNACK;
- proxy killed / proxy host vanished: two proxies, devices holding both addresses;
- storm: a third of the sessions dropped at once (a broker dies) — time until all are back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components import config as c  # noqa: E402
from components.renderers.proxy import CHECK, CHECKER_UNIT, CONNECT_TIMEOUT_S  # noqa: E402
from tests.conftest import plan_of  # noqa: E402
from tests.faultlab import (  # noqa: E402
    CLIENT_CONNECT_TIMEOUT,
    Devices,
    SynDrop,
    freeze,
    haproxy_down,
    kill_proxy,
    nginx_down,
    run_window,
    start_checker,
    thaw,
    vanish,
)
from tests.harness import BROKER_HOSTS as HOSTS  # noqa: E402
from tests.harness import Lab, broker_listeners, free_port, make_certs  # noqa: E402

SHIPPED = {"nginx": ("edge", ("nginx-1", "nginx.conf")), "haproxy": ("vernemq", ("haproxy-1", "haproxy.cfg"))}
HELD = 30


def shipped(kind: str) -> dict:
    stack, key = SHIPPED[kind]
    files = plan_of(stack).files
    first = min(h for h, name in files if name in ("emqx.conf", "broker.env"))
    return {"text": files[key], "listeners": broker_listeners(files, first), "unit": files.get(("nginx-1", CHECKER_UNIT))}


def arun(coro):
    try:
        return asyncio.run(coro)
    finally:
        asyncio.set_event_loop(asyncio.new_event_loop())


class Setup:
    def __init__(self, work: Path, kind: str, certs: dict, ship: dict, proxies: int = 1):
        self.kind, self.certs, self.ship = kind, certs, ship
        self.lab = Lab(work)
        self.lab.start_brokers(HOSTS, free_port(HOSTS[0]), listeners=ship["listeners"])
        self.labs, self.proxies = [self.lab], []
        for i in range(proxies):
            lab = self.lab
            if i:
                lab = Lab(work / f"proxy-{i}")
                lab.workdir.mkdir()
                lab.brokers = self.lab.brokers
                self.labs.append(lab)
            self.proxies.append(lab.start_shipped_proxy(kind, ship["text"], certs))
            if kind == "nginx":
                start_checker(lab, ship["unit"])
        self.ports = [p.ports[c.MQTTS_PORT] for p in self.proxies]

    def detector(self, host: str):
        p = self.proxies[0]
        if self.kind == "haproxy":
            return haproxy_down(p.ports[c.HAPROXY_STATS_PORT], p.conf, host)
        return nginx_down(p.conf, host)

    def close(self) -> None:
        for b in self.lab.brokers:
            thaw(b)
        for lab in self.labs[1:]:
            lab.brokers = []
            lab.stop()
        self.lab.stop()


def window_with_sessions(s: Setup, ports: list[int], window: float, fault, detected=None, per_address=CLIENT_CONNECT_TIMEOUT):
    async def go():
        devices = Devices(ports, s.certs["ca"], HELD)
        await devices.start()
        try:
            w = await run_window(ports, s.certs["ca"], window, 5.0, fault, detected, per_address)
            back = await devices.wait_all(30)
            return w, back, sum(devices.drops.values())
        finally:
            await devices.stop()

    w, back, drops = arun(go())
    return {**w.summary(), "held_sessions": HELD, "held_sessions_dropped": drops, "held_sessions_all_back_s": round(back, 2)}


def hung(work: Path, kind: str, certs: dict, ship: dict, window: float) -> dict:
    s = Setup(work, kind, certs, ship)
    try:
        b = s.lab.brokers[1]
        return window_with_sessions(s, s.ports, window, lambda: freeze(b), s.detector(b.host))
    finally:
        s.close()


def vanished(work: Path, kind: str, certs: dict, ship: dict, window: float) -> dict:
    s = Setup(work, kind, certs, ship)
    drops: list[SynDrop] = []
    try:
        b = s.lab.brokers[1]
        return window_with_sessions(s, s.ports, window, lambda: drops.append(vanish(b)), s.detector(b.host))
    finally:
        for d in drops:
            d.close()
        s.close()


def lost_proxy(work: Path, kind: str, certs: dict, ship: dict, window: float, host_vanishes: bool, per_address: float) -> dict:
    """Devices hold both proxies' addresses and try them in order, each for per_address seconds."""
    s = Setup(work, kind, certs, ship, proxies=2)
    drops: list[SynDrop] = []

    def fault() -> None:
        kill_proxy(s.proxies[0].proc.popen.pid)
        if host_vanishes:
            time.sleep(0.05)
            drops.append(SynDrop("127.0.0.1", s.ports[0]))

    try:
        out = window_with_sessions(s, s.ports, window, fault, per_address=per_address)
        return {**out, "per_address_timeout_s": per_address}
    finally:
        for d in drops:
            d.close()
        s.close()


def storm(work: Path, kind: str, certs: dict, ship: dict, n: int) -> dict:
    s = Setup(work, kind, certs, ship)
    try:

        async def go():
            devices = Devices(s.ports, certs["ca"], n)
            t0 = time.monotonic()
            await devices.start(timeout=120)
            connect_s = time.monotonic() - t0
            try:
                await asyncio.get_running_loop().run_in_executor(None, s.lab.brokers[1].stop)
                await asyncio.sleep(0.3)
                dropped = sum(1 for v in devices.drops.values() if v)
                back = await devices.wait_all(60)
                return {
                    "sessions": n,
                    "initial_connect_s": round(connect_s, 2),
                    "dropped": dropped,
                    "all_back_s": round(back + 0.3, 2),
                    "lost": n - len(devices.connected),
                }
            finally:
                await devices.stop()

        return arun(go())
    finally:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--storm", type=int, default=int(os.environ.get("BENCH_STORM", "3000")))
    ap.add_argument("--out", type=Path, default=Path("build/bench/faults.json"))
    args = ap.parse_args()
    results: dict = {
        "window_s": args.window,
        "new_connection_every_s": 0.1,
        "client_connect_timeout_s": CLIENT_CONNECT_TIMEOUT,
        "fault_at_s": 5.0,
        "settings": {
            "check": {
                "inter_s": CHECK.inter,
                "fastinter_s": CHECK.fastinter,
                "timeout_s": CHECK.timeout,
                "fall": CHECK.fall,
                "rise": CHECK.rise,
            },
            "worst_case_detection_s": CHECK.detection_s,
            "proxy_connect_timeout_s": CONNECT_TIMEOUT_S,
        },
        "machine": {"cpus": os.cpu_count()},
        "kinds": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        for kind in ("haproxy", "nginx"):
            ship = shipped(kind)
            r = results["kinds"][kind] = {"stack": SHIPPED[kind][0]}
            for name, run in (
                ("hung_broker", lambda d, k=kind, sh=ship: hung(d, k, certs, sh, args.window)),
                ("vanished_broker", lambda d, k=kind, sh=ship: vanished(d, k, certs, sh, args.window)),
                ("proxy_killed", lambda d, k=kind, sh=ship: lost_proxy(d, k, certs, sh, args.window, False, CLIENT_CONNECT_TIMEOUT)),
                ("proxy_host_vanished", lambda d, k=kind, sh=ship: lost_proxy(d, k, certs, sh, args.window, True, 2.0)),
                ("reconnect_storm", lambda d, k=kind, sh=ship: storm(d, k, certs, sh, args.storm)),
            ):
                d = work / f"{kind}-{name}"
                d.mkdir()
                r[name] = run(d)
                print(kind, name, r[name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
