import ipaddress

import pytest

from components.netplan import overlaps, plan_subnets


def test_three_azs_in_a_16_get_six_disjoint_subnets_inside_the_vpc():
    plan = plan_subnets("10.10.0.0/16", 3)
    blocks = [ipaddress.ip_network(b) for p in plan for b in (p.public, p.private)]
    assert len(blocks) == 6
    assert all(b.subnet_of(ipaddress.ip_network("10.10.0.0/16")) for b in blocks)
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    assert [p.public for p in plan] == ["10.10.0.0/19", "10.10.32.0/19", "10.10.64.0/19"]
    assert [p.private for p in plan] == ["10.10.96.0/19", "10.10.128.0/19", "10.10.160.0/19"]


def test_two_azs_use_quarters():
    plan = plan_subnets("10.0.0.0/16", 2)
    assert [p.public for p in plan] == ["10.0.0.0/18", "10.0.64.0/18"]
    assert [p.private for p in plan] == ["10.0.128.0/18", "10.0.192.0/18"]


def test_explicit_bits_leave_room_to_grow():
    plan = plan_subnets("10.0.0.0/16", 3, subnet_bits=4)
    assert plan[0].public == "10.0.0.0/20" and plan[2].private == "10.0.80.0/20"


def test_too_small_a_block_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="too small"):
        plan_subnets("10.0.0.0/26", 3)
    with pytest.raises(ValueError, match="holds 4 subnets, 6 are needed"):
        plan_subnets("10.0.0.0/16", 3, subnet_bits=2)


def test_overlap_helper():
    assert overlaps("10.0.0.0/16", "10.0.128.0/17")
    assert not overlaps("10.0.0.0/16", "10.1.0.0/16")
