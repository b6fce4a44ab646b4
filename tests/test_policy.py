"""The CrossGuard policy pack: every shipped stack passes every rule; every rule fires on a bad resource."""

from __future__ import annotations

import pytest

from policy import rules
from tests.conftest import STACKS, plan_of


@pytest.mark.parametrize("stack", STACKS)
def test_every_shipped_stack_passes_every_policy(stack):
    violations = [
        (name, r.type, r.name, message)
        for r in plan_of(stack).resources
        for name, (_, check) in rules.CHECKS.items()
        for message in check(r.type, r.inputs)
    ]
    assert violations == []


SG_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
INSTANCE = "aws:ec2/instance:Instance"
GOOD_INSTANCE = {
    "metadataOptions": {"httpTokens": "required"},
    "rootBlockDevice": {"encrypted": True},
    "associatePublicIpAddress": False,
    "tags": {"Environment": "prod", "Role": "core"},
}

BAD = [
    ("no-world-on-cluster-or-admin-ports", SG_RULE, {"cidrIpv4": "0.0.0.0/0", "fromPort": 22, "toPort": 22, "ipProtocol": "tcp"}),
    ("no-world-on-cluster-or-admin-ports", SG_RULE, {"cidrIpv6": "::/0", "fromPort": 18000, "toPort": 19000, "ipProtocol": "tcp"}),
    ("no-world-on-cluster-or-admin-ports", SG_RULE, {"cidrIpv4": "0.0.0.0/0", "ipProtocol": "-1"}),
    ("no-world-on-cluster-or-admin-ports", SG_RULE, {"cidrIpv4": "0.0.0.0/0", "fromPort": 9105, "toPort": 9105, "ipProtocol": "tcp"}),
    (
        "no-world-on-cluster-or-admin-ports",
        "aws:ec2/securityGroup:SecurityGroup",
        {"ingress": [{"fromPort": 4370, "toPort": 4370, "cidrBlocks": ["0.0.0.0/0"]}], "tags": {"Environment": "x"}},
    ),
    ("imdsv2-required", INSTANCE, {**GOOD_INSTANCE, "metadataOptions": {"httpTokens": "optional"}}),
    ("ebs-encrypted", "aws:ebs/volume:Volume", {"encrypted": False, "tags": {"Environment": "x"}}),
    ("ebs-encrypted", INSTANCE, {**GOOD_INSTANCE, "rootBlockDevice": {}}),
    ("brokers-without-public-ip", INSTANCE, {**GOOD_INSTANCE, "associatePublicIpAddress": True}),
    ("tls12-listeners", "aws:lb/listener:Listener", {"protocol": "TLS", "sslPolicy": "ELBSecurityPolicy-2016-08"}),
    (
        "tls12-listeners",
        "aws:elb/loadBalancerPolicy:LoadBalancerPolicy",
        {
            "policyTypeName": "SSLNegotiationPolicyType",
            "policyAttributes": [{"name": "Reference-Security-Policy", "value": "ELBSecurityPolicy-2016-08"}],
        },
    ),
    ("environment-tag", "aws:ec2/vpc:Vpc", {"cidrBlock": "10.0.0.0/16", "tags": {"Project": "mqtt-cluster"}}),
]


@pytest.mark.parametrize(("rule", "type_", "props"), BAD, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD)])
def test_each_rule_fires_on_a_bad_resource(rule, type_, props):
    fired = {name for name, (_, check) in rules.CHECKS.items() if list(check(type_, props))}
    assert rule in fired


def test_every_rule_has_a_failing_case_and_acceptable_neighbours_pass():
    assert {r for r, _, _ in BAD} == set(rules.CHECKS)
    fine = [
        (SG_RULE, {"cidrIpv4": "0.0.0.0/0", "fromPort": 8883, "toPort": 8883, "ipProtocol": "tcp", "tags": {"Environment": "x"}}),
        (SG_RULE, {"cidrIpv4": "198.51.100.0/24", "fromPort": 22, "toPort": 22, "ipProtocol": "tcp", "tags": {"Environment": "x"}}),
        (INSTANCE, GOOD_INSTANCE),
        ("aws:lb/listener:Listener", {"protocol": "TLS", "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06", "tags": {"Environment": "x"}}),
    ]
    for type_, props in fine:
        assert [m for _, check in rules.CHECKS.values() for m in check(type_, props)] == [], (type_, props)


def test_the_pack_declares_every_rule_as_a_mandatory_policy():
    assert [p.name for p in rules.POLICIES] == list(rules.CHECKS)
    reported = []
    args = type("Args", (), {"resource_type": "aws:ebs/volume:Volume", "props": {"encrypted": False}})()
    next(p for p in rules.POLICIES if p.name == "ebs-encrypted").validate(args, lambda msg, urn: reported.append(msg))
    assert reported == ["EBS volume must be encrypted"]
