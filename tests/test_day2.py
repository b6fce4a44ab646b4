"""Day-2 changes: the rollout/leave step script run for real against fake hosts (fake `docker` as
the brokers, fake `aws` as Systems Manager and the NLB), and the update view of the offline plan."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from components.config import parse
from components.renderers.nodes import node_specs, seed
from components.renderers.scripts import node_script
from components.rollout import step_script

FAKES = Path(__file__).parent / "fakes"
TG = "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/mqtt/0123"


def _cluster(engine: str):
    brokers = {"engine": engine, "count": 3}
    if engine == "vernemq":
        brokers["accept_eula"] = True
    cfg = parse({"brokers": brokers}, stack="dev", source="x", region="eu-central-1")
    nodes = node_specs(cfg)
    return nodes, seed(nodes)


def _state(tmp_path: Path, nodes, **extra) -> Path:
    names = [n.node_name for n in nodes]
    st = {
        "self": names[0],
        "seed": names[0],
        "members": names,
        "containers": {f"c{i + 1}": n for i, n in enumerate(names)},
        "instances": {f"i-{i + 1}": f"c{i + 1}" for i in range(len(names))},
        **extra,
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(st))
    return path


def _step(
    engine: str, index: int, mode: str, state: Path, tmp_path: Path, transport: str = "ssm", host_script: str | None = None, **env
) -> subprocess.Popen:
    """The rollout step of node `index`, run as Pulumi runs it; `host_script` replaces the node script."""
    nodes, first = _cluster(engine)
    node = nodes[index]
    script = step_script(
        stack="dev",
        node=node,
        node_script=host_script or node_script(engine, node, first, container="broker"),
        region="eu-central-1",
        transport=transport,
        drain_wait=5,
    )
    full = {
        **os.environ,
        "PATH": f"{FAKES / 'day2'}:{FAKES}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "INSTANCE_ID": f"i-{index + 1}",
        "ADDRESS": f"10.0.0.{index + 1}",
        "TARGET_GROUPS": f"{TG}|1883",
        "ELB_NAME": "",
        "CONFIG_HASH": "h2",
        "PEERS": "i-1,10.0.0.1",
        "LOCK_DIR": str(tmp_path / "lock"),
        "POLL": "0.05",
        "HEALTH_WAIT": "3",
        "AGENT_WAIT": "1",
        "LEAVE_REACH_WAIT": "1",
        "STEP_WAIT": "20",
        "LB_WAIT": "5",
        **env,
    }
    return subprocess.Popen(
        ["bash", "-c", script, f"step-{node.host}", mode], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _events(state: Path) -> list[str]:
    """The calls that disrupt or restore a broker, in order: drain/restart/undrain/healthy."""
    out = []
    for c in json.loads(state.read_text())["calls"]:
        if c.startswith("aws elbv2 deregister-targets"):
            out.append("drain " + c.split("Id=")[1].split(",")[0])
        elif c.startswith("restart "):
            out.append("restart " + c.split()[-1])
        elif c.startswith("aws elbv2 register-targets"):
            out.append("undrain " + c.split("Id=")[1].split(",")[0])
        elif c.startswith("aws elbv2 describe-target-health") and c.endswith("-> healthy"):
            ev = "healthy " + c.split("Id=")[1].split(",")[0]
            if not out or out[-1] != ev:
                out.append(ev)
    return out


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_rollout_steps_started_together_run_one_node_at_a_time_drain_restart_healthy_next(engine, tmp_path):
    nodes, _ = _cluster(engine)
    state = _state(tmp_path, nodes)
    procs = [_step(engine, i, "apply", state, tmp_path) for i in range(3)]  # as Pulumi runs them: in parallel
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    events = _events(state)
    assert len(events) == 12, events
    order = [events[i].split()[1] for i in range(0, 12, 4)]
    assert sorted(order) == ["i-1", "i-2", "i-3"]
    for k, iid in enumerate(order):
        c = "c" + iid.split("-")[1]
        # drain -> restart -> undrain -> healthy, and only then the next node
        assert events[4 * k : 4 * k + 4] == [f"drain {iid}", f"restart {c}", f"undrain {iid}", f"healthy {iid}"], events


def test_a_failed_gate_stops_the_rollout_and_leaves_the_remaining_nodes_untouched(tmp_path):
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, restart_breaks=[nodes[1].node_name])
    first = _step("emqx", 0, "apply", state, tmp_path)
    assert first.wait(60) == 0
    second = _step("emqx", 1, "apply", state, tmp_path)
    _, err = second.communicate(timeout=60)
    assert second.returncode != 0
    assert "rollout stopped at emqx@emqx-2.dev.mqtt.internal" in err
    assert "health gate failed" in err
    third = _step("emqx", 2, "apply", state, tmp_path)
    _, err = third.communicate(timeout=60)
    assert third.returncode != 0
    assert "rollout stopped before emqx@emqx-3.dev.mqtt.internal: the cluster is not healthy" in err
    assert "stopped nodes in the cluster: emqx@emqx-2.dev.mqtt.internal" in err
    events = _events(state)
    assert "restart c3" not in events and "drain i-3" not in events, events
    assert "undrain i-2" not in events, "a broken node stays out of the load balancer"


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_a_leave_of_an_unreachable_host_finishes_in_bounded_time_through_a_live_member(engine, tmp_path):
    nodes, _ = _cluster(engine)
    state = _state(tmp_path, nodes, unreachable=["i-3"], down=[nodes[2].node_name])
    t0 = time.monotonic()
    p = _step(engine, 2, "leave", state, tmp_path)
    _, err = p.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, err
    assert elapsed < 15, elapsed
    assert "removing" in err and "through i-1" in err
    st = json.loads(state.read_text())
    assert nodes[2].node_name not in st["members"]
    removal = [c for c in st["calls"] if c.startswith("exec c1 ")]
    expected = "force-leave" if engine == "emqx" else "cluster leave node="
    assert any(expected in c for c in removal), removal
    assert any(c.startswith("aws elbv2 deregister-targets") and "Id=i-3" in c for c in st["calls"]), "drained first"


def test_the_step_and_node_scripts_pass_shellcheck(tmp_path):
    nodes, first = _cluster("vernemq")
    for transport in ("ssm", "ssh"):
        text = step_script(
            stack="vernemq",
            node=nodes[1],
            node_script=node_script("vernemq", nodes[1], first, container="broker"),
            region="eu-central-1",
            transport=transport,
            drain_wait=30,
        )
        path = tmp_path / f"step-{transport}.sh"
        path.write_text(text)
        proc = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# --- the AWS CLI as it really answers (tests/fakes/day2/aws replays the service, agent and CLI) -----
def _with(state: Path, **extra) -> Path:
    st = json.loads(state.read_text())
    st.update(extra)
    state.write_text(json.dumps(st))
    return state


def _calls(state: Path) -> list[str]:
    return json.loads(state.read_text())["calls"]


def test_an_unreachable_host_is_logged_with_the_error_systems_manager_gave(tmp_path):
    # aws-cli writes a blank line before the error (awscli/errorformat.py:37-41): the reason is on
    # the second line of stderr.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, unreachable=["i-3"], down=[nodes[2].node_name])
    p = _step("emqx", 2, "leave", state, tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    line = next(x for x in err.splitlines() if "i-3 unreachable through SSM" in x)
    assert "(InvalidInstanceId) when calling the SendCommand operation" in line, err


def test_a_refused_send_command_fails_at_once_and_a_leave_does_not_fall_back_to_a_peer(tmp_path):
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, denied=["ssm send-command"])
    t0 = time.monotonic()
    p = _step("emqx", 2, "leave", state, tmp_path, AGENT_WAIT="60", LEAVE_REACH_WAIT="60")
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 15, "an AccessDenied is not waited out like an unregistered agent"
    assert "AccessDeniedException" in err, err
    assert "removing" not in err and not any("remove" in c for c in _calls(state) if c.startswith("aws ssm send-command"))
    assert nodes[2].node_name in json.loads(state.read_text())["members"]


def test_a_status_that_cannot_be_read_fails_the_step_at_once_not_after_the_step_wait(tmp_path):
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, denied=["ssm get-command-invocation"])
    t0 = time.monotonic()
    p = _step("emqx", 2, "leave", state, tmp_path, STEP_WAIT="60")
    _, err = p.communicate(timeout=180)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 15
    assert "AccessDeniedException" in err, err
    assert "removing" not in err, "the command reached the host: it is not unreachable"


def test_polling_rides_out_a_late_invocation_and_a_throttled_poll(tmp_path):
    # GetCommandInvocation right after SendCommand may answer InvocationDoesNotExist (ssm
    # waiters-2.json CommandExecuted retries on it); a throttled poll is retried too.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, invocation_lag=3, progress_polls=2, flaky={"ssm get-command-invocation": 1})
    p = _step("emqx", 1, "join", state, tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert sum(c.startswith("aws ssm get-command-invocation") for c in _calls(state)) >= 7


def test_a_command_that_times_out_on_the_host_is_a_failure_there_not_an_unreachable_host(tmp_path):
    # The agent kills the command at executionTimeout and reports TimedOut, exit 137
    # (amazon-ssm-agent 3.3.1142.0 agent/executers/executers.go:324-336, pluginutil_unix.go:34-51);
    # the leave ran: no live member may force the node out while it is half-way.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, hang={"emqx ctl cluster leave": 30})
    p = _step("emqx", 2, "leave", state, tmp_path, STEP_WAIT="5", HOST_CLI_TIMEOUT="60")
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0, err
    assert "TimedOut" in err and "removing" not in err, err
    assert not any(c.startswith("exec c1 ") and "force-leave" in c for c in _calls(state))


def test_a_command_that_never_ran_counts_as_an_unreachable_host(tmp_path):
    # Delivery timed out: Status TimedOut, ResponseCode -1, no ExecutionStartDateTime (ssm
    # service-2.json GetCommandInvocationResult): the leave falls back to a live member.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, undeliverable=["i-3"], down=[nodes[2].node_name])
    p = _step("emqx", 2, "leave", state, tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "never ran" in err and "removed through i-1" in err, err


def test_the_reason_at_the_end_of_a_long_host_log_reaches_the_deploying_machine(tmp_path):
    # StandardErrorContent keeps only the first 8000 characters (ssm service-2.json :16814-16816;
    # amazon-ssm-agent pluginutil.go:43-57 keeps the prefix): the node script's verdict comes last.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes)
    host = "#!/usr/bin/env bash\necho 'first line of the host log' >&2\nfor i in $(seq 1 300); do echo \"waiting for the seed, round $i of 300\" >&2; done\necho 'ERROR: the final reason' >&2\nexit 1\n"
    p = _step("emqx", 1, "users", state, tmp_path, host_script=host)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert "ERROR: the final reason" in err, err[-2000:]
    assert "first line of the host log" in err and "bytes of output cut" in err


def test_a_host_script_exiting_194_fails_the_step_and_never_reboots_the_host(tmp_path):
    # Exit 194 tells the agent to reboot the host and reports success (amazon-ssm-agent
    # agent/appconfig/constants_unix.go:85, pluginutil_unix.go:38-39).
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes)
    p = _step("emqx", 1, "join", state, tmp_path, host_script="#!/usr/bin/env bash\nexit 194\n")
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0, err
    assert not any(c.startswith("reboot ") for c in _calls(state)), _calls(state)


def test_a_deploying_user_with_cli_auto_prompt_on_still_gets_an_unattended_step(tmp_path):
    # `cli_auto_prompt = on` in ~/.aws/config (or AWS_CLI_AUTO_PROMPT) makes every aws call prompt.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes)
    p = _step("emqx", 1, "join", state, tmp_path, AWS_CLI_AUTO_PROMPT="on")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err


def test_the_execution_timeout_covers_the_longest_node_script_and_the_document_accepts_it():
    from components.renderers.scripts import node_script_bound
    from components.rollout import DELIVERY_WAIT, STEP_WAIT

    # AWS-RunShellScript: executionTimeout pattern, maximum 172800 (aws-cli 2.36.7
    # awscli/examples/ssm/get-document.rst:14); the agent runs a value outside [5, 172800] for the
    # default 3600 instead (amazon-ssm-agent pluginutil.go:37-39, :154-157).
    pattern = r"([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)"
    assert re.fullmatch(pattern, str(STEP_WAIT)) and 5 <= STEP_WAIT <= 172800
    assert STEP_WAIT >= node_script_bound()
    # SendCommand TimeoutSeconds: 30..2592000 (ssm service-2.json :17550-17554)
    assert 30 <= DELIVERY_WAIT <= 2592000


# --- the load balancer as it really answers -----------------------------------------------------------
def _restart_after_deregistered(state: Path, iid: str = "i-2", container: str = "c2") -> tuple[bool, list[str]]:
    """Did the restart come only after the load balancer reported the node deregistered?"""
    calls = _calls(state)
    restart = calls.index(f"restart {container}")
    seen = [
        c for c in calls[:restart] if c.startswith(("aws elbv2 describe-target-health", "aws elb describe-instance-health")) and iid in c
    ]
    return bool(seen) and seen[-1].endswith(("-> unused", "-> OutOfService")), calls


def test_a_drain_lasting_the_whole_deregistration_delay_is_waited_for(tmp_path):
    # An NLB target stays draining until the deregistration delay has expired
    # (elbv2 service-2.json TargetHealth.Reason, Target.DeregistrationInProgress) and a little more.
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, deregistration_delay=1.0, deregistration_lag=0.6)
    p = _step("emqx", 1, "apply", state, tmp_path, DRAIN_WAIT="1")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    ok, calls = _restart_after_deregistered(state)
    assert ok, calls


@pytest.mark.parametrize(
    "quirk",
    [
        {"stale_polls": 2},  # the describe right after the deregistration still shows "healthy"
        {"drain_state": "unhealthy.draining"},  # elbv2 TargetHealthStateEnum (service-2.json :4681-4692)
        {"flaky": {"elbv2 describe-target-health": 2}},  # a throttled describe is no answer
    ],
    ids=["stale", "unhealthy.draining", "throttled"],
)
def test_the_restart_waits_until_the_target_group_reports_the_target_unused(tmp_path, quirk):
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, deregistration_delay=0.5, **quirk)
    p = _step("emqx", 1, "apply", state, tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    ok, calls = _restart_after_deregistered(state)
    assert ok, calls


def test_a_classic_elb_rollout_restarts_after_deregistration_and_waits_for_in_service(tmp_path):
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, deregistration_delay=1.0, deregistration_lag=0.5, registration_polls=2)
    p = _step("emqx", 1, "apply", state, tmp_path, TARGET_GROUPS="", ELB_NAME="mqtt-dev", DRAIN_WAIT="1")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    ok, calls = _restart_after_deregistered(state)
    assert ok, calls
    after = calls[calls.index("restart c2") :]
    register = next(i for i, c in enumerate(after) if c.startswith("aws elb register-instances-with-load-balancer"))
    health = [c for c in after[register:] if c.startswith("aws elb describe-instance-health")]
    assert health[-1].endswith("-> InService") and any(c.endswith("-> OutOfService") for c in health), calls


@pytest.mark.parametrize("front", ["nlb", "elb"])
def test_a_leave_of_a_terminated_instance_is_not_held_up_by_the_load_balancer(tmp_path, front):
    # A target that is no instance any more: InvalidTarget / InvalidInstance, which botocore's own
    # waiters take as deregistered (elbv2 waiters-2.json TargetDeregistered, elb InstanceDeregistered).
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes, unreachable=["i-3"], terminated=["i-3"], down=[nodes[2].node_name])
    env = {"TARGET_GROUPS": "", "ELB_NAME": "mqtt-dev"} if front == "elb" else {}
    p = _step("emqx", 2, "leave", state, tmp_path, **env)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "removed through i-1" in err


def test_the_readme_lists_every_aws_action_the_day2_steps_call():
    # IAM actions are the service's prefix and the API operation: ssm, elasticloadbalancing
    # (botocore 1.43.67 service-2.json metadata endpointPrefix of ssm, elbv2, elb).
    root = Path(__file__).parent.parent
    steps = (root / "components/templates/rollout.sh.j2").read_text()
    calls = set(re.findall(r"\bawsq? (ssm|elbv2|elb) ([a-z-]+)", steps))
    assert {("ssm", "send-command"), ("elbv2", "describe-target-health"), ("elb", "describe-instance-health")} <= calls
    readme = (root / "README.md").read_text()
    section = readme.split("**What the deploying machine may do**", 1)[1].split("\n\n**", 1)[0]
    for service, op in sorted(calls):
        action = "".join(w.capitalize() for w in op.split("-"))
        prefix = "ssm" if service == "ssm" else "elasticloadbalancing"
        assert any(f"{q}{prefix}:{action}{q}" in section for q in '`"') or f"`{action}`" in section, (service, op)
        assert f"`{prefix}:" in section


# --- the update view: what `pulumi up` does to a running stack ---------------------------------
HOST_TYPES = {"aws:ec2/instance:Instance", "aws:ebs/volume:Volume", "aws:ec2/volumeAttachment:VolumeAttachment"}


def _stack_variant(tmp_path: Path, name: str, stack: str = "dev", **brokers) -> Path:
    import yaml

    from tools import mockengine

    doc = mockengine.read_stack_file(mockengine.stack_file(stack))
    doc["config"]["mqtt-cluster:brokers"] = {**doc["config"]["mqtt-cluster:brokers"], **brokers}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _view(stack: str, base: Path | None, head: Path):
    from tools import mockengine, update_view

    return update_view.actions(mockengine.plan_stack(stack, base), mockengine.plan_stack(stack, head))


@pytest.mark.parametrize("stack,version", [("dev", "5.8.7"), ("vernemq", "2.1.2")])
def test_a_version_bump_replaces_no_host_and_rolls_every_node(tmp_path, stack, version):
    rows = _view(stack, None, _stack_variant(tmp_path, "bump", stack, version=version))
    assert not [r for r in rows if r["type"] in HOST_TYPES], rows
    assert all(r["action"] == "update" for r in rows), rows
    assert sorted(r["name"] for r in rows if r["name"].startswith("ops-rollout-")) == [
        f"ops-rollout-{stack.replace('dev', 'emqx')}-{i}" for i in (1, 2, 3)
    ]


def test_scaling_out_three_to_five_touches_no_existing_node(tmp_path):
    rows = _view("dev", None, _stack_variant(tmp_path, "five", count=5))
    # Only the existing nodes' start parameters change (their static seed list, read at a node's
    # first start): no host, no join, no rollout step, no restart. Monitoring follows the node list.
    others = [r for r in rows if r["action"] != "create" and not r["type"].startswith("aws:cloudwatch/")]
    assert sorted((r["action"], r["name"], tuple(r["inputs"])) for r in others) == [
        ("update", f"brokers-emqx-{i}-start", ("insecureValue",)) for i in (1, 2, 3)
    ], others
    assert sorted(r["name"] for r in rows if r["type"] == "aws:ec2/instance:Instance") == ["brokers-emqx-4", "brokers-emqx-5"]


def test_scaling_in_five_to_three_deletes_only_the_removed_nodes_each_after_its_leave(tmp_path):
    from tools import update_view

    rows = _view("dev", _stack_variant(tmp_path, "five", count=5), None)
    hosts = [r for r in rows if r["type"] in HOST_TYPES]
    assert all(r["action"] == "delete" for r in hosts), hosts
    assert sorted(r["name"] for r in hosts if r["type"] == "aws:ec2/instance:Instance") == ["brokers-emqx-4", "brokers-emqx-5"]
    leaves = [r for r in rows if r["name"].startswith("ops-member-") and r["action"] == "delete"]
    assert sorted(r["name"] for r in leaves) == ["ops-member-emqx-4", "ops-member-emqx-5"]
    # each leave depends on its host and attachment, so Pulumi deletes (runs) it before them
    assert update_view.delete_order_ok(rows) == []
    for leave in leaves:
        host = leave["name"].removeprefix("ops-member-")
        assert any(d.endswith(f"::brokers-{host}-data-attach") for d in leave["dependencies"])


def test_ssh_transport_without_a_bastion_is_refused_naming_the_key():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse(
            {"access": {"transport": "ssh", "bastion": False}}, stack="staging", source="stacks/Pulumi.staging.yaml", region="eu-central-1"
        )
    assert "mqtt-cluster:access.transport" in str(exc.value) and "bastion" in str(exc.value)


@pytest.mark.parametrize("stack", ["dev", "staging", "vernemq", "edge", "prod-eu-central-1"])
def test_user_data_is_identity_and_bootstrap_and_the_start_parameter_carries_the_rest(stack):
    import base64
    import gzip

    from tests.conftest import plan_of

    plan = plan_of(stack)
    params = {r.inputs["name"]: r.inputs for r in plan.of_type("aws:ssm/parameter:Parameter") if "/nodes/" in r.inputs["name"]}
    hosts = [r for r in plan.of_type("aws:ec2/instance:Instance") if "Node" in r.inputs["tags"]]
    assert len(params) == len(hosts) > 0
    for h in hosts:
        host = h.inputs["tags"]["Name"].split(".")[0]
        p = params[f"/mqtt-cluster/{stack}/nodes/{host}/start"]
        assert p["type"] == "String" and p["tier"] == "Intelligent-Tiering"
        assert len(p["insecureValue"]) <= 8192, "the advanced tier's limit"
        start = gzip.decompress(base64.b64decode(p["insecureValue"])).decode()
        assert start == plan.files[(host, "mqtt-broker-start")]
        from components.renderers import cloud_init

        user_data = cloud_init.unpacked(h.inputs["userDataBase64"])
        image = re.search(r"^  '([^']+)'", start, flags=re.M).group(1)
        for moving in (image, "emqx.conf", "broker.env", "seeds", "DISCOVERY_NODE", "docker run"):
            assert moving not in user_data, moving
        assert f"NAME='/mqtt-cluster/{stack}/nodes/{host}/start'" in user_data


LOCAL_VARIANTS = {
    "emqx": ({}, {"version": "5.8.7"}),
    "vernemq": ({"engine": "vernemq", "accept_eula": True}, {"version": "2.1.2"}),
}


@pytest.mark.parametrize("engine", sorted(LOCAL_VARIANTS))
def test_local_version_bump_restarts_one_container_at_a_time_on_its_data_volume(tmp_path, engine, capsys):
    """Docker cannot change a container's image: each broker container is replaced (deleted first),
    in a chain gate-1 → node-1 healthy → gate-2 → node-2 …, and no join runs its leave."""
    from tools import mockengine, update_view

    common, bump = LOCAL_VARIANTS[engine]
    base_path = _stack_variant(tmp_path, "base", "local", **common)
    head_path = _stack_variant(tmp_path, "head", "local", **common, **bump)
    base, head = mockengine.plan_stack("local", base_path), mockengine.plan_stack("local", head_path)
    rows = update_view.actions(base, head)
    acted = {r["name"]: r["action"] for r in rows}
    brokers = [f"local-{engine}-{i}" for i in (1, 2, 3)]
    assert [acted.get(b) for b in brokers] == ["replace"] * 3, "a new image is a new container"
    assert not [r for r in rows if r["type"] == "docker:index/volume:Volume"], "the data volumes stay"
    assert "local-proxy" not in acted and "local-prometheus" not in acted, "an ordering edge alone changes nothing"
    # Joins re-check membership (an update); none is replaced, so no leave runs for a restart.
    assert {n: a for n, a in acted.items() if "-join-" in n} == {f"local-join-{engine}-2": "update", f"local-join-{engine}-3": "update"}
    assert update_view.deleted_first(rows, base) == []
    # Every gate runs (its update is the health gate), and no two brokers are out at once.
    assert [acted.get(f"local-gate-{engine}-{i}") for i in (1, 2, 3)] == ["update"] * 3
    assert [d["name"] for d in update_view.disruptions(rows, head)] == brokers
    assert update_view.concurrent_disruptions(rows, head) == []
    assert update_view.main(["local", "--base-config", str(base_path), "--head-config", str(head_path)]) == 0
    assert f"out of service while it runs, one after another: {', '.join(brokers)}" in capsys.readouterr().out
    # The chain itself: node i waits for its gate and node i-1; gate i waits for node i-1.
    by = {r.name: r for r in head.resources}
    for i, b in enumerate(brokers):
        c, gate = by[b], by[f"local-gate-{engine}-{i + 1}"]
        explicit = {u.split("::")[-1] for u in c.options["dependsOn"]}
        assert explicit == {gate.name, *([brokers[i - 1]] if i else [])}
        assert {u.split("::")[-1] for u in gate.options.get("dependsOn", [])} == ({brokers[i - 1]} if i else set())
        assert c.inputs["wait"] is True and c.inputs["waitTimeout"] >= 60, "created only once healthy"
        assert (
            gate.inputs["update"] == "bash -s -- health"
            and gate.inputs["stdin"] == head.files[(b.split("-", 1)[1], "mqtt-cluster-node.sh")]
        )


def test_the_update_view_finds_what_the_engine_would_delete_first_and_what_goes_down_together(tmp_path, monkeypatch, capsys):
    """The checks themselves, on a synthetic old shape (joins replaced with their container, no
    chain): what the previous local stack did on a version bump."""
    from tools import mockengine, update_view

    base = mockengine.plan_stack("local", None)
    head = mockengine.plan_stack("local", _stack_variant(tmp_path, "head", "local", version="5.8.7"))
    by = {r.name: r for r in base.resources}
    for name in ("local-join-emqx-2", "local-join-emqx-3"):  # triggers on the container id
        own = by[name.replace("join-", "")]
        by[name].property_dependencies["triggers"] = [own.urn]
    for r in head.resources:  # no chain, no gates
        if r.name.startswith("local-emqx-"):
            r.dependencies = [d for d in r.dependencies if "emqx-" not in d.split("::")[-1] and "-gate-" not in d]
    rows = update_view.actions(base, head)
    assert [(d["name"], d["before"]) for d in update_view.deleted_first(rows, base)] == [
        ("local-join-emqx-2", "local-emqx-2"),
        ("local-join-emqx-3", "local-emqx-3"),
    ]
    assert update_view.concurrent_disruptions(rows, head) == [
        ("local-emqx-1", "local-emqx-2"),
        ("local-emqx-1", "local-emqx-3"),
        ("local-emqx-2", "local-emqx-3"),
    ]

    # The command line says so and exits 3.
    plans = iter([base, head])
    monkeypatch.setattr(mockengine, "plan_stack", lambda stack, path: next(plans))
    assert update_view.main(["local", "--head-config", "x.yaml"]) == 3
    out = capsys.readouterr().out
    assert "!! local-join-emqx-2 is deleted before local-emqx-2 is replaced (reads environment, triggers)" in out
    assert "!! local-emqx-1 and local-emqx-2 could be out of service at the same time" in out


def test_retain_data_on_scale_in_forgets_the_removed_volumes_instead_of_deleting_them(tmp_path):
    base = _stack_variant(tmp_path, "five", count=5, retain_data_on_scale_in=True)
    head = _stack_variant(tmp_path, "three", count=3, retain_data_on_scale_in=True)
    rows = {r["name"]: r["action"] for r in _view("dev", base, head)}
    assert rows["brokers-emqx-4-data"] == rows["brokers-emqx-5-data"] == "forget"
    assert rows["brokers-emqx-4"] == "delete" and rows["ops-member-emqx-4"] == "delete"
    plain = {r["name"]: r["action"] for r in _view("dev", _stack_variant(tmp_path, "five2", count=5), None)}
    assert plain["brokers-emqx-4-data"] == "delete"


def test_a_new_instance_type_reaches_only_the_host_named_for_a_rebuild(tmp_path):
    import yaml

    from tools import mockengine

    rows = _view("dev", None, _stack_variant(tmp_path, "big", instance_type="m6i.large"))
    assert not [r for r in rows if r["type"] == "aws:ec2/instance:Instance"], "not every host at once"
    doc = mockengine.read_stack_file(_stack_variant(tmp_path, "big2", instance_type="m6i.large"))
    doc["config"]["mqtt-cluster:access"] = {**doc["config"]["mqtt-cluster:access"], "refresh_ami": "emqx-2"}
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump(doc))
    hosts = [r for r in _view("dev", None, one) if r["type"] == "aws:ec2/instance:Instance"]
    assert [(r["name"], r["inputs"]) for r in hosts] == [("brokers-emqx-2", ["instanceType"])]


def test_the_ssh_transport_leaves_through_the_seed_when_the_host_does_not_answer(tmp_path):
    nodes, _ = _cluster("vernemq")
    state = _state(
        tmp_path,
        nodes,
        down=[nodes[2].node_name],
        addresses={f"10.0.0.{i + 1}": f"c{i + 1}" for i in range(3)},
        unreachable_addresses=["10.0.0.3"],
    )
    env = {"SSH_USER": "ec2-user", "BASTION": "203.0.113.10", "SSH_PRIVATE_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----"}
    p = _step("vernemq", 2, "leave", state, tmp_path, transport="ssh", **env)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    st = json.loads(state.read_text())
    assert [c.split()[1] for c in st["calls"] if c.startswith("ssh ")] == ["ec2-user@10.0.0.3", "ec2-user@10.0.0.1"]
    assert nodes[2].node_name not in st["members"]
    assert any(c == f"exec c1 vmq-admin cluster leave node={nodes[2].node_name} -k" for c in st["calls"]), st["calls"]


@pytest.mark.parametrize("transport", ["ssm", "ssh"])
def test_steps_carry_the_deploy_key_only_for_ssh_and_only_as_a_secret(program, transport):
    plan = program("dev", access={"admin_cidrs": ["198.51.100.0/24"], "bastion": True, "transport": transport})
    steps = [r for r in plan.of_type("command:local:Command") if r.name.startswith("ops-")]
    assert len(steps) == 2 + 3 + 3  # joins, rollout steps, users steps
    for s in steps:
        env = s.inputs["environment"]
        assert ("SSH_PRIVATE_KEY" in env) == (transport == "ssh")
        if transport == "ssh":
            assert env["SSH_PRIVATE_KEY"] == "[secret]" and env["BASTION"] == "203.0.113.10"
    assert "PRIVATE KEY-----\\nOFFLINE" not in json.dumps(plan.as_json()["resources"])


def test_a_step_whose_configuration_is_already_applied_restarts_nothing(tmp_path):
    """A rollout step is also updated when only its drain targets (a replaced proxy host) or its
    script change; pulumi-command hands it its previous stdout, which names the configuration it
    applied last: the same configuration means no drain and no restart."""
    nodes, _ = _cluster("emqx")
    state = _state(tmp_path, nodes)
    created = _step("emqx", 1, "created", state, tmp_path)
    out, err = created.communicate(timeout=30)
    assert created.returncode == 0, err
    assert out == "config h2\n" and json.loads(state.read_text()).get("calls", []) == []

    same = _step("emqx", 1, "apply", state, tmp_path, PULUMI_COMMAND_STDOUT=out.rstrip("\n"))
    out2, err2 = same.communicate(timeout=30)
    assert same.returncode == 0, err2
    assert "already applied" in err2 and out2 == "config h2\n"
    assert json.loads(state.read_text()).get("calls", []) == [], "no SSM command, no drain, no restart"

    changed = _step("emqx", 1, "apply", state, tmp_path, PULUMI_COMMAND_STDOUT="config h1")
    out3, err3 = changed.communicate(timeout=60)
    assert changed.returncode == 0, err3
    assert out3.splitlines()[-1] == "config h2"
    assert _events(state) == ["drain i-2", "restart c2", "undrain i-2", "healthy i-2"]
