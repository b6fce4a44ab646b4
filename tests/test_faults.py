"""The data path under faults, through the proxy configs exactly as the stacks ship them: a hung
broker (SIGSTOP: the kernel completes handshakes, MQTT is never answered), a vanished one (SYNs
dropped), a killed proxy, and a reconnect storm. nginx runs with the shipped checker, started with
the arguments of the shipped systemd unit.

Windows are short here (12 s); bench/faults.py runs the same faults for 30 s and records figures.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from components import config as c
from components.renderers.proxy import CHECK, CHECKER_PATH, CHECKER_UNIT, CONNECT_TIMEOUT_S
from tests.conftest import plan_of
from tests.faultlab import (
    CLIENT_CONNECT_TIMEOUT,
    Devices,
    freeze,
    haproxy_down,
    kill_proxy,
    nginx_down,
    run_window,
    start_checker,
    thaw,
    vanish,
)
from tests.harness import Lab, free_port, make_certs, until
from tests.test_dataplane import HOSTS, KINDS, SHIPPED, shipped

WINDOW = 12.0
FAULT_AT = 2.0
DETECTION_LIMIT = 5.0
MAX_FAILED_PCT = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def arun(coro):
    """asyncio.run, leaving a fresh event loop behind: the Pulumi mocks that render the shipped
    files (plan_of) need one on the main thread."""
    try:
        return asyncio.run(coro)
    finally:
        asyncio.set_event_loop(asyncio.new_event_loop())


def shipped_unit() -> str:
    files = plan_of(SHIPPED["nginx"][0]).files
    return files[("nginx-1", CHECKER_UNIT)]


def start(lab: Lab, kind: str, certs) -> Lab:
    text, listeners = shipped(kind)
    lab.start_brokers(HOSTS, free_port(HOSTS[0]), listeners=listeners)
    lab.proxy = lab.start_shipped_proxy(kind, text, certs)
    lab.kind, lab.certs, lab.mqtts = kind, certs, lab.proxy.ports[c.MQTTS_PORT]
    if kind == "nginx":
        start_checker(lab, shipped_unit())
    return lab


def detector(lab: Lab, host: str):
    if lab.kind == "haproxy":
        return haproxy_down(lab.proxy.ports[c.HAPROXY_STATS_PORT], lab.proxy.conf, host)
    return nginx_down(lab.proxy.conf, host)


@pytest.fixture(params=KINDS)
def lab(request, tmp_path, certs):
    with Lab(tmp_path) as lab:
        try:
            yield start(lab, request.param, certs)
        finally:
            for b in lab.brokers:
                thaw(b)


def test_the_shipped_timings_detect_a_silent_broker_within_the_limit():
    """The settings the fault tests hold the proxies to, as rendered."""
    assert CHECK.detection_s <= 4.0 and CHECK.fall >= 2
    haproxy, _ = shipped("haproxy")
    assert "timeout check 1s" in haproxy and "timeout connect 1s" in haproxy and "option redispatch 1" in haproxy
    for backend in ("mqtt_brokers", "mqtt_ws"):
        body = re.search(rf"^backend {backend}\n(.*?)(?=^\S|\Z)", haproxy, flags=re.M | re.S).group(1)
        assert "inter 1000ms fastinter 500ms downinter 2000ms fall 2 rise 3 on-marked-down shutdown-sessions" in body
    nginx, _ = shipped("nginx")
    stream = nginx.partition("\nhttp {")[0]
    assert "zone mqtt_brokers" in stream and "least_conn;" in stream and not re.search(r"^\s*hash ", stream, flags=re.M)
    assert re.findall(r"proxy_connect_timeout (\S+);", nginx) == [f"{CONNECT_TIMEOUT_S}s"] * 2
    unit = shipped_unit()
    assert "--proxy-protocol" in unit and "--follow mqtt_ws" in unit and "--fall 2 --rise 3" in unit


def test_a_hung_broker_is_detected_in_seconds_and_few_new_connections_fail(lab):
    """SIGSTOP one broker while a new TLS MQTT connection arrives every 100 ms and sessions are held."""
    frozen = lab.brokers[1]

    async def scenario():
        devices = Devices([lab.mqtts], lab.certs["ca"], 30)
        await devices.start()
        try:
            return await run_window([lab.mqtts], lab.certs["ca"], WINDOW, FAULT_AT, lambda: freeze(frozen), detector(lab, frozen.host))
        finally:
            await devices.stop()

    w = arun(scenario())
    s = w.summary()
    assert s["detected_after_fault_s"] is not None and s["detected_after_fault_s"] <= DETECTION_LIMIT, s
    assert s["failed_pct"] <= MAX_FAILED_PCT, s
    # Failures stop once the broker is out: nothing that started after detection failed.
    assert all(a.started < w.events["detected"] for a in w.failed), s


def test_a_vanished_broker_costs_a_connect_timeout_not_a_failed_device(lab):
    """A broker's host vanishes (its SYNs dropped): each CONNECT the proxy sends there is retried
    on another broker after the connect timeout, well inside the client's own."""
    gone = lab.brokers[1]
    drops = []
    try:
        w = arun(run_window([lab.mqtts], lab.certs["ca"], WINDOW, FAULT_AT, lambda: drops.append(vanish(gone)), detector(lab, gone.host)))
    finally:
        for d in drops:
            d.close()
    s = w.summary()
    # Measured: nginx 0; haproxy 0-1 of 120 — a connection waiting to retry when the server is
    # marked DOWN is cut with it (on-marked-down shutdown-sessions) instead of redispatched.
    assert s["failed_pct"] <= MAX_FAILED_PCT, s
    assert all(a.started < w.events["detected"] for a in w.failed), s
    # haproxy: 1 s connect timeout + 1 s turn-around before the redispatch; nginx: 1 s, then the next.
    assert s["connect_s_max_after_fault"] <= 2 * CONNECT_TIMEOUT_S + 1.0 < CLIENT_CONNECT_TIMEOUT, s
    assert s["detected_after_fault_s"] is not None and s["detected_after_fault_s"] <= DETECTION_LIMIT, s


@pytest.mark.parametrize("kind", KINDS)
def test_devices_holding_two_proxy_addresses_survive_a_killed_proxy(kind, tmp_path, certs):
    """Two proxies of the same shipped config; devices hold both addresses (a multivalue answer).
    One proxy is killed: new connections go to the other at once, held sessions come back."""
    with Lab(tmp_path) as lab:
        start(lab, kind, certs)
        second = Lab(tmp_path / "second")
        second.workdir.mkdir()
        second.brokers = lab.brokers
        try:
            other = second.start_shipped_proxy(kind, shipped(kind)[0], certs)
            if kind == "nginx":
                start_checker(second, shipped_unit())
            ports = [lab.mqtts, other.ports[c.MQTTS_PORT]]

            async def scenario():
                devices = Devices(ports, certs["ca"], 60)
                await devices.start()
                try:
                    w = await run_window(ports, certs["ca"], 6.0, 1.0, lambda: kill_proxy(lab.proxy.proc.popen.pid))
                    back = await devices.wait_all(10)
                    return w, back, devices
                finally:
                    await devices.stop()

            w, back, devices = arun(scenario())
        finally:
            second.brokers = []
            second.stop()
    s = w.summary()
    assert s["failed"] == 0, s
    assert all(a.via == 1 for a in w.attempts if a.started > w.events["fault"] + 0.2), "after the kill, the second address"
    assert s["connect_s_max_after_fault"] < 1.0, s
    assert back < 5 and sum(devices.drops.values()) > 0, (back, devices.drops)


@pytest.mark.parametrize("kind", KINDS)
def test_a_reconnect_storm_comes_back_within_seconds_with_no_session_lost(kind, tmp_path, certs):
    """1 200 sessions; one broker dies and a third of them drop at once; every one is back."""
    n = 1200
    with Lab(tmp_path) as lab:
        start(lab, kind, certs)

        async def scenario():
            devices = Devices([lab.mqtts], certs["ca"], n)
            await devices.start(timeout=90)
            try:
                await asyncio.get_running_loop().run_in_executor(None, lab.brokers[1].stop)
                await asyncio.sleep(0.3)
                dropped = sum(1 for v in devices.drops.values() if v)
                back = await devices.wait_all(15)
                return dropped, back, devices
            finally:
                await devices.stop()

        dropped, back, devices = arun(scenario())
    assert n // 4 <= dropped <= n // 2, dropped
    assert len(devices.connected) == n and back < 10, back


def test_the_checker_marks_down_and_back_up_with_one_reload_each(tmp_path, certs):
    """The checker alone: a frozen broker is marked down after `fall` failed rounds and back up
    after `rise` good ones; nginx reloads once per change (the file shows each state)."""
    with Lab(tmp_path) as lab:
        start(lab, "nginx", certs)
        b = lab.brokers[2]
        down = nginx_down(lab.proxy.conf, b.host)
        ws_down = re.compile(rf"^\s*server {re.escape(b.host)}:\d+ [^;]*\bdown;", re.M)
        try:
            freeze(b)
            assert until(down, 6), lab.proxy.conf.read_text()
            http = lab.proxy.conf.read_text().partition("\nhttp {")[2]
            assert ws_down.search(http), "the WebSocket upstream follows"
        finally:
            thaw(b)
        assert until(lambda: not down(), 8)
        log = (lab.workdir / "checker.log").read_text()
        assert log.count("nginx reloaded") == 2, log


# --- AWS load balancers and proxy hosts, as planned ------------------------------------------------


def test_nlb_checks_at_the_fastest_interval_and_cuts_unhealthy_targets_connections():
    """NLB: interval 5 s, timeout 2 s, 2 failures (the minimums, pulumi_aws 7.51.1
    lb/_inputs.py:3493-3516): a broker whose status probe stops answering is out within
    2 x 5 + 2 = 12 s, and its connections are reset so devices reconnect elsewhere."""
    plan = plan_of("dev")
    tgs = [t.inputs for t in plan.of_type("aws:lb/targetGroup:TargetGroup")]
    assert len(tgs) == 2
    for tg in tgs:
        hc = tg["healthCheck"]
        assert (hc["interval"], hc["timeout"], hc["unhealthyThreshold"], hc["healthyThreshold"]) == (5, 2, 2, 2)
        assert tg["targetHealthStates"] == [{"enableUnhealthyConnectionTermination": True}]


def test_classic_elb_checks_at_the_fastest_interval():
    hc = plan_of("staging").of_type("aws:elb/loadBalancer:LoadBalancer")[0].inputs["healthCheck"]
    assert (hc["interval"], hc["timeout"], hc["unhealthyThreshold"], hc["healthyThreshold"]) == (5, 2, 2, 2)


def test_proxy_records_fail_over_within_the_documented_time():
    """Route 53: a check every 10 s, 2 failures, records with a 10 s TTL: about 30 s."""
    plan = plan_of("edge")
    checks = [h.inputs for h in plan.of_type("aws:route53/healthCheck:HealthCheck")]
    records = [r.inputs for r in plan.of_type("aws:route53/record:Record") if r.inputs.get("multivalueAnswerRoutingPolicy")]
    assert checks and all((h["requestInterval"], h["failureThreshold"]) == (10, 2) for h in checks)
    assert records and all(r["ttl"] == 10 for r in records)


def test_nginx_proxy_hosts_ship_and_start_the_checker():
    import base64
    import gzip

    import yaml

    files = plan_of("edge").files
    for host in ("nginx-1", "nginx-2"):
        doc = yaml.safe_load(files[(host, "cloud-init.yaml")])
        written = {f["path"]: f for f in doc["write_files"]}
        checker = written[CHECKER_PATH]
        assert checker["encoding"] == "gz+b64"
        assert gzip.decompress(base64.b64decode(checker["content"])).decode() == files[(host, "mqtt-upstream-check")]
        assert written[f"/etc/systemd/system/{CHECKER_UNIT}"]["content"] == files[(host, CHECKER_UNIT)]
        assert ["chmod", "0755", CHECKER_PATH] in doc["runcmd"]
        assert f"systemctl enable --now {CHECKER_UNIT}" in files[(host, "mqtt-proxy-start")]
        assert len(files[(host, "cloud-init.yaml")].encode()) < 16384, "EC2 user-data limit"
    assert not any(name == CHECKER_UNIT for _, name in plan_of("vernemq").files), "haproxy checks by itself"


def test_the_checker_fails_open_when_every_broker_fails(tmp_path):
    """All brokers refusing: marking them all down would refuse every device, so none is marked
    and nginx is not reloaded (no pid file exists to signal: a reload attempt would crash it)."""
    import signal
    import subprocess
    import sys

    from components.renderers.proxy import upstream_checker

    ports = [free_port(h) for h in HOSTS]  # nothing listens: connection refused
    conf = tmp_path / "nginx.conf"
    text = "pid {};\nstream {{\n    upstream mqtt_brokers {{\n        zone mqtt_brokers 64k;\n{}    }}\n}}\n".format(
        tmp_path / "absent.pid", "".join(f"        server {h}:{p} max_fails=2;\n" for h, p in zip(HOSTS, ports, strict=True))
    )
    conf.write_text(text)
    script = tmp_path / "mqtt-upstream-check"
    script.write_text(upstream_checker())
    fast = ["--inter", "0.05", "--fastinter", "0.05", "--timeout", "0.2", "--fall", "2", "--rise", "3"]
    p = subprocess.run([sys.executable, str(script), "--conf", str(conf), *fast, "--rounds", "5"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert conf.read_text() == text

    # One broker answering MQTT is enough for the others to be marked down.
    (tmp_path / "lab").mkdir()
    with Lab(tmp_path / "lab") as lab:
        lab.start_brokers(HOSTS[:1], free_port(HOSTS[0]), listeners=(False, False))
        live = f"{HOSTS[0]}:{lab.brokers[0].port}"
        pid = tmp_path / "reload.pid"
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            pid.write_text(str(sleeper.pid))
            conf.write_text(text.replace(f"{HOSTS[0]}:{ports[0]}", live).replace(str(tmp_path / "absent.pid"), str(pid)))
            # The live broker answers through no shim here, but a loaded machine may take longer than 0.2 s.
            patient = [*fast[:4], "--timeout", "1", *fast[6:]]
            p = subprocess.run(
                [sys.executable, str(script), "--conf", str(conf), *patient, "--rounds", "5"], capture_output=True, timeout=30
            )
            assert sleeper.wait(timeout=5) == -signal.SIGHUP, "the reload signal reached the pid file's process"
        finally:
            if sleeper.poll() is None:
                sleeper.kill()
                sleeper.wait()
        out = conf.read_text()
        assert f"server {live} max_fails=2;" in out
        assert all(f"server {h}:{p} max_fails=2 down;" in out for h, p in zip(HOSTS[1:], ports[1:], strict=True)), out
