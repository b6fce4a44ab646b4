"""Pure subnet arithmetic: one public and one private subnet per availability zone."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SubnetPlan:
    az_index: int
    public: str
    private: str


def plan_subnets(vpc_cidr: str, azs: int, subnet_bits: int | None = None) -> list[SubnetPlan]:
    """Split ``vpc_cidr`` into equal blocks: public subnets first (one per AZ), then private ones.

    ``subnet_bits`` extra prefix bits per subnet; by default the fewest that hold 2 x azs subnets.
    Raises ValueError when the block cannot hold them or a subnet would be smaller than /28
    (AWS's minimum, with 5 addresses reserved per subnet).
    """
    if azs < 1:
        raise ValueError("needs at least one availability zone")
    vpc = ipaddress.ip_network(vpc_cidr, strict=True)
    needed = 2 * azs
    bits = subnet_bits if subnet_bits is not None else max(1, math.ceil(math.log2(needed)))
    if 2**bits < needed:
        raise ValueError(f"{vpc_cidr} split by {bits} bits holds {2**bits} subnets, {needed} are needed")
    new_prefix = vpc.prefixlen + bits
    if new_prefix > 28:
        raise ValueError(f"{vpc_cidr} is too small for {needed} subnets: each would be /{new_prefix}, AWS's smallest is /28")
    blocks = list(vpc.subnets(new_prefix=new_prefix))
    return [SubnetPlan(i, str(blocks[i]), str(blocks[azs + i])) for i in range(azs)]


def overlaps(a: str, b: str) -> bool:
    return ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b))
