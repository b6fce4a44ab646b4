"""Shared fixtures: plans of shipped stacks (cached) and a fresh mock engine per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import SECRET_KEYS
from tools import mockengine

ROOT = Path(__file__).resolve().parent.parent
STACK_FILES = sorted(ROOT.glob("stacks/Pulumi.*.yaml"))
STACKS = [p.name[len("Pulumi.") : -len(".yaml")] for p in STACK_FILES]

_plans: dict[str, mockengine.Plan] = {}


def plan_of(stack: str) -> mockengine.Plan:
    """The offline plan of a shipped stack (computed once per session)."""
    if stack not in _plans:
        _plans[stack] = mockengine.plan_stack(stack)
    return _plans[stack]


def stack_config(stack: str) -> dict[str, str]:
    doc = mockengine.read_stack_file(mockengine.stack_file(stack))
    return mockengine._flatten_config(doc)[0]


@pytest.fixture
def program():
    """Run the program with a stack's config plus overrides, under fresh mocks; returns the Plan."""

    def run(base: str = "dev", stack: str | None = None, **overrides):
        config, secret_keys = mockengine._flatten_config(mockengine.read_stack_file(mockengine.stack_file(base)))
        for key, value in overrides.items():
            full = key if ":" in key else f"mqtt-cluster:{key}"
            config[full] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            if key in SECRET_KEYS:  # as `pulumi config set --secret` stores them
                secret_keys.append(full)
        return mockengine.run_program(stack or base, config, secret_keys)

    return run


def ingress(plan: mockengine.Plan) -> list[dict]:
    return [r.inputs for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]


def group_id(plan: mockengine.Plan, role: str) -> str:
    sg = next(r for r in plan.of_type("aws:ec2/securityGroup:SecurityGroup") if r.inputs["tags"].get("Role") == role)
    return sg.id


def rules_into(plan: mockengine.Plan, role: str) -> list[dict]:
    gid = group_id(plan, role)
    return [r for r in ingress(plan) if r["securityGroupId"] == gid]


@pytest.fixture
def bridged_stacks(tmp_path, monkeypatch):
    """The shipped stack files in a scratch directory, where ``bridged_stacks(name, topics)`` lets
    a regional stack admit bridges (auth.bridge_topics); the linking stack's static check and the
    offline references both read that directory."""
    import yaml

    from components import links

    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for f in STACK_FILES:
        (stacks / f.name).write_text(f.read_text())
    monkeypatch.setattr(links, "STACKS_DIR", stacks)
    monkeypatch.setattr(mockengine, "stack_file", lambda stack: stacks / f"Pulumi.{stack}.yaml")

    def admit(stack: str, topics: list[str] | None) -> None:
        path = stacks / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(path.read_text())
        auth = doc["config"].setdefault("mqtt-cluster:auth", {})
        if topics is None:
            auth.pop("bridge_topics", None)
        else:
            auth["bridge_topics"] = topics
        path.write_text(yaml.safe_dump(doc))

    return admit


@pytest.fixture
def registered_types(monkeypatch) -> list[str]:
    """The type of every resource the program registers from now on (registration still happens)."""
    types: list[str] = []
    original = mockengine.RecordingMonitor.RegisterResource

    def spy(self, request):
        types.append(request.type)
        return original(self, request)

    monkeypatch.setattr(mockengine.RecordingMonitor, "RegisterResource", spy)
    return types
