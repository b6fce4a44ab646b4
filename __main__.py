"""mqtt-cluster: a production MQTT broker cluster per stack. Wiring only; see components/."""

import pulumi
import pulumi_aws as aws

from components import firewall
from components.network import Network, NetworkArgs
from components.security_groups import SecurityGroups, SecurityGroupsArgs
from components.settings import load

cfg = load()  # every check happens here, before any resource is registered
tags = cfg.base_tags

if cfg.role == "regional":
    zones = aws.get_availability_zones(state="available").names
    if len(zones) < cfg.network.azs:
        raise pulumi.RunError(f"{cfg.region} offers this account {len(zones)} zones; network.azs asks for {cfg.network.azs}")
    net = Network(
        "net",
        NetworkArgs(
            cidr=cfg.network.cidr, azs=zones[: cfg.network.azs], nat=cfg.network.nat, subnet_bits=cfg.network.subnet_bits, tags=tags
        ),
    )
    sgs = SecurityGroups(
        "sg",
        SecurityGroupsArgs(vpc_id=net.vpc_id, groups=firewall.groups(cfg), rules=firewall.rules(cfg), tags=tags),
    )
    pulumi.export("region", cfg.region)
    pulumi.export("vpc_id", net.vpc_id)
    pulumi.export("vpc_cidr", cfg.network.cidr)
    pulumi.export("private_route_table_ids", net.private_route_table_ids)
    pulumi.export("broker_security_group_id", sgs.ids["broker"])
