"""What AWS does with the plan: certificate names, DNS record ownership, idle timeouts, AMI churn,
least-privilege roles, and values AWS would reject mid-deploy."""

from __future__ import annotations

import base64
import json
import os
import re
from collections import defaultdict

import pytest

from components.config import ConfigError, parse
from components.renderers import cloud_init
from tests.conftest import STACKS, plan_of
from tools import mockengine

AWS_STACKS = [s for s in STACKS if s != "local" and "global" not in s]


# --- 1. the certificate covers the name clients connect to ------------------------------------
def _matches(pattern: str, host: str) -> bool:
    """RFC 6125 6.4.3 as clients apply it: "*" is the whole left-most label and stands for exactly
    one label; everything else compares case-insensitively."""
    p, h = pattern.lower().split("."), host.lower().split(".")
    if len(p) != len(h):
        return False
    if p[0] == "*":
        return bool(h[0]) and p[1:] == h[1:]
    return p == h


def _certificate_names(plan: mockengine.Plan) -> list[str]:
    """The names (and addresses) of the certificate clients are shown."""
    requests = plan.of_type("tls:index/certRequest:CertRequest")
    if requests:
        (req,) = [r for r in requests if "lb-tls" in r.name]
        return [*req.inputs.get("dnsNames", []), *req.inputs.get("ipAddresses", [])]
    (acm,) = plan.of_type("aws:acm/certificate:Certificate")
    return [acm.inputs["domainName"], *acm.inputs.get("subjectAlternativeNames", [])]


def test_rfc6125_wildcard_covers_one_label_only():
    assert _matches("*.eu-west-1.elb.amazonaws.com", "lb-1234.eu-west-1.elb.amazonaws.com")
    assert not _matches("*.elb.eu-west-1.amazonaws.com", "lb-1234.eu-west-1.elb.amazonaws.com")
    assert not _matches("*.elb.amazonaws.com", "lb-1234.eu-west-1.elb.amazonaws.com"), "two labels"
    assert not _matches("*.example.com", "example.com")


def test_the_mock_gives_each_load_balancer_type_its_real_dns_name_form():
    # Classic: name-1234567890.region.elb.amazonaws.com (Classic Load Balancers guide, "Public DNS
    # names for your load balancer"); NLB: name-<16 hex>.elb.region.amazonaws.com.
    (elb,) = [r for r in plan_of("staging").resources if r.type == "aws:elb/loadBalancer:LoadBalancer"]
    assert re.fullmatch(r"[a-z0-9-]+-\d+\.eu-west-1\.elb\.amazonaws\.com", plan_of("staging").outputs["mqtt_host"]), elb.name
    assert re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{16}\.elb\.eu-central-1\.amazonaws\.com", plan_of("dev").outputs["mqtt_host"])


@pytest.mark.parametrize(
    "stack,overrides",
    [
        ("staging", {}),  # classic ELB, self-signed
        ("dev", {}),  # NLB, self-signed
        ("dev", {"load_balancer": {"kind": "elb"}}),
        ("staging", {"load_balancer": {"kind": "nlb"}}),
        ("prod-eu-central-1", {}),  # NLB, ACM for the domain
        ("edge", {}),  # nginx with a domain
        ("vernemq", {}),  # haproxy, clients get the Elastic IPs
        ("dev", {"load_balancer": {"kind": "elb", "domain": "mqtt.example.com", "hosted_zone_id": "Z0EXAMPLE1"}}),
    ],
    ids=["elb", "nlb", "dev-elb", "staging-nlb", "prod-acm", "nginx-domain", "haproxy-ip", "elb-acm"],
)
def test_the_certificate_covers_the_exported_mqtt_host(program, stack, overrides):
    plan = program(stack, **overrides) if overrides else plan_of(stack)
    host = plan.outputs["mqtt_host"]
    names = _certificate_names(plan)
    assert any(_matches(n, host) for n in names), f"{host} not covered by {names}"


# --- 2. one owner per DNS record ----------------------------------------------------------------
def test_no_route53_record_is_declared_by_two_stacks():
    owners: dict[tuple, list[str]] = defaultdict(list)
    for stack in STACKS:
        for r in plan_of(stack).of_type("aws:route53/record:Record"):
            i = r.inputs
            key = (i["zoneId"], i["name"].rstrip(".").lower(), i["type"], i.get("setIdentifier"))
            assert "[unknown]" not in key, (stack, r.name)
            owners[key].append(stack)
    shared = {k: v for k, v in owners.items() if len(v) > 1}
    assert not shared, f"records declared by more than one stack (destroying one deletes the others'): {shared}"


def test_a_shared_name_is_validated_by_its_owner_and_awaited_by_the_others():
    owner = plan_of("prod-eu-central-1")
    records = {r.inputs["name"] for r in owner.of_type("aws:route53/record:Record") if r.inputs["type"] == "CNAME"}
    shared = next(n for n in records if n.endswith(".mqtt.example.com."))
    for stack in ("prod-us-east-1", "prod-ap-southeast-1", "prod-ap-east-1"):
        plan = plan_of(stack)
        names = [r.inputs["name"] for r in plan.of_type("aws:route53/record:Record") if r.inputs["type"] == "CNAME"]
        assert shared not in names and len(names) == 1, names
        (valid,) = plan.of_type("aws:acm/certificateValidation:CertificateValidation")
        assert shared.rstrip(".") in valid.inputs["validationRecordFqdns"], "the certificate still waits for the shared name"
        assert len(valid.inputs["validationRecordFqdns"]) == 2


def test_validated_by_needs_a_dns_validated_certificate_with_alternative_names():
    with pytest.raises(ConfigError) as info:
        parse({"load_balancer": {"validated_by": "prod-eu-central-1"}}, stack="s", source="x", region="us-east-1")
    assert info.value.key == "mqtt-cluster:load_balancer.validated_by"


# --- 3. idle timeouts ---------------------------------------------------------------------------
def _refusal(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(raw, stack="s", source="stacks/Pulumi.s.yaml", region="eu-west-1")
    return info.value


def test_nlb_keepalive_leaves_the_fixed_350s_tls_idle_timeout_a_margin():
    # 2 x 160 + 30 = 350: the broker (1.5 x keepalive = 240 s) closes a silent session first.
    assert parse({"brokers": {"keepalive": 160}}, stack="s", source="x", region="eu-west-1").brokers.keepalive == 160
    err = _refusal({"brokers": {"keepalive": 161}})
    assert err.key == "mqtt-cluster:brokers.keepalive" and "350" in err.problem and "160" in err.problem
    # Self-hosted proxies take the timeout the program renders: no such ceiling.
    assert parse({"brokers": {"keepalive": 600}, "load_balancer": {"kind": "nginx"}}, stack="s", source="x", region="eu-west-1")


def test_classic_elb_keepalive_fits_its_4000s_idle_timeout_and_draining_is_at_least_1s():
    assert parse({"brokers": {"keepalive": 1985}, "load_balancer": {"kind": "elb"}}, stack="s", source="x", region="eu-west-1")
    err = _refusal({"brokers": {"keepalive": 1986}, "load_balancer": {"kind": "elb"}})
    assert err.key == "mqtt-cluster:brokers.keepalive" and "4000" in err.problem
    err = _refusal({"load_balancer": {"kind": "elb", "deregistration_delay": 0}})
    assert err.key == "mqtt-cluster:load_balancer.deregistration_delay" and "1 to 3600" in err.problem
    assert parse({"load_balancer": {"deregistration_delay": 0}}, stack="s", source="x", region="eu-west-1"), "NLB: 0 is valid"


def test_shipped_elb_idle_timeout_is_inside_the_classic_limit():
    (elb,) = plan_of("staging").of_type("aws:elb/loadBalancer:LoadBalancer")
    assert 1 <= elb.inputs["idleTimeout"] <= 4000 and 1 <= elb.inputs["connectionDrainingTimeout"] <= 3600


# --- 4. AMI churn -------------------------------------------------------------------------------
def _plan_with_ignore_changes(monkeypatch, run) -> tuple[mockengine.Plan, dict[str, list[str]]]:
    """A plan plus each resource's ignoreChanges as the engine receives it."""
    seen: dict[str, list[str]] = {}
    original = mockengine.RecordingMonitor.RegisterResource

    def register(self, request):
        response = original(self, request)
        seen[response.urn] = list(request.ignoreChanges)
        return response

    monkeypatch.setattr(mockengine.RecordingMonitor, "RegisterResource", register)
    plan = run()
    return plan, seen


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_host_ignores_newer_amis(monkeypatch, stack):
    plan, ignore = _plan_with_ignore_changes(monkeypatch, lambda: mockengine.plan_stack(stack))
    hosts = plan.of_type("aws:ec2/instance:Instance")
    roles = {h.inputs["tags"].get("Role", "bastion") for h in hosts}
    assert {"core"} <= roles
    for h in hosts:
        assert "ami" in ignore[h.urn], f"{h.name}: a new AL2023 release would replace it"


def test_refresh_ami_rebuilds_exactly_one_named_host(monkeypatch, program):
    plan, ignore = _plan_with_ignore_changes(
        monkeypatch, lambda: program("edge", access={"admin_cidrs": ["198.51.100.0/24"], "bastion": True, "refresh_ami": "nginx-1"})
    )
    free = [h.name for h in plan.of_type("aws:ec2/instance:Instance") if "ami" not in ignore[h.urn]]
    assert free == ["lb-nginx-1"]
    err = _refusal({"access": {"refresh_ami": "nginx-1"}})
    assert err.key == "mqtt-cluster:access.refresh_ami" and "emqx-1" in err.problem


# --- 5. egress ----------------------------------------------------------------------------------
def test_nat_none_is_refused_with_the_reason():
    err = _refusal({"network": {"nat": "none"}})
    assert err.key == "mqtt-cluster:network.nat" and "egress" in err.problem


# --- 6. least privilege -------------------------------------------------------------------------
def _read_policy(plan: mockengine.Plan, role_prefix: str) -> dict:
    (policy,) = [p for p in plan.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role_prefix}-read-own-params"]
    return json.loads(policy.inputs["policy"])


def _allowed_parameters(doc: dict) -> set[str]:
    (allow,) = [s for s in doc["Statement"] if s["Effect"] == "Allow" and str(s["Action"]).startswith("ssm:")]
    (deny,) = [s for s in doc["Statement"] if s["Effect"] == "Deny"]
    (decrypt,) = [s for s in doc["Statement"] if s["Action"] == "kms:Decrypt"]
    allowed = set(allow["Resource"])
    assert set(deny["NotResource"]) == allowed, "everything else is denied (the managed SSM policy allows ssm:GetParameter on *)"
    assert set(decrypt["Condition"]["StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"]) == allowed
    return {a.split(":parameter", 1)[1] for a in allowed}


@pytest.mark.parametrize(
    "stack,brokers,proxies",
    [
        ("dev", {"cookie", "dashboard-password", "auth-users"}, None),
        ("edge", {"cookie", "dashboard-password", "auth-users"}, ("nginx", {"tls-certificate", "tls-private-key"})),
        ("vernemq", {"cookie", "auth-users"}, ("haproxy", {"tls-certificate", "tls-private-key", "proxy-stats-password"})),
    ],
)
def test_each_role_reads_exactly_the_parameters_its_host_fetches(stack, brokers, proxies):
    plan = plan_of(stack)
    prefix = f"/mqtt-cluster/{stack}/"
    # and the nodes' start scripts (no secret in them): tests/test_day2.py
    assert _allowed_parameters(_read_policy(plan, "brokers")) == {prefix + leaf for leaf in brokers} | {prefix + "nodes/*/start"}
    host = "emqx-1" if stack != "vernemq" else "vernemq-1"
    fetched = set(re.findall(r'--name "\$PARAMS/([a-z-]+)"', plan.files[(host, "mqtt-broker-start")]))
    # The users script loads the device credentials (the start script runs it at boot).
    fetched |= {p.removeprefix(prefix) for p in re.findall(r"^PARAM='([^']+)'", plan.files[(host, "mqtt-cluster-users")], flags=re.M)}
    assert fetched == brokers, "the policy and the start and users scripts agree"
    if proxies:
        kind, leaves = proxies
        assert _allowed_parameters(_read_policy(plan, f"lb-{kind}")) == {prefix + leaf for leaf in leaves}
        script = plan.files[(f"{kind}-1", "mqtt-proxy-start")]
        assert set(re.findall(r"get ([a-z-]+)", script)) == leaves


# --- 7. values AWS rejects mid-deploy -----------------------------------------------------------
@pytest.mark.parametrize(
    "raw,key",
    [
        (
            {"load_balancer": {"certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"}},
            "load_balancer.certificate_arn",
        ),
        ({"load_balancer": {"domain": "mqtt.example.com", "hosted_zone_id": "/hostedzone/Z123"}}, "load_balancer.hosted_zone_id"),
        ({"load_balancer": {"domain": "mqtt.example.com", "hosted_zone_id": "z123abc"}}, "load_balancer.hosted_zone_id"),
        ({"load_balancer": {"domain": "MQTT_broker.example.com"}}, "load_balancer.domain"),
        ({"load_balancer": {"domain": "*.example.com"}}, "load_balancer.domain"),
        ({"load_balancer": {"domain": ("a" * 64) + ".example.com"}}, "load_balancer.domain"),
        ({"load_balancer": {"alternative_names": ["x.example.com", "x.example.com"]}}, "load_balancer.alternative_names"),
        ({"brokers": {"instance_type": "m6i.nano"}}, "brokers.instance_type"),
        ({"brokers": {"instance_type": "t3.8xlarge"}}, "brokers.instance_type"),
        ({"brokers": {"instance_type": "q7.large"}}, "brokers.instance_type"),
        ({"brokers": {"instance_type": "mac2.metal"}}, "brokers.instance_type"),
        ({"brokers": {"instance_type": "m5.medium"}}, "brokers.instance_type"),
        ({"load_balancer": {"kind": "nginx", "proxy_instance_type": "t3.huge"}}, "load_balancer.proxy_instance_type"),
        ({"access": {"bastion_instance_type": "micro"}}, "access.bastion_instance_type"),
        ({"access": {"ssh_user": "ec2-user; reboot"}}, "access.ssh_user"),
        ({"brokers": {"image": "EMQX/emqx:5.8.6"}}, "brokers.image"),
        ({"tags": {"k" * 129: "v"}}, f"tags.{'k' * 129}"),
        ({"tags": {"Team": "v" * 257}}, "tags.Team"),
        ({"tags": {"Team": "a#b"}}, "tags.Team"),
        ({"tags": {"Name": "mine"}}, "tags.Name"),
        ({"tags": {f"k{i}": "v" for i in range(43)}}, "tags"),
    ],
)
def test_values_aws_would_reject_are_refused_before_any_resource(raw, key):
    with pytest.raises(ConfigError) as info:
        parse(raw, stack="s", source="stacks/Pulumi.s.yaml", region="eu-central-1")
    assert info.value.key == f"mqtt-cluster:{key}", str(info.value)


@pytest.mark.parametrize(
    "itype", ["t3.micro", "t4g.nano", "m6i.large", "m6g.medium", "c6gn.16xlarge", "m7i-flex.2xlarge", "r7g.metal", "c6i.large", "a1.medium"]
)
def test_real_instance_types_pass(itype):
    assert parse({"brokers": {"instance_type": itype}}, stack="s", source="x", region="eu-central-1").brokers.instance_type == itype


def test_a_certificate_from_the_stack_region_passes():
    arn = "arn:aws:acm:eu-central-1:123456789012:certificate/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
    assert parse({"load_balancer": {"certificate_arn": arn}}, stack="s", source="x", region="eu-central-1")


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_load_balancer_and_target_group_names_fit_32_characters(stack):
    # NLB, target group and classic ELB names: at most 32 characters (pulumi_aws lb.LoadBalancer,
    # lb.TargetGroup, elb.LoadBalancer docstrings); auto-naming appends "-" and 7 characters.
    types = ("aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup", "aws:elb/loadBalancer:LoadBalancer")
    for r in plan_of(stack).resources:
        if r.type in types:
            assert len(r.inputs.get("name") or f"{r.name}-xxxxxxx") <= 32, r.name


# --- user-data within EC2's limit --------------------------------------------------------------


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_host_user_data_fits_ec2s_16_kb_and_is_the_reviewed_cloud_config(stack):
    # "User data is limited to 16 KB, in raw form, before it is base64-encoded" (AWS EC2 User Guide).
    # Broker cloud-configs are larger than that as text, so every host ships them gzip-compressed.
    plan = plan_of(stack)
    instances = plan.of_type("aws:ec2/instance:Instance")
    assert instances
    for inst in instances:
        assert "userData" not in inst.inputs, f"{inst.name}: plain-text user-data"
        raw = base64.b64decode(inst.inputs["userDataBase64"])
        assert raw[:2] == b"\x1f\x8b" and len(raw) <= cloud_init.USER_DATA_LIMIT, (inst.name, len(raw))
        text = cloud_init.unpacked(inst.inputs["userDataBase64"])
        assert text.startswith("#cloud-config\n")
        host = inst.name.split("-", 1)[1] if inst.name != "bastion-host" else "bastion"
        assert plan.files[(host, "cloud-init.yaml")] == text, "the reviewed file is what the host gets"


def test_packed_user_data_is_deterministic_and_bounded():
    text = "#cloud-config\n" + "write_files: []\n" * 50
    assert cloud_init.packed(text) == cloud_init.packed(text)  # no timestamp: no spurious replacement
    assert cloud_init.unpacked(cloud_init.packed(text)) == text
    with pytest.raises(ValueError, match="EC2 accepts at most 16384"):
        cloud_init.packed(base64.b64encode(os.urandom(20000)).decode())
