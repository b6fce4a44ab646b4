"""The organisation's rules as code. Each check reads a resource's engine-side properties
(camelCase, as the offline plan shows them) and reports a violation in one sentence.

Pure functions over (type, props): the tests run them against every shipped stack's offline plan
and against deliberately bad resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy

Props = dict[str, Any]
Check = Callable[[str, Props], Iterator[str]]

# Cluster, admin and stats ports: never reachable from the whole internet.
PROTECTED_PORTS = {
    22: "SSH",
    4369: "EPMD",
    4370: "EMQX distribution",
    5370: "EMQX RPC",
    18083: "EMQX dashboard",
    44053: "VerneMQ cluster",
    8888: "VerneMQ HTTP",
    8404: "haproxy stats",
}
PROTECTED_RANGES = [(9100, 9109, "VerneMQ distribution")]
WORLD = {"0.0.0.0/0", "::/0"}
TLS12_POLICY = re.compile(r"ELBSecurityPolicy-(TLS13-1-[23]|TLS-1-2|FS-1-2)")
# Resource types whose tags identify the environment (everything in this program that takes tags).
TAGGABLE = re.compile(
    r"aws:(ec2/(vpc|subnet|internetGateway|natGateway|eip|routeTable|securityGroup|instance|keyPair|"
    r"vpcPeeringConnection|vpcPeeringConnectionAccepter):|ebs/volume:|vpc/securityGroup(Ingress|Egress)Rule:|"
    r"lb/(loadBalancer|targetGroup|listener):|elb/loadBalancer:|acm/certificate:|ssm/parameter:|"
    r"route53/(zone|healthCheck):|iam/(role|instanceProfile):|ecr/repository:)"
)


def _ports(frm: Any, to: Any) -> list[str]:
    lo, hi = int(frm if frm is not None else 0), int(to if to is not None else 65535)
    if lo == -1:  # all traffic
        lo, hi = 0, 65535
    hit = [f"{p} ({what})" for p, what in PROTECTED_PORTS.items() if lo <= p <= hi]
    hit += [f"{a}-{b} ({what})" for a, b, what in PROTECTED_RANGES if lo <= b and a <= hi]
    return hit


def no_world_on_protected_ports(t: str, p: Props) -> Iterator[str]:
    rules: list[tuple[Any, Any, list[str]]] = []
    if t == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        protocol = str(p.get("ipProtocol", "tcp"))
        frm, to = (0, 65535) if protocol == "-1" else (p.get("fromPort"), p.get("toPort"))
        rules.append((frm, to, [c for c in (p.get("cidrIpv4"), p.get("cidrIpv6")) if c]))
    elif t == "aws:ec2/securityGroupRule:SecurityGroupRule" and p.get("type") == "ingress":
        rules.append((p.get("fromPort"), p.get("toPort"), [*(p.get("cidrBlocks") or []), *(p.get("ipv6CidrBlocks") or [])]))
    elif t == "aws:ec2/securityGroup:SecurityGroup":
        for r in p.get("ingress") or []:
            rules.append((r.get("fromPort"), r.get("toPort"), [*(r.get("cidrBlocks") or []), *(r.get("ipv6CidrBlocks") or [])]))
    for frm, to, cidrs in rules:
        world = sorted(set(cidrs) & WORLD)
        hit = _ports(frm, to)
        if world and hit:
            yield f"ingress from {', '.join(world)} reaches {', '.join(hit)}; admit admin networks or peer blocks only"


def imdsv2_required(t: str, p: Props) -> Iterator[str]:
    if t == "aws:ec2/instance:Instance":
        meta = p.get("metadataOptions") or {}
        if meta.get("httpTokens") != "required":
            yield "instance metadata must require IMDSv2 tokens (metadataOptions.httpTokens = required)"
    elif t == "aws:ec2/launchTemplate:LaunchTemplate":
        if (p.get("metadataOptions") or {}).get("httpTokens") != "required":
            yield "launch template must require IMDSv2 tokens"


def ebs_encrypted(t: str, p: Props) -> Iterator[str]:
    if t == "aws:ebs/volume:Volume" and p.get("encrypted") is not True:
        yield "EBS volume must be encrypted"
    if t == "aws:ec2/instance:Instance":
        if (p.get("rootBlockDevice") or {}).get("encrypted") is not True:
            yield "root volume must be encrypted (rootBlockDevice.encrypted)"
        for dev in p.get("ebsBlockDevices") or []:
            if dev.get("encrypted") is not True:
                yield f"block device {dev.get('deviceName')} must be encrypted"


def brokers_private(t: str, p: Props) -> Iterator[str]:
    if t == "aws:ec2/instance:Instance" and (p.get("tags") or {}).get("Role") in ("core", "replicant"):
        if p.get("associatePublicIpAddress") is not False:
            yield "broker hosts must not have a public IP (associatePublicIpAddress = false)"


def tls12_listeners(t: str, p: Props) -> Iterator[str]:
    if t == "aws:lb/listener:Listener" and p.get("protocol") in ("TLS", "HTTPS"):
        policy = str(p.get("sslPolicy") or "")
        if not TLS12_POLICY.match(policy):
            yield f"TLS listener policy {policy or '(provider default)'} admits TLS below 1.2"
    if t == "aws:elb/loadBalancer:LoadBalancer":
        for lst in p.get("listeners") or []:
            if str(lst.get("lbProtocol", "")).upper() in ("SSL", "HTTPS") and not lst.get("sslCertificateId"):
                yield "a classic ELB TLS listener needs a certificate"
    if t == "aws:elb/loadBalancerPolicy:LoadBalancerPolicy" and p.get("policyTypeName") == "SSLNegotiationPolicyType":
        refs = [a.get("value", "") for a in p.get("policyAttributes") or [] if a.get("name") == "Reference-Security-Policy"]
        if not refs or not all(TLS12_POLICY.match(r) for r in refs):
            yield f"classic ELB negotiation policy {refs or '(custom)'} admits TLS below 1.2"


def environment_tag(t: str, p: Props) -> Iterator[str]:
    if TAGGABLE.match(t) and not (p.get("tags") or {}).get("Environment"):
        yield "every taggable resource carries the stack's Environment tag"


CHECKS: dict[str, tuple[str, Check]] = {
    "no-world-on-cluster-or-admin-ports": (
        "Cluster, admin and stats ports are never open to 0.0.0.0/0 or ::/0.",
        no_world_on_protected_ports,
    ),
    "imdsv2-required": ("EC2 hosts require IMDSv2.", imdsv2_required),
    "ebs-encrypted": ("Every EBS volume is encrypted.", ebs_encrypted),
    "brokers-without-public-ip": ("Broker hosts have no public IP.", brokers_private),
    "tls12-listeners": ("TLS listeners use TLS 1.2+ policies.", tls12_listeners),
    "environment-tag": ("Every taggable resource is tagged with the stack's environment.", environment_tag),
}


def _policy(name: str, description: str, check: Check) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: Callable[[str, str | None], None]) -> None:
        for message in check(args.resource_type, dict(args.props)):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


POLICIES = [_policy(name, description, check) for name, (description, check) in CHECKS.items()]
