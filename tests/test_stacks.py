"""Every shipped stack file, planned offline, answers the questions an operator would ask."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest

from tests.conftest import STACKS, ingress, plan_of, rules_into, stack_config

CLUSTER_AND_ADMIN_PORTS = {22, 4369, 4370, 5370, 18083, 44053, 8888, 8404, *range(9100, 9110)}
WORLD = {"0.0.0.0/0", "::/0"}
AWS_STACKS = [s for s in STACKS if s != "local" and "global" not in s]


def _ports(rule: dict) -> set[int]:
    return set(range(rule["fromPort"], rule["toPort"] + 1))


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_plans(stack):
    plan = plan_of(stack)
    assert plan.resources, "a stack that registers nothing deploys nothing"


@pytest.mark.parametrize("stack", STACKS)
def test_no_cluster_or_admin_port_is_open_to_the_world(stack):
    for rule in ingress(plan_of(stack)):
        src = rule.get("cidrIpv4") or rule.get("cidrIpv6")
        if src in WORLD:
            assert not (_ports(rule) & CLUSTER_AND_ADMIN_PORTS), rule


@pytest.mark.parametrize("stack", STACKS)
def test_every_child_has_its_component_as_parent(stack):
    plan = plan_of(stack)
    components = {r.urn for r in plan.resources if not r.custom}
    for r in plan.resources:
        if r.custom and r.type != "pulumi:providers:aws":
            assert r.parent in components, f"{r.name} ({r.type}) hangs off {r.parent}"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_subnets_span_at_least_two_azs(stack):
    plan = plan_of(stack)
    azs = {s.inputs["availabilityZone"] for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["Tier"] == "private"}
    assert len(azs) >= 2


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_subnets_lie_inside_the_vpc_and_do_not_overlap(stack):
    plan = plan_of(stack)
    vpc = ipaddress.ip_network(plan.of_type("aws:ec2/vpc:Vpc")[0].inputs["cidrBlock"])
    blocks = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in plan.of_type("aws:ec2/subnet:Subnet")]
    assert all(b.subnet_of(vpc) for b in blocks)
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_brokers_admit_cluster_traffic_only_from_themselves(stack):
    plan = plan_of(stack)
    broker = next(r for r in plan.of_type("aws:ec2/securityGroup:SecurityGroup") if r.inputs["tags"]["Role"] == "broker")
    cluster = {4369, 4370, 5370, 44053, *range(9100, 9110)}
    seen = set()
    for rule in rules_into(plan, "broker"):
        if _ports(rule) & cluster:
            assert rule.get("referencedSecurityGroupId") == broker.id, rule
            seen |= _ports(rule) & cluster
    assert seen, "the brokers must be able to talk to each other"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_ssh_and_dashboard_only_from_admin_networks_or_the_bastion(stack):
    plan = plan_of(stack)
    cfg = json.loads(stack_config(stack).get("mqtt-cluster:access", "{}"))
    admins = set(cfg.get("admin_cidrs", []))
    bastion = [r.id for r in plan.of_type("aws:ec2/securityGroup:SecurityGroup") if r.inputs["tags"]["Role"] == "bastion"]
    for rule in ingress(plan):
        if _ports(rule) & {22, 18083}:
            src = rule.get("cidrIpv4") or rule.get("cidrIpv6")
            ok = src in admins or rule.get("referencedSecurityGroupId") in bastion
            # The load balancer's health check may reach 18083 (EMQX /api/v5/status).
            ok = ok or (rule["fromPort"] == 18083 and rule["description"] == "load balancer health check")
            assert ok, rule


def test_dev_json_plan_matches_the_contract():
    proc = subprocess.run([sys.executable, "-m", "tools.plan", "dev", "--json"], capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout)
    assert doc["project"] == "mqtt-cluster" and doc["stack"] == "dev"
    assert set(doc) == {"project", "stack", "resources", "outputs"}
    for r in doc["resources"]:
        assert set(r) == {"urn", "type", "name", "parent", "custom", "provider", "inputs", "dependencies", "options"}
        assert r["urn"].startswith("urn:pulumi:dev::mqtt-cluster::")
        assert all(d.startswith("urn:pulumi:dev::") for d in r["dependencies"])
    subnet = next(r for r in doc["resources"] if r["type"] == "aws:ec2/subnet:Subnet")
    vpc = next(r for r in doc["resources"] if r["type"] == "aws:ec2/vpc:Vpc")
    assert vpc["urn"] in subnet["dependencies"], "property dependencies are recorded"
    assert "cidrBlock" in subnet["inputs"], "inputs use the engine's camelCase names"
