"""The offline plan diff posted on pull requests: added, removed, changed resources and inputs."""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
import sys

from tests.conftest import ROOT, plan_of
from tools.plan_diff import diff_plans, render_stack, report


def _plan():
    return copy.deepcopy(plan_of("dev").as_json())


def _named(doc, name):
    return next(r for r in doc["resources"] if r["name"] == name)


def test_identical_plans_have_no_changes():
    d = diff_plans(_plan(), _plan())
    assert d == {"added": [], "removed": [], "changed": [], "outputs": []}
    assert "no changes" in render_stack("dev", d)


def test_added_removed_and_changed_resources_and_inputs():
    base, head = _plan(), _plan()
    gone = base["resources"][-1]
    head["resources"] = [r for r in head["resources"] if r["urn"] != gone["urn"]]
    extra = {**copy.deepcopy(head["resources"][0]), "urn": head["resources"][0]["urn"] + "-new", "name": "brand-new"}
    head["resources"].append(extra)
    _named(head, "brokers-emqx-1")["inputs"]["instanceType"] = "m6i.large"
    d = diff_plans(base, head)
    assert [r["name"] for r in d["added"]] == ["brand-new"]
    assert [r["urn"] for r in d["removed"]] == [gone["urn"]]
    (changed,) = d["changed"]
    assert changed["name"] == "brokers-emqx-1" and ("instanceType", "t3.medium", "m6i.large") in changed["inputs"]
    text = render_stack("dev", d)
    assert "+1 added, -1 removed, ~1 changed" in text
    assert "    instanceType: t3.medium → m6i.large" in text
    assert "+ " in text and "- " in text


def test_secret_inputs_stay_secret_and_a_changed_secret_shows_no_value():
    base, head = _plan(), _plan()
    param = next(r for r in head["resources"] if r["type"] == "aws:ssm/parameter:Parameter")
    assert param["inputs"]["value"] == "[secret]"
    param["inputs"]["description"] = "rotated"
    d = diff_plans(base, head)
    (changed,) = d["changed"]
    assert [p for p, _, _ in changed["inputs"]] == ["description"]
    text = render_stack("dev", d)
    assert "offline-" not in text and "[secret]" not in text.replace("description", "")


def test_nested_and_list_inputs_are_compared_by_path():
    base, head = _plan(), _plan()
    _named(head, "brokers-emqx-1")["inputs"]["rootBlockDevice"]["volumeSize"] = 32
    (changed,) = diff_plans(base, head)["changed"]
    assert changed["inputs"] == [("rootBlockDevice.volumeSize", 16, 32)]


def test_report_over_directories_names_new_removed_and_broken_stacks(tmp_path):
    base, head = tmp_path / "base", tmp_path / "head"
    base.mkdir()
    head.mkdir()
    doc = _plan()
    (base / "dev.json").write_text(json.dumps(doc))
    (head / "dev.json").write_text(json.dumps(doc))
    (head / "fresh.json").write_text(json.dumps(doc))
    (base / "old.json").write_text(json.dumps(doc))
    (head / "broken.err").write_text("stacks/Pulumi.broken.yaml: mqtt-cluster:brokers.count: must be at least 1 (got 0)")
    text = report(base, head)
    assert "<b>dev</b>: no changes" in text
    assert "fresh (new stack)" in text and f"+{len(doc['resources'])} added" in text
    assert "old (stack removed)" in text
    assert "**broken**: the head does not plan" in text and "brokers.count" in text
    proc = subprocess.run([sys.executable, "-m", "tools.plan_diff", str(base), str(head)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == text


def test_ci_stack_lists_follow_the_deployment_order_and_skip_local():
    from tools.stacks import stacks

    lists = stacks()
    assert lists["primary"] == ["prod-eu-central-1"]
    assert lists["global"] == ["prod-global"]
    assert "local" not in lists["regional"] + lists["primary"] + lists["global"]
    assert {"prod-us-east-1", "prod-ap-southeast-1", "prod-ap-east-1", "dev"} <= set(lists["regional"])


# --- two plans of one configuration are equal ------------------------------------------------------
def _broker_addresses(plan) -> dict[str, list[tuple[str, str]]]:
    """Per subnet: (broker host, the private address its DNS record carries), in name order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for r in plan.of_type("aws:ec2/instance:Instance"):
        if r.name.startswith("brokers-"):
            (address,) = plan.named(f"{r.name}-dns").inputs["records"]
            out.setdefault(r.inputs["subnetId"], []).append((r.name, address))
    return {s: sorted(v) for s, v in out.items()}


def test_instances_get_addresses_in_name_order_whatever_the_registration_order():
    from tools.mockengine import ProgramMocks

    def new(mocks, typ, name, inputs):
        args = type("Args", (), {"typ": typ, "name": name, "inputs": inputs})()
        return mocks.new_resource(args)

    for arrival in (["emqx-1", "emqx-2", "emqx-3"], ["emqx-3", "emqx-1", "emqx-2"]):
        mocks = ProgramMocks("s", "eu-central-1", {}, host_order={"subnet-a": ["emqx-1", "emqx-2", "emqx-3"]})
        mocks.subnet_cidrs["subnet-a"] = "10.40.128.0/20"
        got = {name: new(mocks, "aws:ec2/instance:Instance", name, {"subnetId": "subnet-a"})[1]["privateIp"] for name in arrival}
        assert got == {"emqx-1": "10.40.128.10", "emqx-2": "10.40.128.11", "emqx-3": "10.40.128.12"}, arrival
        assert mocks.hosts_seen == {"subnet-a": arrival}


def test_a_run_that_met_instances_out_of_name_order_runs_again_and_hands_addresses_by_name(monkeypatch):
    """The SDK's registration order varies between runs (RPCs complete on worker threads): a run
    whose instances arrived out of name order is repeated with the name order given."""
    from tools import mockengine

    real, calls = mockengine._run_once, []

    def run_once(*args):
        plan, seen = real(*args)
        calls.append(args[-1])
        if len(calls) == 1:  # as if they had arrived the other way round
            seen = {subnet: sorted(names, reverse=True) for subnet, names in seen.items()}
        return plan, seen

    monkeypatch.setattr(mockengine, "_run_once", run_once)
    plan = mockengine.plan_stack("edge")
    assert len(calls) == 2 and calls[0] is None
    assert calls[1] and all(names == sorted(names) for names in calls[1].values())
    shared = [v for v in _broker_addresses(plan).values() if len(v) > 1]
    assert shared, "edge puts two brokers in one subnet"
    for hosts in shared:
        addrs = [ipaddress.ip_address(a) for _, a in hosts]
        assert addrs == sorted(addrs), hosts


def test_plans_of_one_stack_in_separate_processes_are_equal(tmp_path):
    """What the pull request comment compares: base and head planned by separate processes."""
    for i in range(3):
        out = subprocess.run([sys.executable, "-m", "tools.plan", "edge", "--json"], cwd=ROOT, capture_output=True, check=True, text=True)
        (tmp_path / f"p{i}").mkdir()
        (tmp_path / f"p{i}" / "edge.json").write_text(out.stdout)
    for i in (1, 2):
        d = diff_plans(json.loads((tmp_path / "p0/edge.json").read_text()), json.loads((tmp_path / f"p{i}/edge.json").read_text()))
        assert d == {"added": [], "removed": [], "changed": [], "outputs": []}, d
