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


def _script(engine: str, tmp_path: Path, index: int = 1, replicants: int = 0, seed_container: str | None = None) -> tuple[Path, str, str]:
    brokers = {"engine": engine, "count": 3, "replicants": replicants}
    raw: dict = {"brokers": brokers}
    if engine == "vernemq":
        brokers["accept_eula"] = True
    if replicants:  # replicants need the Enterprise edition and its license since EMQX 5.8
        brokers["image"], raw["license"] = "emqx/emqx-enterprise:5.8.6", True
    cfg = parse(raw, stack="dev", source="x", region="eu-central-1")
    nodes = node_specs(cfg)
    path = tmp_path / "node.sh"
    path.write_text(node_script(engine, nodes[index], seed(nodes), container="broker", seed_container=seed_container))
    return path, nodes[index].node_name, seed(nodes).node_name


def _run(script: Path, mode: str, state: dict, tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, dict, float]:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"containers": {"broker": state["self"], "seed": state["seed"]}, **state}))
    full_env = {
        **os.environ,
        "PATH": f"{FAKES}:{os.environ['PATH']}",
        "FAKE_STATE": str(state_file),
        "RETRY_EVERY": "0.1",
        "CLI_TIMEOUT": "5",
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


# --- real outputs and timing (emqx/emqx v5.8.6, vernemq/vernemq 2.1.1; see tests/fakes/docker) ---------


def _calls(st: dict, words: str) -> list[str]:
    return [c for c in st["calls"] if words in c]


@pytest.mark.parametrize(("engine", "hung"), [("emqx", "emqx ctl cluster join"), ("vernemq", "vmq-admin cluster join")])
def test_a_hung_cluster_join_cannot_hang_the_deploy(engine, hung, tmp_path):
    # `emqx ctl` never times out by itself (emqx/emqx v5.8.6 bin/emqx:1332 rpc_infinity): every call is bounded.
    script, me, seed_node = _script(engine, tmp_path)
    proc, st, elapsed = _run(script, "join", {"self": me, "seed": seed_node, "hang": {hung: 25}}, tmp_path, CLI_TIMEOUT="1", JOIN_WAIT="2")
    assert proc.returncode != 0
    assert "timed out after 1s" in proc.stderr
    assert f"not a member of the cluster of {seed_node} after 2s" in proc.stderr
    assert elapsed < 12


def test_the_cli_timeout_is_configurable_and_defaults_to_two_minutes(tmp_path):
    script, _, _ = _script("emqx", tmp_path)
    assert "CLI_TIMEOUT=${CLI_TIMEOUT:-120}" in script.read_text()


def test_vernemq_join_refused_for_a_node_with_history_fails_fast_with_a_remedy(tmp_path):
    # vernemq/vernemq 2.1.1 apps/vmq_swc/src/vmq_swc_peer_service.erl:54-65 prevent_nonempty_join
    script, me, seed_node = _script("vernemq", tmp_path)
    proc, st, elapsed = _run(script, "join", {"self": me, "seed": seed_node, "non_empty": True}, tmp_path, JOIN_WAIT="4")
    assert proc.returncode != 0
    assert "non_empty_node" in proc.stderr and "Remedy" in proc.stderr and "/vernemq/data" in proc.stderr
    assert len(_calls(st, " cluster join ")) == 1, "retrying cannot help"
    assert elapsed < 3


def test_vernemq_join_keeps_retrying_while_the_seed_is_unreachable(tmp_path):
    script, me, seed_node = _script("vernemq", tmp_path)
    proc, st, _ = _run(script, "join", {"self": me, "seed": seed_node, "seed_ready_after": 2}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(_calls(st, " cluster join ")) == 3
    assert f"RPC to node '{seed_node}' failed for reason: not_reachable" in proc.stderr


def test_vernemq_leave_reads_the_migration_lines_and_keeps_the_node_out(tmp_path):
    # "Migrated N/N queues and N/N messages" lines, then "Done", then init:stop (vmq_server_cli.erl:415), which
    # restart=always undoes: the script clears the restart policy and stops the container.
    script, me, seed_node = _script("vernemq", tmp_path)
    proc, st, _ = _run(script, "leave", {"self": me, "seed": seed_node, "members": [me, seed_node], "restart_after": 2}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "left the cluster (Migrated 3/3 queues and 3/3 messages)" in proc.stderr
    assert st["members"] == [seed_node]
    assert "update --restart=no broker" in st["calls"] and "stop broker" in st["calls"]
    assert st["restart_policy"] == "no" and me in st["down"]


@pytest.mark.parametrize("seed_container", ["seed", None])
def test_vernemq_leave_that_outlasts_the_rpc_timeout_is_polled_until_gone(seed_container, tmp_path):
    # nodetool gives up after 60 s (vernemq/vernemq 2.1.1 files/nodetool:20-23) while the migration goes on.
    script, me, seed_node = _script("vernemq", tmp_path, seed_container=seed_container)
    state = {"self": me, "seed": seed_node, "members": [me, seed_node], "leave_rpc_timeout": True, "leave_after_polls": 3}
    proc, st, _ = _run(script, "leave", state, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"RPC to '{me}' failed: timeout" in proc.stderr and "left the cluster" in proc.stderr
    assert st["members"] == [seed_node]
    if seed_container:
        assert _calls(st, "exec seed vmq-admin cluster show")


def test_vernemq_leave_that_never_completes_fails_within_its_bound(tmp_path):
    script, me, seed_node = _script("vernemq", tmp_path, seed_container="seed")
    state = {"self": me, "seed": seed_node, "members": [me, seed_node], "leave_rpc_timeout": True, "leave_after_polls": 10**6}
    proc, _, elapsed = _run(script, "leave", state, tmp_path, LEAVE_WAIT="2")
    assert proc.returncode != 0
    assert f"still a member after 2s; from a live member: vmq-admin cluster leave node={me} -k" in proc.stderr
    assert elapsed < 10


def test_emqx_leave_reads_the_verdict_after_the_discovery_notice_and_keeps_the_node_out(tmp_path):
    script, me, seed_node = _script("emqx", tmp_path)
    proc, st, _ = _run(script, "leave", {"self": me, "seed": seed_node, "members": [me, seed_node]}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "left the cluster" in proc.stderr
    # a restart would re-enable discovery and rejoin (emqx_mgmt_cli.erl:185-187)
    assert "update --restart=no broker" in st["calls"] and "stop broker" in st["calls"]


@pytest.mark.parametrize(
    ("engine", "removal"),
    [("emqx", "emqx ctl cluster force-leave {me}"), ("vernemq", "vmq-admin cluster leave node={me} -k")],
)
def test_a_stopped_node_is_removed_by_the_seed_when_reachable(engine, removal, tmp_path):
    script, me, seed_node = _script(engine, tmp_path, seed_container="seed")
    proc, st, _ = _run(script, "leave", {"self": me, "seed": seed_node, "members": [me, seed_node], "down": [me]}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"exec seed {removal.format(me=me)}" in st["calls"]
    assert st["members"] == [seed_node]
    assert f"removed from the cluster by {seed_node}" in proc.stderr


@pytest.mark.parametrize(
    ("engine", "removal"),
    [("emqx", "emqx ctl cluster force-leave {me}"), ("vernemq", "vmq-admin cluster leave node={me} -k")],
)
def test_a_stopped_node_without_a_reachable_seed_names_the_engines_removal_command(engine, removal, tmp_path):
    script, me, seed_node = _script(engine, tmp_path)
    proc, st, _ = _run(script, "leave", {"self": me, "seed": seed_node, "members": [me, seed_node], "down": [me]}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"remove it from a live member: {removal.format(me=me)}" in proc.stderr
    assert not _calls(st, "exec seed")


def test_a_leave_never_touches_a_replacement_container_that_took_the_name(tmp_path):
    # local stack: a recreated container joins as a new command; the old command's delete runs afterwards.
    script, me, seed_node = _script("emqx", tmp_path, seed_container="seed")
    state = {"self": me, "seed": seed_node, "members": [me, seed_node], "container_ids": {"broker": "new"}}
    proc, st, _ = _run(script, "leave", state, tmp_path, BROKER_ID="old")
    assert proc.returncode == 0, proc.stderr
    assert "was replaced since it joined" in proc.stderr
    assert sorted(st["members"]) == sorted([me, seed_node]) and "stop broker" not in st["calls"]
    proc, st, _ = _run(script, "leave", {**state, "container_ids": {"broker": "old"}}, tmp_path, BROKER_ID="old")
    assert proc.returncode == 0 and st["members"] == [seed_node], proc.stderr


def test_vernemq_leave_refused_for_an_inconsistent_cluster_fails_at_once_and_keeps_the_node(tmp_path):
    # vernemq/vernemq 2.1.1 apps/vmq_server/src/vmq_server_cli.erl:431: nothing happened, waiting cannot help
    script, me, seed_node = _script("vernemq", tmp_path, seed_container="seed")
    state = {"self": me, "seed": seed_node, "members": [me, seed_node], "leave_refused": True}
    proc, st, elapsed = _run(script, "leave", state, tmp_path, LEAVE_WAIT="5")
    assert proc.returncode != 0
    assert "leave refused: Can't migrate queues because cluster is inconsistent, retry!" in proc.stderr
    assert sorted(st["members"]) == sorted([me, seed_node]) and "stop broker" not in st["calls"]
    assert elapsed < 3
