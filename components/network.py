"""Network: a VPC with a public and a private subnet in each availability zone."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.netplan import plan_subnets


@dataclass
class NetworkArgs:
    cidr: str
    """VPC CIDR block."""
    azs: list[str]
    """Availability zone names, one public + one private subnet each."""
    nat: str
    """none | single | per-az."""
    subnet_bits: int | None
    """Extra prefix bits per subnet (None: the fewest that fit)."""
    tags: dict[str, str]
    """Tags every resource carries."""


class Network(pulumi.ComponentResource):
    """VPC, subnets per AZ, internet gateway, NAT per the NAT mode, route tables."""

    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    private_route_table_ids: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        plan = plan_subnets(args.cidr, len(args.azs), args.subnet_bits)
        self.azs = list(args.azs)
        self.cidr = args.cidr

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,  # private zones and node names resolve only with both on
            enable_dns_support=True,
            tags={**tags, "Name": f"{name}-vpc"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-igw"}, opts=child)

        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-public-rt", "Tier": "public"}, opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default", route_table_id=public_rt.id, destination_cidr_block="0.0.0.0/0", gateway_id=igw.id, opts=child
        )

        self.public_subnet_ids, self.private_subnet_ids, self.private_route_table_ids = [], [], []
        nat_ids: list[pulumi.Output[str]] = []
        for p, az in zip(plan, args.azs, strict=True):
            n = p.az_index + 1
            pub = aws.ec2.Subnet(
                f"{name}-public-{n}",
                vpc_id=vpc.id,
                cidr_block=p.public,
                availability_zone=az,
                map_public_ip_on_launch=False,  # only what asks for a public address gets one
                tags={**tags, "Name": f"{name}-public-{n}", "Tier": "public"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{n}-rta", subnet_id=pub.id, route_table_id=public_rt.id, opts=child)
            self.public_subnet_ids.append(pub.id)
            if args.nat == "per-az" or (args.nat == "single" and n == 1):
                eip = aws.ec2.Eip(f"{name}-nat-{n}-eip", domain="vpc", tags={**tags, "Name": f"{name}-nat-{n}"}, opts=child)
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{n}",
                    allocation_id=eip.allocation_id,
                    subnet_id=pub.id,
                    tags={**tags, "Name": f"{name}-nat-{n}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
                nat_ids.append(nat.id)

        for p, az in zip(plan, args.azs, strict=True):
            n = p.az_index + 1
            priv = aws.ec2.Subnet(
                f"{name}-private-{n}",
                vpc_id=vpc.id,
                cidr_block=p.private,
                availability_zone=az,
                tags={**tags, "Name": f"{name}-private-{n}", "Tier": "private"},
                opts=child,
            )
            # Routes are separate resources, never inline: the linking stack adds peering routes to
            # these tables, and inline routes would make every regional update delete them.
            rt = aws.ec2.RouteTable(
                f"{name}-private-{n}-rt",
                vpc_id=vpc.id,
                tags={**tags, "Name": f"{name}-private-{n}-rt", "Tier": "private"},
                opts=child,
            )
            if nat_ids:
                # per-az: each zone egresses through its own NAT, so losing a zone strands nobody else.
                nat_id = nat_ids[p.az_index] if args.nat == "per-az" else nat_ids[0]
                aws.ec2.Route(
                    f"{name}-private-{n}-default",
                    route_table_id=rt.id,
                    destination_cidr_block="0.0.0.0/0",
                    nat_gateway_id=nat_id,
                    opts=child,
                )
            aws.ec2.RouteTableAssociation(f"{name}-private-{n}-rta", subnet_id=priv.id, route_table_id=rt.id, opts=child)
            self.private_subnet_ids.append(priv.id)
            self.private_route_table_ids.append(rt.id)

        self.vpc_id = vpc.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "private_route_table_ids": self.private_route_table_ids,
            }
        )
