"""The organisation's rules as code. Each check reads a resource's engine-side properties
(camelCase, as the offline plan shows them) and reports a violation in one sentence.

Pure functions over (type, props): the tests run them against every shipped stack's offline plan
and against deliberately bad resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy
from pulumi_policy.proxy import UnknownValueError

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


# During `pulumi preview` an input that depends on another resource's output is unknown.
# pulumi-policy hands a rule its props wrapped so that *reading* an unknown value raises
# UnknownValueError (pulumi/pulumi-policy v1.21.0 sdk/python/lib/pulumi_policy/proxy.py:97-120,
# sentinels :19-52), and turns that exception into one ADVISORY "can't run policy … during preview"
# diagnostic for the whole rule (policy.py:997-1022). Copying the props (`dict(props)`) reads every
# key, so one unknown `subnetId` silenced every rule. The checks below therefore read only the keys
# they judge, and each independent part of a check runs on its own (_parts): a violation that is
# decidable is reported even when another part meets an unknown. When the key a rule judges is
# itself unknown, the first UnknownValueError is raised again after every decidable part ran: the
# rule is then advisory for that resource in the preview (pulumi-policy's own behaviour) and runs
# again, mandatory, on `pulumi up`, where the engine has resolved the value before the step.


def _parts(*parts: Callable[[], Iterable[str]]) -> Iterator[str]:
    unknown: UnknownValueError | None = None
    for part in parts:
        try:
            yield from part()
        except UnknownValueError as e:
            unknown = unknown or e
    if unknown is not None:
        raise unknown


def _known_items(seq: Any, unknown: list[UnknownValueError]) -> Iterator[Any]:
    """The elements of a list input that are known; the first unknown one is noted in `unknown`."""
    for i in range(len(seq or [])):
        try:
            yield seq[i]
        except UnknownValueError as e:
            unknown.append(e)


def _world_rule(frm_to: Callable[[], tuple[Any, Any]], sources: list[Callable[[], Any]]) -> Iterator[str]:
    # The sources first (each a CIDR or a list of CIDRs): a rule whose known sources hold no world
    # block passes whatever its ports; one whose ports are unknown is undecided.
    unknown: list[UnknownValueError] = []
    cidrs: list[Any] = []
    for source in sources:
        try:
            value = source()
        except UnknownValueError as e:
            unknown.append(e)
            continue
        cidrs += [value] if isinstance(value, str) or value is None else list(_known_items(value, unknown))
    world = sorted({str(c) for c in cidrs if c} & WORLD)
    if world:
        hit = _ports(*frm_to())
        if hit:
            yield f"ingress from {', '.join(world)} reaches {', '.join(hit)}; admit admin networks or peer blocks only"
            return
    if unknown:
        raise unknown[0]


def no_world_on_protected_ports(t: str, p: Props) -> Iterator[str]:
    if t == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":

        def frm_to() -> tuple[Any, Any]:
            if str(p.get("ipProtocol", "tcp")) == "-1":
                return 0, 65535
            return p.get("fromPort"), p.get("toPort")

        yield from _parts(lambda: _world_rule(frm_to, [lambda: p.get("cidrIpv4"), lambda: p.get("cidrIpv6")]))
    elif t == "aws:ec2/securityGroupRule:SecurityGroupRule" and p.get("type") == "ingress":
        yield from _parts(
            lambda: _world_rule(
                lambda: (p.get("fromPort"), p.get("toPort")), [lambda: p.get("cidrBlocks"), lambda: p.get("ipv6CidrBlocks")]
            )
        )
    elif t == "aws:ec2/securityGroup:SecurityGroup":
        unknown: list[UnknownValueError] = []
        rules = list(_known_items(p.get("ingress"), unknown))

        def one(r: Any) -> Callable[[], Iterator[str]]:
            return lambda: _world_rule(
                lambda: (r.get("fromPort"), r.get("toPort")), [lambda: r.get("cidrBlocks"), lambda: r.get("ipv6CidrBlocks")]
            )

        def rest() -> Iterator[str]:
            if unknown:
                raise unknown[0]
            yield from ()

        yield from _parts(*[one(r) for r in rules], rest)


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

        def root() -> Iterator[str]:
            if (p.get("rootBlockDevice") or {}).get("encrypted") is not True:
                yield "root volume must be encrypted (rootBlockDevice.encrypted)"

        def extra() -> Iterator[str]:
            unknown: list[UnknownValueError] = []
            for dev in _known_items(p.get("ebsBlockDevices"), unknown):
                if dev.get("encrypted") is not True:
                    yield f"block device {dev.get('deviceName')} must be encrypted"
            if unknown:
                raise unknown[0]

        yield from _parts(root, extra)


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
        unknown: list[UnknownValueError] = []

        def one(lst: Any) -> Callable[[], Iterator[str]]:
            def check() -> Iterator[str]:
                if str(lst.get("lbProtocol", "")).upper() in ("SSL", "HTTPS") and not lst.get("sslCertificateId"):
                    yield "a classic ELB TLS listener needs a certificate"

            return check

        def rest() -> Iterator[str]:
            if unknown:
                raise unknown[0]
            yield from ()

        yield from _parts(*[one(lst) for lst in _known_items(p.get("listeners"), unknown)], rest)
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
        # args.props as pulumi-policy hands it (unknown-checking proxy), never copied: see _parts.
        for message in check(args.resource_type, args.props):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


POLICIES = [_policy(name, description, check) for name, (description, check) in CHECKS.items()]
