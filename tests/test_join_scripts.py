"""The rendered join/leave script, run for real against a fake broker CLI (documented outputs)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from components.config import parse
from components.renderers.nodes import node_specs, seed
from components.renderers.scripts import node_script

FAKES = Path(__file__).parent / "fakes"


def _script(engine: str, tmp_path: Path, index: int = 1, replicants: int = 0) -> tuple[Path, str, str]:
    brokers = {"engine": engine, "count": 3, "replicants": replicants}
    raw: dict = {"brokers": brokers}
    if engine == "vernemq":
        brokers["accept_eula"] = True
    if replicants:  # replicants need the Enterprise edition and its license since EMQX 5.8
        brokers["image"], raw["license"] = "emqx/emqx-enterprise:5.8.6", True
    cfg = parse(raw, stack="dev", source="x", region="eu-central-1")
    nodes = node_specs(cfg)
    path = tmp_path / "node.sh"
    path.write_text(node_script(engine, nodes[index], seed(nodes), container="broker"))
    return path, nodes[index].node_name, seed(nodes).node_name


def _run(script: Path, mode: str, state: dict, tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, dict, float]:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    full_env = {
        **os.environ,
        "PATH": f"{FAKES}:{os.environ['PATH']}",
        "FAKE_STATE": str(state_file),
        "RETRY_EVERY": "0.1",
        "LOCAL_WAIT": "5",
        "JOIN_WAIT": "5",
        **env,
    }
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(script), mode], env=full_env, capture_output=True, text=True, timeout=30)
    return proc, json.loads(state_file.read_text()), time.monotonic() - t0


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_join_succeeds_after_the_seed_comes_up_late(engine, tmp_path):
    script, me, seed_node = _script(engine, tmp_path)
    proc, st, _ = _run(script, "join", {"self": me, "seed": seed_node, "local_ready_after": 2, "seed_ready_after": 3}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    joins = [c for c in st["calls"] if " cluster join " in c]
    assert len(joins) == 4, joins  # three refusals, then success
    assert sorted(st["members"]) == sorted([me, seed_node])
    assert "member of the cluster" in proc.stderr


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_already_a_member_is_a_no_op_success(engine, tmp_path):
    script, me, seed_node = _script(engine, tmp_path)
    proc, st, _ = _run(script, "join", {"self": me, "seed": seed_node, "members": [me, seed_node]}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in st["calls"] if " cluster join " in c], "a member must not join again"


def test_emqx_already_in_cluster_answer_counts_as_success(tmp_path):
    script, me, seed_node = _script("emqx", tmp_path)
    proc, st, _ = _run(script, "join", {"self": me, "seed": seed_node, "already": True}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "already in the cluster" in proc.stderr


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_seed_never_up_fails_clearly_within_the_bound(engine, tmp_path):
    script, me, seed_node = _script(engine, tmp_path)
    proc, st, elapsed = _run(script, "join", {"self": me, "seed": seed_node, "seed_ready_after": -1}, tmp_path, JOIN_WAIT="2")
    assert proc.returncode != 0
    assert f"not a member of the cluster of {seed_node} after 2s" in proc.stderr
    assert ("node_down" in proc.stderr) or ("not_reachable" in proc.stderr), "the last answer is shown"
    assert elapsed < 10


def test_local_broker_never_up_fails_within_its_bound(tmp_path):
    script, me, seed_node = _script("emqx", tmp_path)
    proc, _, elapsed = _run(script, "join", {"self": me, "seed": seed_node, "local_ready_after": 10**6}, tmp_path, LOCAL_WAIT="1")
    assert proc.returncode != 0
    assert "did not answer within 1s" in proc.stderr
    assert elapsed < 8


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_leave_removes_the_node(engine, tmp_path):
    script, me, seed_node = _script(engine, tmp_path)
    proc, st, _ = _run(script, "leave", {"self": me, "seed": seed_node, "members": [me, seed_node]}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "left the cluster" in proc.stderr
    assert [c for c in st["calls"] if " cluster leave" in c]


def test_leave_when_not_clustered_is_fine(tmp_path):
    script, me, seed_node = _script("emqx", tmp_path)
    proc, _, _ = _run(script, "leave", {"self": me, "seed": seed_node, "members": [me]}, tmp_path)
    assert proc.returncode == 0 and "nothing to leave" in proc.stderr


def test_emqx_replicant_never_calls_manual_join(tmp_path):
    script, me, seed_node = _script("emqx", tmp_path, index=3, replicants=1)
    proc, st, _ = _run(script, "join", {"self": me, "seed": seed_node, "members": [seed_node]}, tmp_path, JOIN_WAIT="1")
    assert proc.returncode != 0  # discovery never attached it in this fake: the bound still holds
    assert not [c for c in st["calls"] if " cluster join " in c]


def test_scripts_never_echo_secrets(tmp_path):
    script, _, _ = _script("emqx", tmp_path)
    text = script.read_text()
    assert "COOKIE" not in text and "PASSWORD" not in text


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_rendered_scripts_pass_shellcheck(engine, tmp_path):
    script, _, _ = _script(engine, tmp_path)
    proc = subprocess.run(["shellcheck", "-S", "style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
