"""The policy pack during `pulumi preview`, where inputs that depend on other resources are unknown.

Runs the pack through pulumi-policy's own analyzer service (the code `pulumi preview --policy-pack`
talks to), with unknowns written the way the engine sends them: pulumi-policy's sentinel strings
(pulumi/pulumi-policy v1.21.0 sdk/python/lib/pulumi_policy/proxy.py:19-52), turned into an
UnknownValueError on read (proxy.py:97-120) and into an ADVISORY "can't run policy … during preview"
diagnostic by the analyzer (policy.py:997-1022).
"""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_BOOLEAN_VALUE, UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE

from policy import rules
from tests.test_policy import BAD, GOOD_INSTANCE, INSTANCE, SG_RULE

MANDATORY = proto.EnforcementLevel.Value("MANDATORY")
ADVISORY = proto.EnforcementLevel.Value("ADVISORY")


def analyze(type_: str, props: dict) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Mandatory violations and advisory diagnostics per rule, as the analyzer reports them."""
    servicer = _PolicyAnalyzerServicer("mqtt-cluster", "0.0.1", rules.POLICIES, EnforcementLevel.MANDATORY)
    struct = struct_pb2.Struct()
    struct.update(props)
    response = servicer.Analyze(proto.AnalyzeRequest(type=type_, properties=struct, urn="urn:pulumi:t::p::x::r", name="r"), None)
    mandatory: dict[str, list[str]] = {}
    advisory: dict[str, list[str]] = {}
    for d in response.diagnostics:
        (mandatory if d.enforcementLevel == MANDATORY else advisory).setdefault(d.policyName, []).append(d.message)
    return mandatory, advisory


def with_unrelated_unknowns(props: dict) -> dict:
    """The same resource with unknowns in keys no rule reads: a top-level id and an unrelated tag."""
    out = {**props, "subnetId": UNKNOWN_STRING_VALUE, "description": UNKNOWN_STRING_VALUE}
    if isinstance(props.get("tags"), dict):
        out["tags"] = {**props["tags"], "Name": UNKNOWN_STRING_VALUE}
    return out


@pytest.mark.parametrize(("rule", "type_", "props"), BAD, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD)])
def test_each_rule_still_fires_mandatory_with_an_unknown_in_an_unrelated_key(rule, type_, props):
    mandatory, advisory = analyze(type_, with_unrelated_unknowns(props))
    assert rule in mandatory, (mandatory, advisory)
    assert advisory == {}


def test_the_reported_preview_case_an_instance_with_an_unknown_subnet_breaks_three_rules():
    bad = {
        "metadataOptions": {"httpTokens": "optional"},
        "rootBlockDevice": {"encrypted": False},
        "associatePublicIpAddress": True,
        "tags": {"Environment": "prod", "Role": "core"},
        "subnetId": UNKNOWN_STRING_VALUE,
    }
    mandatory, advisory = analyze(INSTANCE, bad)
    assert set(mandatory) == {"imdsv2-required", "ebs-encrypted", "brokers-without-public-ip"}
    assert advisory == {}


def test_a_good_resource_with_unknowns_passes_silently():
    assert analyze(INSTANCE, with_unrelated_unknowns(GOOD_INSTANCE)) == ({}, {})


def test_a_rule_whose_own_key_is_unknown_is_advisory_in_preview_and_the_others_still_judge():
    # associatePublicIpAddress unknown: that rule cannot decide -> pulumi-policy's advisory note
    # (it runs again, mandatory, on `pulumi up`); the IMDS rule still fires on the same resource.
    props = {**GOOD_INSTANCE, "associatePublicIpAddress": UNKNOWN_BOOLEAN_VALUE, "metadataOptions": {"httpTokens": "optional"}}
    mandatory, advisory = analyze(INSTANCE, props)
    assert set(mandatory) == {"imdsv2-required"}
    assert set(advisory) == {"brokers-without-public-ip"}
    assert "associatePublicIpAddress can't be known during preview" in advisory["brokers-without-public-ip"][0]


def test_decidable_parts_of_a_rule_still_fire_next_to_an_unknown_part():
    # an unknown extra block device does not hide the unencrypted root volume
    props = {**GOOD_INSTANCE, "rootBlockDevice": {"encrypted": False}, "ebsBlockDevices": [UNKNOWN_OBJECT_VALUE]}
    mandatory, advisory = analyze(INSTANCE, props)
    (message,) = mandatory["ebs-encrypted"]
    assert message.endswith("root volume must be encrypted (rootBlockDevice.encrypted)")
    assert set(advisory) == {"ebs-encrypted"}
    # a known world block on a protected port fires even though the other address family is unknown
    sg = {
        "cidrIpv4": UNKNOWN_STRING_VALUE,
        "cidrIpv6": "::/0",
        "fromPort": 22,
        "toPort": 22,
        "ipProtocol": "tcp",
        "tags": {"Environment": "x"},
    }
    mandatory, advisory = analyze(SG_RULE, sg)
    assert set(mandatory) == {"no-world-on-cluster-or-admin-ports"} and advisory == {}
    # a security group whose ingress list holds an unknown entry next to a world SSH entry
    group = {"ingress": [UNKNOWN_OBJECT_VALUE, {"fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}], "tags": {"Environment": "x"}}
    mandatory, _ = analyze("aws:ec2/securityGroup:SecurityGroup", group)
    assert "no-world-on-cluster-or-admin-ports" in mandatory


def test_undecidable_sources_are_advisory_not_silently_passed():
    # the only source is unknown: the rule cannot know whether it is the world -> advisory note
    sg = {"cidrIpv4": UNKNOWN_STRING_VALUE, "fromPort": 22, "toPort": 22, "ipProtocol": "tcp", "tags": {"Environment": "x"}}
    mandatory, advisory = analyze(SG_RULE, sg)
    assert mandatory == {} and set(advisory) == {"no-world-on-cluster-or-admin-ports"}
    # a known private source on 22 next to an unknown list entry: advisory, never a false violation
    rule = {"type": "ingress", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8", UNKNOWN_STRING_VALUE], "tags": {}}
    mandatory, advisory = analyze("aws:ec2/securityGroupRule:SecurityGroupRule", rule)
    assert mandatory == {} and set(advisory) == {"no-world-on-cluster-or-admin-ports"}
    # the whole tag map unknown: the tag rule is advisory, nothing else is affected
    mandatory, advisory = analyze("aws:ebs/volume:Volume", {"encrypted": True, "tags": UNKNOWN_OBJECT_VALUE})
    assert mandatory == {} and set(advisory) == {"environment-tag"}
    # an unknown list of classic ELB listeners
    mandatory, advisory = analyze("aws:elb/loadBalancer:LoadBalancer", {"listeners": UNKNOWN_ARRAY_VALUE, "tags": {"Environment": "x"}})
    assert mandatory == {} and set(advisory) == {"tls12-listeners"}
