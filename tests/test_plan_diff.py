"""The offline plan diff posted on pull requests: added, removed, changed resources and inputs."""

from __future__ import annotations

import copy
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
