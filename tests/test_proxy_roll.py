"""Proxy hosts are replaced one at a time, and an Elastic IP moves only to a proxy that serves.

The gate (rollout.sh.j2's proxy-ready action with templates/proxy-ready.sh.j2 as its host script)
runs for real against the fake `aws` (Systems Manager) and `ssh`, with a fake `cloud-init` and
`systemctl` on the fake proxy host and a real listener on 127.0.0.1 as its port 8883; the order of
a proxy-tier change is read from the offline plan's dependency graph.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components.rollout import gate_script, proxy_ready_script

FAKES = Path(__file__).parent / "fakes"
UNITS = {"nginx": ["nginx.service", "mqtt-upstream-check.service"], "haproxy": ["haproxy.service"]}


@pytest.fixture
def listener():
    """A socket accepting on 127.0.0.1: the proxy's 8883 on the fake host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
    state = _host_state(tmp_path, "haproxy", ["done"])
    argv, env = _gate_cmd("haproxy", state, tmp_path, port)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
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
