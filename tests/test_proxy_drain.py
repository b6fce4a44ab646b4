"""Rollouts drain a broker on the self-hosted proxies (load_balancer.kind nginx|haproxy).

The proxy drain script runs for real against haproxy 2.6 / nginx 1.22 on loopback with the configs
the stacks ship (tests/harness.localise), and the rollout step runs against the fake `aws`
(Systems Manager) and fake `docker` (the brokers), recording what reaches each proxy host.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from components import config as c
from components.config import parse
from components.renderers.nodes import node_specs, seed
from components.renderers.proxy import CHECKER_PATH, CHECKER_UNIT, DRAINED_FILE, upstream_checker
from components.renderers.scripts import node_script
from components.rollout import proxy_script, step_script
from tests.conftest import plan_of
from tests.harness import Lab, connect_once, free_port, make_certs, proc_stats, raw_mqtt_connect, tls_context, until
from tests.test_dataplane import HOSTS, SHIPPED, shipped
from tests.test_day2 import _state

FAKES = Path(__file__).parent / "fakes"
PROXIES = {"p-1": "10.0.1.1", "p-2": "10.0.1.2"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _run_proxy_script(kind: str, workdir: Path, *args: str, **env) -> subprocess.CompletedProcess:
    path = workdir / "proxy-drain.sh"
    path.write_text(proxy_script(kind))
    full = {**os.environ, "POLL": "0.1", "PROXY_WAIT": "15", **env}
    return subprocess.run(["bash", str(path), *args], env=full, capture_output=True, text=True, timeout=60)


# --- haproxy: "set server … state drain" on the admin socket -------------------------------------
def _admin(sock: Path, cmd: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(cmd.encode() + b"\n")
        return b"".join(iter(lambda: s.recv(65536), b"")).decode()


def _servers(sock: Path, backend: str = "mqtt_brokers") -> dict[str, dict[str, str]]:
    """haproxy's own counters per server (haproxy/haproxy v2.6.0 doc/management.txt:1095-1134:
    4 scur, 7 stot, 17 status)."""
    rows = [line.split(",") for line in _admin(sock, "show stat").splitlines() if line and not line.startswith("#")]
    return {r[1]: {"scur": r[4], "stot": r[7], "status": r[17]} for r in rows if r[0] == backend and r[1] not in ("FRONTEND", "BACKEND")}


def _session(port: int, ca: Path, client_id: str) -> socket.socket:
    """An MQTT session through the proxy, held open."""
    sock = tls_context(ca).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
    assert raw_mqtt_connect(sock, client_id) == b"\x20\x02\x00\x00"
    return sock


def test_shipped_haproxy_has_a_root_only_admin_socket():
    text, _ = shipped("haproxy")
    assert re.search(r"^    stats socket /run/haproxy-admin\.sock mode 600 level admin$", text, re.M), text[:600]


def test_a_drained_broker_behind_shipped_haproxy_gets_no_new_connections_and_keeps_its_own(tmp_path, certs):
    text, listeners = shipped("haproxy")
    names = re.findall(r"^    server (\S+) ", text.partition("\nbackend mqtt_brokers\n")[2].partition("\nbackend")[0], re.M)
    assert len(names) == 3, names
    drained = names[1]
    with Lab(tmp_path) as lab:
        lab.start_brokers(HOSTS, free_port(HOSTS[0]), listeners=listeners)
        proxy = lab.start_shipped_proxy("haproxy", text, certs)
        sock = tmp_path / "admin.sock"
        port = proxy.ports[c.MQTTS_PORT]
        assert until(lambda: all(s["status"] == "UP" for s in _servers(sock).values()), 15), _servers(sock)
        held = [_session(port, certs["ca"], f"held-{i}") for i in range(6)]  # leastconn: two each
        try:
            assert until(lambda: int(_servers(sock)[drained]["scur"]) >= 1, 5), _servers(sock)
            r = _run_proxy_script("haproxy", tmp_path, "drain", drained, "unused", ADMIN_SOCKET=str(sock))
            assert r.returncode == 0, r.stderr
            assert "DRAIN" in _servers(sock)[drained]["status"]
            if "backend mqtt_ws" in text:
                assert "DRAIN" in _servers(sock, "mqtt_ws")[drained]["status"]
            before = {n: int(s["stot"]) for n, s in _servers(sock).items()}
            n = 30
            assert all(connect_once("127.0.0.1", port, certs["ca"], f"during-{i}") for i in range(n))
            after = {k: int(s["stot"]) for k, s in _servers(sock).items()}
            assert after[drained] == before[drained], (before, after)
            assert sum(after.values()) - sum(before.values()) == n, (before, after)
            assert int(_servers(sock)[drained]["scur"]) >= 1, "drain keeps the sessions it has"
            r = _run_proxy_script("haproxy", tmp_path, "settle", drained, "unused", "1", ADMIN_SOCKET=str(sock))
            assert r.returncode == 0 and "open connections" in r.stderr, r.stderr  # bounded: 1 s, they stay open
            r = _run_proxy_script("haproxy", tmp_path, "ready", drained, "unused", ADMIN_SOCKET=str(sock))
            assert r.returncode == 0, r.stderr
            assert _servers(sock)[drained]["status"] == "UP"
            before = after
            assert all(connect_once("127.0.0.1", port, certs["ca"], f"after-{i}") for i in range(n))
            after = {k: int(s["stot"]) for k, s in _servers(sock).items()}
            assert after[drained] > before[drained], (before, after)
        finally:
            for s in held:
                s.close()


# --- nginx: the checker keeps a broker listed in the drain file down ------------------------------
def _start_checker(lab: Lab, drained: Path) -> None:
    """The shipped checker with the shipped unit's arguments; only --conf and --drained point here."""
    unit = plan_of(SHIPPED["nginx"][0]).files[("nginx-1", CHECKER_UNIT)]
    argv = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart=")).removeprefix("ExecStart="))
    assert argv[:2] == ["/usr/bin/python3", CHECKER_PATH], argv
    args = argv[2:]
    assert args[args.index("--drained") + 1] == DRAINED_FILE
    args[args.index("--conf") + 1] = str(lab.workdir / "nginx.conf")
    args[args.index("--drained") + 1] = str(drained)
    script = lab.workdir / "mqtt-upstream-check"
    script.write_text(upstream_checker())
    lab._spawn("checker", [sys.executable, str(script), *args])


def _children(pid: int) -> set[int]:
    """The live children of a process (nginx's workers under its master), from /proc."""
    return {child for child, f in proc_stats() if int(f[1]) == pid and f[0] != "Z"}


def _reloaded(master: int, old: set[int]) -> bool:
    """nginx has reloaded: the workers that served the old configuration are gone (until then
    they keep accepting with it). The master stops them about 100 ms after forking the new ones."""
    return not (_children(master) & old)


def _upstreams(log: Path, skip: int) -> list[str]:
    lines = log.read_text().splitlines()[skip:] if log.exists() else []
    return [line.rsplit('"', 2)[1] for line in lines]


def test_a_drained_broker_behind_shipped_nginx_gets_no_new_connections_until_undrained(tmp_path, certs):
    text, listeners = shipped("nginx")
    with Lab(tmp_path) as lab:
        brokers = lab.start_brokers(HOSTS, free_port(HOSTS[0]), listeners=listeners)
        proxy = lab.start_shipped_proxy("nginx", text, certs)
        drained_file = tmp_path / "drained"
        _start_checker(lab, drained_file)
        port, log, conf = proxy.ports[c.MQTTS_PORT], tmp_path / "mqtt-access.log", proxy.conf
        host = brokers[1].host
        env = {"NGINX_CONF": str(conf), "DRAINED_FILE": str(drained_file)}
        master = proxy.proc.popen.pid
        assert until(lambda: bool(_children(master)), 10)
        old = _children(master)
        r = _run_proxy_script("nginx", tmp_path, "drain", "unused", host, **env)
        assert r.returncode == 0, r.stderr + (tmp_path / "checker.log").read_text()
        assert drained_file.read_text() == f"{host}\n"
        stream = conf.read_text().partition("\nhttp {")[0]
        assert re.search(rf"server {re.escape(host)}:\d+ [^;]*\bdown;", stream), stream
        assert until(lambda: _reloaded(master, old), 10), "nginx reloads once the drain has written its config"
        skip = len(_upstreams(log, 0))
        n = 30
        assert all(connect_once("127.0.0.1", port, certs["ca"], f"during-{i}") for i in range(n))
        # nginx's access log (flush=5s as shipped) names the upstream of every session
        assert until(lambda: len(_upstreams(log, skip)) >= n, 10), _upstreams(log, skip)
        ups = _upstreams(log, skip)
        assert not any(u.startswith(f"{host}:") for u in ups), ups
        assert {u.split(":")[0] for u in ups} == {HOSTS[0], HOSTS[2]}, ups
        old = _children(master)
        r = _run_proxy_script("nginx", tmp_path, "ready", "unused", host, **env)
        assert r.returncode == 0, r.stderr
        assert drained_file.read_text() == ""
        assert until(lambda: _reloaded(master, old), 10), "nginx reloads once the undrain has written its config"
        skip = len(_upstreams(log, 0))
        assert all(connect_once("127.0.0.1", port, certs["ca"], f"after-{i}") for i in range(n))
        assert until(lambda: len(_upstreams(log, skip)) >= n, 10)
        assert any(u.startswith(f"{host}:") for u in _upstreams(log, skip)), _upstreams(log, skip)


# --- the rollout step: drain on every proxy -> restart -> gate -> ready ---------------------------
def _step(cfg, index: int, kind: str, state: Path, tmp_path: Path, **extra: str) -> subprocess.Popen:
    nodes = node_specs(cfg)
    node = nodes[index]
    script = step_script(
        stack=cfg.stack,
        node=node,
        node_script=node_script(cfg.brokers.engine, node, seed(nodes), container="broker"),
        region="eu-central-1",
        transport="ssm",
        drain_wait=1,
        proxy_kind=kind,
    )
    env = {
        **os.environ,
        "PATH": f"{FAKES / 'day2'}:{FAKES}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "INSTANCE_ID": f"i-{index + 1}",
        "ADDRESS": f"10.0.0.{index + 1}",
        "TARGET_GROUPS": "",
        "ELB_NAME": "",
        "PROXIES": " ".join(f"{k},{v}" for k, v in PROXIES.items()),
        "CONFIG_HASH": "h2",
        "LOCK_DIR": str(tmp_path / "lock"),
        "POLL": "0.05",
        "HEALTH_WAIT": "3",
        "AGENT_WAIT": "1",
        "STEP_WAIT": "20",
        **extra,
    }
    return subprocess.Popen(
        ["bash", "-c", script, f"step-{node.host}", "apply"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _events(state: Path) -> list[str]:
    """What reaches the proxies (drain/settle/ready per proxy host), restarts, and the gate: the
    first broker CLI call in a container after its restart."""
    out: list[str] = []
    restarted = None
    for call in json.loads(state.read_text())["calls"]:
        if call.startswith("proxy "):
            _, iid, action, server, *_ = call.split()
            out.append(f"{action} {server} {iid}")
        elif call.startswith("restart "):
            restarted = call.split()[-1]
            out.append(f"restart {restarted}")
        elif restarted and call.startswith(f"exec {restarted} "):
            out.append(f"gate {restarted}")
            restarted = None
    return out


def _config(stack: str):
    """The engine and proxy kind of the shipped stack (stacks/Pulumi.<stack>.yaml)."""
    brokers = {"vernemq": {"engine": "vernemq", "accept_eula": True}, "edge": {"engine": "emqx"}}[stack]
    kind = {"vernemq": "haproxy", "edge": "nginx"}[stack]
    return parse({"brokers": {**brokers, "count": 3}, "load_balancer": {"kind": kind}}, stack=stack, source="x", region="eu-central-1")


@pytest.mark.parametrize("stack", ["vernemq", "edge"])
def test_a_rollout_drains_on_every_proxy_then_restarts_gates_and_readies_one_node_at_a_time(stack, tmp_path):
    cfg = _config(stack)
    kind = cfg.load_balancer.kind
    nodes = node_specs(cfg)
    state = _state(tmp_path, nodes, proxies=list(PROXIES))
    procs = [_step(cfg, i, kind, state, tmp_path) for i in range(len(nodes))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    ev = _events(state)
    per_node = []
    for n in nodes:
        c_ = f"c{n.index + 1}"
        drains = [ev.index(f"drain {n.host} {p}") for p in PROXIES]
        readies = [ev.index(f"ready {n.host} {p}") for p in PROXIES]
        restart, gate = ev.index(f"restart {c_}"), ev.index(f"gate {c_}")
        assert max(drains) < ev.index(f"settle {n.host} p-1") < restart < gate < min(readies), ev
        per_node.append((min(drains), max(readies)))
    per_node.sort()
    for (_, end), (start, _) in zip(per_node, per_node[1:], strict=False):
        assert end < start, f"one node at a time: {ev}"


def test_a_proxy_that_cannot_drain_stops_the_rollout_before_any_restart(tmp_path):
    cfg = _config("vernemq")
    nodes = node_specs(cfg)
    state = _state(tmp_path, nodes, proxies=list(PROXIES))
    st = json.loads(state.read_text())
    st["proxy_fails"] = ["p-2"]
    state.write_text(json.dumps(st))
    p = _step(cfg, 1, "haproxy", state, tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert "proxy p-2 did not drain it" in err, err
    assert not any(call.startswith("restart ") for call in json.loads(state.read_text())["calls"])


def test_the_settle_command_may_run_as_long_as_the_connections_get(tmp_path):
    # A command still running at executionTimeout is killed by the agent (aws/amazon-ssm-agent
    # 3.3.1142.0 agent/executers/executers.go:324-336): the settle wait may outlast STEP_WAIT.
    cfg = _config("vernemq")
    nodes = node_specs(cfg)
    state = _state(tmp_path, nodes, proxies=list(PROXIES))
    p = _step(cfg, 1, "haproxy", state, tmp_path, STEP_WAIT="20", DRAIN_WAIT="45")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    calls = json.loads(state.read_text())["calls"]
    sent = [c for c in calls if c.startswith("aws ssm send-command") or c.startswith("proxy ")]
    for i, call in enumerate(sent[1:], 1):
        if call.startswith("proxy ") and call.split()[2] == "settle":
            limit = int(sent[i - 1].rsplit("executionTimeout=", 1)[1])
            assert limit >= int(call.split()[-1]) + 30, (sent[i - 1], call)
            assert int(call.split()[-1]) > 30, call
            break
    else:
        raise AssertionError(sent)


@pytest.mark.parametrize(("stack", "kind"), [("vernemq", "haproxy"), ("edge", "nginx"), ("dev", None)])
def test_every_rollout_step_of_a_proxy_stack_drains_on_every_proxy_host(stack, kind):
    plan = plan_of(stack)
    proxies = sorted(r.id for r in plan.of_type("aws:ec2/instance:Instance") if kind and r.name.startswith(f"lb-{kind}-"))
    assert len(proxies) == (2 if kind else 0)
    steps = [r for r in plan.of_type("command:local:Command") if r.name.startswith("ops-rollout-")]
    assert len(steps) == 3
    for r in steps:
        listed = sorted(p.split(",")[0] for p in r.inputs["environment"]["PROXIES"].split())
        assert listed == proxies, (r.name, listed)
        script = r.inputs["interpreter"][2]
        packed = re.search(r"^PROXY_SCRIPT_GZ=(\S*)", script, re.M).group(1).strip("'")
        if kind:
            text = gzip.decompress(base64.b64decode(packed)).decode()
            assert text == proxy_script(kind), r.name
            host = r.name.removeprefix("ops-rollout-")
            assert re.search(rf"^PROXY_SERVER='{host}'\s", script, re.M), "the server name haproxy.cfg gives the node"
        else:
            assert packed == "", "an NLB/ELB stack drains on its load balancer only"


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_the_proxy_drain_script_and_its_rollout_pass_shellcheck(kind, tmp_path):
    cfg = _config("vernemq" if kind == "haproxy" else "edge")
    nodes = node_specs(cfg)
    step = step_script(
        stack=cfg.stack,
        node=nodes[1],
        node_script=node_script(cfg.brokers.engine, nodes[1], seed(nodes), container="broker"),
        region="eu-central-1",
        transport="ssm",
        drain_wait=30,
        proxy_kind=kind,
    )
    for name, text in (("proxy.sh", proxy_script(kind)), ("step.sh", step)):
        (tmp_path / name).write_text(text)
        proc = subprocess.run(["shellcheck", str(tmp_path / name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
