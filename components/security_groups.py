"""SecurityGroups: one group per role, every ingress rule from the firewall table."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.firewall import Rule

_DESCRIPTIONS = {
    "front": "MQTT load balancer / TLS-terminating proxies",
    "broker": "MQTT broker nodes",
    "bastion": "SSH jump host",
}


@dataclass
class SecurityGroupsArgs:
    vpc_id: pulumi.Input[str]
    """The VPC the groups live in."""
    groups: list[str]
    """Group roles to create (front, broker, bastion)."""
    rules: list[Rule]
    """Ingress rules, from components.firewall.rules()."""
    tags: dict[str, str]


class SecurityGroups(pulumi.ComponentResource):
    """The firewall: a reviewer reads it in components/firewall.py, this only applies it."""

    ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:SecurityGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.ids = {}
        for role in args.groups:
            sg = aws.ec2.SecurityGroup(
                f"{name}-{role}",
                vpc_id=args.vpc_id,
                description=_DESCRIPTIONS[role],
                tags={**args.tags, "Name": f"{name}-{role}", "Role": role},
                opts=child,
            )
            self.ids[role] = sg.id
            # Egress stays open: image pulls through NAT, SSM, the brokers' answers.
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{role}-egress",
                security_group_id=sg.id,
                ip_protocol="-1",
                cidr_ipv4="0.0.0.0/0",
                description="all outbound",
                tags={**args.tags, "Name": f"{role} egress"},
                opts=child,
            )

        for rule in args.rules:
            sources = [rule.source] if isinstance(rule.source, str) else list(rule.source)
            for src in sources:
                common = dict(
                    security_group_id=self.ids[rule.group],
                    ip_protocol=rule.protocol,
                    from_port=rule.from_port,
                    to_port=rule.to_port,
                    description=rule.reason,
                    tags={**args.tags, "Name": f"{rule.group}-{rule.ports}"},
                )
                if rule.from_group:
                    common["referenced_security_group_id"] = self.ids[src]
                elif ":" in src:
                    common["cidr_ipv6"] = src
                else:
                    common["cidr_ipv4"] = src
                # Named by what it admits, not by position, so adding a rule never renames another.
                label = src if rule.from_group else src.replace("/", "_").replace(":", "-")
                aws.vpc.SecurityGroupIngressRule(f"{name}-{rule.group}-{rule.ports}-from-{label}", **common, opts=child)

        self.register_outputs({"ids": self.ids})
