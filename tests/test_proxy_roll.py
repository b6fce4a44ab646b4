"""Proxy hosts are replaced one at a time, and an Elastic IP moves only to a proxy that serves.

The gate (rollout.sh.j2's proxy-ready action with templates/proxy-ready.sh.j2 as its host script)
runs for real against the fake `aws` (Systems Manager) and `ssh`, with a fake `cloud-init` and
`systemctl` on the fake proxy host and a real listener on 127.0.0.1 as its port 8883; the order of
a proxy-tier change is read from the offline plan's dependency graph.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components.rollout import gate_script, proxy_ready_script
from tests.harness import free_port, until

FAKES = Path(__file__).parent / "fakes"
UNITS = {"nginx": ["nginx.service", "mqtt-upstream-check.service"], "haproxy": ["haproxy.service"]}


@pytest.fixture
def listener():
    """A socket accepting on 127.0.0.1: the proxy's 8883 on the fake host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _host_state(tmp_path: Path, kind: str, cloud_init: list[str], units: dict[str, str] | None = None, **extra) -> Path:
    st = {
        "instances": {"i-p1": "proxy-1"},  # the fake aws runs the command "on" it, here
        "addresses": {"10.0.1.1": "proxy-1"},  # the fake ssh likewise
        "host": {"cloud_init": cloud_init, "units": units if units is not None else dict.fromkeys(UNITS[kind], "active")},
        **extra,
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(st))
    return path


def _gate_cmd(kind: str, state: Path, tmp_path: Path, port: int, transport: str = "ssm", **env) -> tuple[list[str], dict[str, str]]:
    host = f"{kind}-1"
    script = gate_script(stack="edge", host=host, kind=kind, region="ap-southeast-1", transport=transport)
    log = tmp_path / "cloud-init-output.log"
    log.write_text("".join(f"output line {i}\n" for i in range(40)) + "Failed to run module scripts-user\n")
    ssh = {"SSH_USER": "ec2-user", "BASTION": "203.0.113.10", "SSH_PRIVATE_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----"}
    full = {
        **os.environ,
        "PATH": f"{FAKES / 'proxyhost'}:{FAKES / 'day2'}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "INSTANCE_ID": "i-p1",
        "ADDRESS": "10.0.1.1",
        "POLL": "0.05",
        "AGENT_WAIT": "3",
        "STEP_WAIT": "30",
        "READY_WAIT": "5",
        "PROXY_PORT": str(port),
        "CLOUD_INIT_OUTPUT": str(log),
        **(ssh if transport == "ssh" else {}),
        **env,
    }
    return ["bash", "-c", script, f"gate-{host}", "proxy-ready"], full


def _gate(kind: str, state: Path, tmp_path: Path, port: int, transport: str = "ssm", **env) -> subprocess.CompletedProcess:
    argv, full = _gate_cmd(kind, state, tmp_path, port, transport, **env)
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=90)


def _calls(state: Path, prefix: str) -> list[str]:
    return [c for c in json.loads(state.read_text())["calls"] if c.startswith(prefix)]


# --- the gate on the host -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_the_gate_passes_a_proxy_host_that_serves(kind, tmp_path, listener):
    state = _host_state(tmp_path, kind, ["done"])
    r = _gate(kind, state, tmp_path, listener)
    assert r.returncode == 0, r.stderr
    assert f"proxy host {kind}-1 (i-p1) serves" in r.stderr
    assert len(_calls(state, "aws ssm send-command")) == 1
    checked = sorted(c.split()[2] for c in _calls(state, "systemctl is-active"))
    assert checked == sorted(UNITS[kind]), "exactly the proxy's units (nginx: and its upstream checker)"


def test_the_gate_waits_while_cloud_init_runs_then_passes(tmp_path, listener):
    state = _host_state(tmp_path, "nginx", ["running", "running", "running", "done"])
    r = _gate("nginx", state, tmp_path, listener)
    assert r.returncode == 0, r.stderr
    assert "waiting: cloud-init running" in r.stderr
    assert _calls(state, "cloud-init status") == ["cloud-init status -> running"] * 3 + ["cloud-init status -> done"]
    assert _calls(state, "systemctl")[0].startswith("systemctl is-active nginx.service"), "units only once cloud-init is done"


def test_the_gate_waits_for_the_port_to_accept(tmp_path):
    port = free_port()  # below the ephemeral range: no probe of the gate can connect to itself on it
    state = _host_state(tmp_path, "haproxy", ["done"])
    argv, env = _gate_cmd("haproxy", state, tmp_path, port)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def refused_once() -> bool:  # a second round of unit checks starts only after a refused probe
        try:
            return len(_calls(state, "systemctl is-active")) >= 2
        except (OSError, ValueError, KeyError):  # no call yet, or the fakes rewriting the state file
            return False

    until(lambda: proc.poll() is not None or refused_once(), 30)
    with socket.socket() as late:
        late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        late.bind(("127.0.0.1", port))
        late.listen(4)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"waiting: nothing accepts connections on 127.0.0.1:{port}" in err


def test_a_proxy_host_that_never_serves_fails_the_gate_in_bounded_time_naming_the_host(tmp_path, listener):
    state = _host_state(tmp_path, "nginx", ["done"], {"nginx.service": "failed", "mqtt-upstream-check.service": "active"})
    t0 = time.monotonic()
    r = _gate("nginx", state, tmp_path, listener, READY_WAIT="2")
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert elapsed < 20, elapsed
    assert "not ready after 2s: nginx.service is failed" in r.stderr
    assert "proxy host nginx-1 (i-p1) is not ready" in r.stderr
    assert "its Elastic IP stays on the old proxy host and the next proxy host is not replaced" in r.stderr


def test_a_failed_cloud_init_fails_the_gate_at_once_with_the_end_of_its_log(tmp_path, listener):
    state = _host_state(tmp_path, "haproxy", ["running", "error"])
    t0 = time.monotonic()
    r = _gate("haproxy", state, tmp_path, listener, READY_WAIT="60")
    assert r.returncode != 0
    assert time.monotonic() - t0 < 20, "no waiting for a host whose boot failed"
    assert "cloud-init failed (status: error)" in r.stderr
    assert "Failed to run module scripts-user" in r.stderr
    assert "proxy host haproxy-1 (i-p1) is not ready" in r.stderr


def test_the_gate_waits_for_a_new_host_to_register_with_systems_manager(tmp_path, listener):
    state = _host_state(tmp_path, "haproxy", ["done"], registering={"i-p1": 3})
    r = _gate("haproxy", state, tmp_path, listener)
    assert r.returncode == 0, r.stderr
    assert len(_calls(state, "aws ssm send-command")) == 4


def test_a_host_systems_manager_never_reaches_fails_the_gate_in_bounded_time(tmp_path, listener):
    state = _host_state(tmp_path, "haproxy", ["done"], unreachable=["i-p1"])
    t0 = time.monotonic()
    r = _gate("haproxy", state, tmp_path, listener, AGENT_WAIT="1")
    assert r.returncode != 0
    assert time.monotonic() - t0 < 20
    assert "proxy host haproxy-1 (i-p1) could not be reached through ssm within 1s" in r.stderr


def test_the_ssh_transport_retries_until_sshd_answers_then_runs_the_check(tmp_path, listener):
    state = _host_state(tmp_path, "nginx", ["running", "done"], refusing={"10.0.1.1": 2})
    r = _gate("nginx", state, tmp_path, listener, transport="ssh")
    assert r.returncode == 0, r.stderr
    ssh = _calls(state, "ssh ")
    assert [c.split()[1] for c in ssh] == ["ec2-user@10.0.1.1"] * 3, ssh
    assert not _calls(state, "aws "), "ssh only"


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
@pytest.mark.parametrize("transport", ["ssm", "ssh"])
def test_the_gate_and_the_readiness_check_pass_shellcheck(kind, transport, tmp_path):
    for name, text in (
        ("gate.sh", gate_script(stack="edge", host=f"{kind}-1", kind=kind, region="ap-southeast-1", transport=transport)),
        ("ready.sh", proxy_ready_script(kind)),
    ):
        (tmp_path / name).write_text(text)
        proc = subprocess.run(["shellcheck", str(tmp_path / name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# --- the order of a proxy-tier change, from the offline plan ------------------------------------
INSTANCE = "aws:ec2/instance:Instance"
EIP_ASSOC = "aws:ec2/eipAssociation:EipAssociation"
PROXY_STACKS = [("edge", "nginx"), ("vernemq", "haproxy")]


def _proxies(plan) -> list[tuple[object, object, object]]:
    """(instance, gate, EIP association) per proxy host, in host order."""
    hosts = sorted((r for r in plan.of_type(INSTANCE) if r.inputs["tags"].get("Role") == "proxy"), key=lambda r: r.name)
    assoc = {r.inputs["instanceId"]: r for r in plan.of_type(EIP_ASSOC)}
    return [(h, plan.named(f"{h.name}-ready"), assoc[h.id]) for h in hosts]


def replaced_one_at_a_time(rows, head) -> list[str]:
    """Replaced proxy hosts whose replacement is not finished before the next one starts: host i's
    replacement ends when its Elastic IP association, which waits for its gate, is done, and host
    i+1's instance must wait for that association (through the dependency graph)."""
    from tools import update_view

    before = update_view._ancestors(head)
    chain = {h.name: (h, gate, assoc) for h, gate, assoc in _proxies(head)}
    replaced = [r["name"] for r in rows if r["action"] == "replace" and r["name"] in chain]
    problems = []
    for a, b in zip(replaced, replaced[1:], strict=False):
        (_, gate, assoc), (nxt, _, _) = chain[a], chain[b]
        if gate.urn not in before[assoc.urn] or assoc.urn not in before[nxt.urn]:
            problems.append(f"{b} may start before {a} serves on its Elastic IP")
    return problems


def test_the_order_check_finds_proxies_replaced_together(tmp_path):
    """The check itself: the old shape (no gates, no chain) replaced both proxy hosts at once."""
    from tools import mockengine, update_view

    head = mockengine.plan_stack("edge", _proxy_variant(tmp_path, "edge"))
    for r in head.resources:
        r.dependencies = [d for d in r.dependencies if not d.endswith(("-eip-assoc", "-ready"))]
    rows = update_view.actions(mockengine.plan_stack("edge", None), head)
    assert replaced_one_at_a_time(rows, head) == ["lb-nginx-2 may start before lb-nginx-1 serves on its Elastic IP"]
    assert update_view.concurrent_disruptions(rows, head) == [("lb-nginx-1", "lb-nginx-2")]


def _proxy_variant(tmp_path: Path, stack: str, section: str = "load_balancer", **values) -> Path:
    import yaml

    from tools import mockengine

    doc = mockengine.read_stack_file(mockengine.stack_file(stack))
    key = f"mqtt-cluster:{section}"
    doc["config"][key] = {**doc["config"][key], **(values or {"proxy_instance_type": "c6i.xlarge"})}
    path = tmp_path / f"{stack}-{section}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("stack,kind", PROXY_STACKS)
def test_each_proxy_host_waits_for_the_previous_one_to_serve_on_its_elastic_ip(stack, kind):
    from tests.conftest import plan_of

    plan = plan_of(stack)
    chain = _proxies(plan)
    assert len(chain) == 2
    for i, (host, gate, assoc) in enumerate(chain):
        assert gate.inputs["create"] == "proxy-ready" and "update" not in gate.inputs
        assert gate.inputs["triggers"] == [host.id], "a replaced host gets a new gate run"
        assert gate.inputs["environment"]["INSTANCE_ID"] == host.id
        assert host.urn in gate.dependencies
        assert assoc.options["dependsOn"] == [gate.urn], "the EIP moves only to a host that serves"
        assert "deleteBeforeReplace" not in assoc.options and "allowReassociation" not in assoc.inputs
        previous = [chain[i - 1][2].urn] if i else []
        assert host.options.get("dependsOn", []) == previous
        assert host.inputs["associatePublicIpAddress"] is True, "it boots with an address of its own"
        packed = re.search(r"^NODE_SCRIPT_GZ=(\S*)", gate.inputs["interpreter"][2], re.M).group(1).strip("'")
        assert gzip.decompress(base64.b64decode(packed)).decode() == proxy_ready_script(kind)
    # a broker's rollout step drains it on every proxy host: only once they serve
    for step in (r for r in plan.of_type("command:local:Command") if r.name.startswith("ops-rollout-")):
        assert {gate.urn for _, gate, _ in chain} <= set(step.dependencies), step.name


@pytest.mark.parametrize("stack,kind", PROXY_STACKS)
@pytest.mark.parametrize(
    "change",
    [
        ("load_balancer", {"proxy_instance_type": "c6i.xlarge"}),  # maxconn in the proxy config
        ("brokers", {"count": 5}),  # the backend list
        ("brokers", {"keepalive": 90}),  # timeouts
    ],
    ids=["instance-type", "brokers-3-to-5", "keepalive"],
)
def test_a_proxy_tier_change_replaces_every_proxy_host_one_after_the_other(stack, kind, change, tmp_path):
    from tools import mockengine, update_view

    section, values = change
    base = mockengine.plan_stack(stack, None)
    head = mockengine.plan_stack(stack, _proxy_variant(tmp_path, stack, section, **values))
    rows = update_view.actions(base, head)
    acted = {r["name"]: r["action"] for r in rows}
    for i in (1, 2):
        host = f"lb-{kind}-{i}"
        assert [acted.get(n) for n in (host, f"{host}-ready", f"{host}-eip-assoc")] == ["replace"] * 3, rows
    assert [d["name"] for d in update_view.disruptions(rows, head) if d["group"] == "proxy"] == [f"lb-{kind}-1", f"lb-{kind}-2"]
    assert update_view.concurrent_disruptions(rows, head) == []
    assert replaced_one_at_a_time(rows, head) == []
    assert update_view.deleted_first(rows, base) == [], "create-before-delete: the EIP moves, it is never taken off first"


def test_broker_steps_carry_no_proxy_gate():
    """The gate's action is rendered only into the gates: a broker step whose script text changed
    would run its update (a rolling restart of every broker)."""
    from tests.conftest import plan_of

    for stack in ("edge", "vernemq", "dev"):
        for r in plan_of(stack).of_type("command:local:Command"):
            if r.name.startswith("ops-"):
                assert "proxy-ready" not in r.inputs["interpreter"][2], r.name
