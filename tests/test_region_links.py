"""Multi-region: regional stacks linked by the global stack (mock engine over the whole program,
references resolved from the regional stacks' own offline plans)."""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pulumi
import pytest

from components.config import ConfigError, parse
from components.links import CLUSTER_OUTPUTS, REQUIRED_OUTPUTS, check, load_region, pairs
from components.renderers.bridges import Peer, bridge_hocon
from components.renderers.nodes import node_specs, seed
from components.renderers.scripts import node_script
from tests.conftest import ROOT, plan_of, stack_config
from tools import mockengine

PROD = ["prod-eu-central-1", "prod-us-east-1", "prod-ap-southeast-1", "prod-ap-east-1"]
PCX = "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"
ACCEPT = "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter"
ROUTE = "aws:ec2/route:Route"
RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ZONE_ASSOC = "aws:route53/zoneAssociation:ZoneAssociation"
RECORD = "aws:route53/record:Record"
JOIN = "command:remote:Command"
FAKES = Path(__file__).parent / "fakes"


def regional(stack):
    doc = mockengine.read_stack_file(mockengine.stack_file(stack))["config"]
    return doc["aws:region"], doc["mqtt-cluster:network"]["cidr"]


def link_plan(program, stacks, **links):
    base = {
        "stacks": stacks,
        "mode": "cluster",
        "primary": stacks[0],
        "global_hostname": "mqtt.example.com",
        "hosted_zone_id": "Z0EXAMPLE0PRODZONE",
    }
    return program("prod-global", links={**base, **links})


def test_four_regions_across_asia_us_and_europe_with_distinct_cidrs():
    regions = {s: regional(s) for s in PROD}
    assert {r for r, _ in regions.values()} == {"eu-central-1", "us-east-1", "ap-southeast-1", "ap-east-1"}
    for (a, (_, ca)), (b, (_, cb)) in itertools.combinations(regions.items(), 2):
        assert not ipaddress.ip_network(ca).overlaps(ipaddress.ip_network(cb)), (a, b)


@pytest.mark.parametrize("stack", PROD)
def test_every_regional_stack_exports_what_peers_need(stack):
    out = plan_of(stack).outputs
    missing = [k for k in (*REQUIRED_OUTPUTS, *CLUSTER_OUTPUTS) if k not in out]
    assert not missing
    assert out["deploy_private_key"] == "[secret]" and out["cookie"] == "[secret]"
    assert out["vpc_cidr"] == regional(stack)[1] and out["region"] == regional(stack)[0]
    assert len(out["private_route_table_ids"]) == 3 and len(out["node_addresses"]) == 3
    # The linking stack's commands reach each node by its instance id, in node order.
    instances = {
        r.inputs["tags"]["Name"].split(".")[0]: r.id
        for r in plan_of(stack).of_type("aws:ec2/instance:Instance")
        if "Node" in r.inputs["tags"]
    }
    assert out["node_instance_ids"] == [instances[f"emqx-{i}"] for i in (1, 2, 3)]
    # One cluster: every region carries the primary's cluster name and cookie.
    assert out["cluster_name"] == "mqtt-prod-eu-central-1"
    assert out["cookie_fingerprint"] == plan_of("prod-eu-central-1").outputs["cookie_fingerprint"]
    assert 'name = "mqtt-prod-eu-central-1"' in plan_of(stack).files[("emqx-1", "emqx.conf")]


def test_a_region_that_joins_another_reads_its_cookie_by_stack_reference_and_sets_none_itself():
    plan = plan_of("prod-us-east-1")
    assert not plan.of_type("random:index/randomPassword:RandomPassword") or all(
        r.name != "secrets-cookie" for r in plan.of_type("random:index/randomPassword:RandomPassword")
    )
    params = {p.inputs["name"]: p.inputs for p in plan.of_type("aws:ssm/parameter:Parameter")}
    assert params["/mqtt-cluster/prod-us-east-1/cookie"]["value"] == "[secret]"
    primary = plan_of("prod-eu-central-1")
    assert any(r.name == "secrets-cookie" for r in primary.of_type("random:index/randomPassword:RandomPassword"))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_full_mesh_counts_for_n_regions(program, n):
    stacks = PROD[:n]
    plan = link_plan(program, stacks)
    pairs_n = n * (n - 1) // 2
    assert len(plan.of_type(PCX)) == pairs_n and len(plan.of_type(ACCEPT)) == pairs_n
    assert len(plan.of_type("aws:ec2/peeringConnectionOptions:PeeringConnectionOptions")) == 2 * pairs_n
    assert len(plan.of_type(ROUTE)) == pairs_n * 2 * 3  # both directions, three private tables a side
    assert len(plan.of_type(RULE)) == pairs_n * 2 * 2  # both directions, EMQX's two cluster ports
    assert len(plan.of_type(ZONE_ASSOC)) == n * (n - 1)
    assert len(plan.of_type(JOIN)) == (n - 1) * 3  # every core of every other region joins the primary
    assert len(plan.of_type(RECORD)) == n and len(plan.of_type("aws:route53/healthCheck:HealthCheck")) == n


def test_peering_is_requested_in_one_region_and_accepted_in_the_other():
    plan = plan_of("prod-global")
    outs = {s: plan_of(s).outputs for s in PROD}
    by_vpc = {o["vpc_id"]: s for s, o in outs.items()}
    accepters = {a.inputs["vpcPeeringConnectionId"]: a for a in plan.of_type(ACCEPT)}
    seen = set()
    for pcx in plan.of_type(PCX):
        a, b = by_vpc[pcx.inputs["vpcId"]], by_vpc[pcx.inputs["peerVpcId"]]
        assert pcx.inputs["region"] == outs[a]["region"] and pcx.inputs["peerRegion"] == outs[b]["region"]
        assert pcx.inputs["autoAccept"] is False
        accept = accepters[pcx.id]
        assert accept.inputs["region"] == outs[b]["region"] and accept.inputs["autoAccept"] is True
        seen.add(frozenset((a, b)))
    assert seen == {frozenset(p) for p in itertools.combinations(PROD, 2)}
    dns = plan.of_type("aws:ec2/peeringConnectionOptions:PeeringConnectionOptions")
    assert all((d.inputs.get("requester") or d.inputs.get("accepter")) == {"allowRemoteVpcDnsResolution": True} for d in dns)


def test_routes_point_at_the_peer_cidr_from_every_private_table():
    plan = plan_of("prod-global")
    outs = {s: plan_of(s).outputs for s in PROD}
    accept_ids = {a.id for a in plan.of_type(ACCEPT)}
    table_owner = {t: s for s, o in outs.items() for t in o["private_route_table_ids"]}
    got: dict[str, set[str]] = {s: set() for s in PROD}
    for r in plan.of_type(ROUTE):
        owner = table_owner[r.inputs["routeTableId"]]
        assert r.inputs["region"] == outs[owner]["region"]
        assert r.inputs["vpcPeeringConnectionId"] in accept_ids
        dest = r.inputs["destinationCidrBlock"]
        assert dest != outs[owner]["vpc_cidr"]
        got[owner].add(dest)
    for s in PROD:
        assert got[s] == {outs[p]["vpc_cidr"] for p in PROD if p != s}
    # Each table gets one route per peer.
    per_table = [r.inputs["routeTableId"] for r in plan.of_type(ROUTE)]
    assert all(per_table.count(t) == 3 for t in set(per_table))


def test_only_the_cluster_ports_cross_and_only_from_the_peer_vpc():
    plan = plan_of("prod-global")
    outs = {s: plan_of(s).outputs for s in PROD}
    sg_owner = {o["broker_security_group_id"]: s for s, o in outs.items()}
    for r in plan.of_type(RULE):
        i = r.inputs
        owner = sg_owner[i["securityGroupId"]]
        assert (i["fromPort"], i["toPort"]) in {(4370, 4370), (5370, 5370)}
        assert i["cidrIpv4"] in {outs[p]["vpc_cidr"] for p in PROD if p != owner}
        assert i["region"] == outs[owner]["region"] and i["ipProtocol"] == "tcp"


def test_private_zones_are_associated_with_every_other_vpc():
    plan = plan_of("prod-global")
    outs = {s: plan_of(s).outputs for s in PROD}
    pairs_seen = {(a.inputs["zoneId"], a.inputs["vpcId"], a.inputs["vpcRegion"]) for a in plan.of_type(ZONE_ASSOC)}
    want = {(outs[a]["private_zone_id"], outs[b]["vpc_id"], outs[b]["region"]) for a in PROD for b in PROD if a != b}
    assert pairs_seen == want


def test_joins_run_the_shared_script_against_the_primary_seed_after_the_network():
    plan = plan_of("prod-global")
    primary_seed = seed(node_specs(load_region(PROD[0], source="x", key="x").cfg))
    network = {r.urn for r in plan.resources if r.type in (ACCEPT, ROUTE, RULE, ZONE_ASSOC)}
    joins = plan.of_type(JOIN)
    for j in joins:
        stack = next(s for s in PROD[1:] if f"-join-{s}-" in j.name)
        host = j.name.rsplit("-", 2)[-2] + "-" + j.name.rsplit("-", 1)[-1]
        assert j.inputs["stdin"].count(f"SEED='{primary_seed.node_name}'") == 1
        assert f"SELF='emqx@{host}.{stack}.mqtt.internal'" in j.inputs["stdin"]
        assert j.inputs["create"] == "sudo bash -s -- join"
        assert j.inputs["delete"].startswith("echo "), "removing the link must not tear a region out of the cluster"
        assert network <= set(j.dependencies)
        assert j.inputs["connection"] == "[secret]", "the connection carries the region's deploy key"
    node = node_specs(parse({"brokers": {"cluster_with": PROD[0]}}, stack=PROD[1], source="x", region="us-east-1"))[1]
    expected = node_script("emqx", node, primary_seed, container="broker")
    assert any(j.inputs["stdin"] == expected for j in joins)


def test_latency_records_with_health_checks_over_each_regional_endpoint():
    plan = plan_of("prod-global")
    checks = {c.id: c for c in plan.of_type("aws:route53/healthCheck:HealthCheck")}
    regions = set()
    for r in plan.of_type(RECORD):
        stack = r.inputs["setIdentifier"]
        (policy,) = r.inputs["latencyRoutingPolicies"]
        assert policy["region"] == plan_of(stack).outputs["region"]
        assert r.inputs["name"] == "mqtt.example.com" and r.inputs["type"] == "CNAME"
        assert r.inputs["records"] == [plan_of(stack).outputs["mqtt_host"]]
        check_ = checks[r.inputs["healthCheckId"]]
        assert check_.inputs["fqdn"] == plan_of(stack).outputs["mqtt_host"] and check_.inputs["port"] == 8883
        regions.add(policy["region"])
    assert len(regions) == 4
    # The regional certificates also cover the global name.
    for s in PROD:
        cert = plan_of(s).of_type("aws:acm/certificate:Certificate")[0]
        assert cert.inputs["subjectAlternativeNames"] == ["mqtt.example.com"]
        # The shared name's validation record has one owner (the primary); the others wait for it.
        owned = 2 if s == "prod-eu-central-1" else 1
        assert len([r for r in plan_of(s).of_type(RECORD) if "cert-validation" in r.name]) == owned
        (valid,) = plan_of(s).of_type("aws:acm/certificateValidation:CertificateValidation")
        assert len(valid.inputs["validationRecordFqdns"]) == 2


def test_bridge_mode_peers_without_opening_cluster_ports_and_loads_bridges_on_each_seed(program, bridged_stacks):
    bridged_stacks("dev", ["plant/#", "alerts/#"])
    bridged_stacks("edge", ["#"])
    plan = program("prod-global", links={"stacks": ["dev", "edge"], "mode": "bridge", "bridge_topics": ["plant/#", "alerts/+"]})
    assert len(plan.of_type(PCX)) == 1 and len(plan.of_type(ROUTE)) == 3 + 2  # dev: 3 tables, edge: 2
    assert plan.of_type(RULE) == [] and plan.of_type(ZONE_ASSOC) == []
    bridges = {c.name: c for c in plan.of_type(JOIN)}
    assert sorted(bridges) == ["links-bridges-dev", "links-bridges-edge"]
    dev = bridges["links-bridges-dev"].inputs
    assert dev["create"] == "sudo bash -s -- apply" and dev["delete"] == "sudo bash -s -- disable"
    assert dev["stdin"] == "[secret]"  # it carries edge's bridge password
    # dev bridges to edge's public TLS endpoint, trusting edge's certificate chain.
    script = plan.files[("dev/seed", "bridges.sh")]
    assert '"mqtt.edge.example.com:8883"' in script
    assert 'SELECT * FROM \\"plant/#\\", \\"alerts/+\\"' in script
    assert '"mqtt.example.com' not in script


def test_hub_mesh_peers_every_region_with_the_primary_only():
    links = parse({"role": "global", "links": {"stacks": PROD, "mesh": "hub", "primary": PROD[2]}}, stack="g", source="x").links
    assert pairs(links) == [(PROD[2], s) for s in PROD if s != PROD[2]]
    full = parse({"role": "global", "links": {"stacks": PROD}}, stack="g", source="x").links
    assert len(pairs(full)) == 6


def test_bridge_configuration_parses_and_never_forwards_what_a_bridge_delivered():
    from pyhocon import ConfigFactory

    peers = [
        Peer("b", "mqtt-b.example.com", None),
        Peer("c", "lb-c.elb.amazonaws.com", "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"),
    ]
    conf = ConfigFactory.parse_string(bridge_hocon("a", peers, ["plant/#"]))
    assert set(conf["connectors"]["mqtt"]) == {"to-b", "to-c"}
    c = conf["connectors"]["mqtt"]["to-c"]
    # `conf load` applies cluster-wide: the CA travels inline (every node's connector pre-update check
    # saves it: emqx/emqx v5.8.6 apps/emqx/src/emqx_tls_lib.erl:381-385), never as a seed-only file path.
    assert c["ssl"]["verify"] == "verify_peer" and c["ssl"]["cacertfile"] == peers[1].ca_pem
    assert "/opt/emqx/data" not in bridge_hocon("a", peers, ["plant/#"])
    assert conf["connectors"]["mqtt"]["to-b"]["ssl"]["cacertfile"] == "/etc/ssl/certs/ca-certificates.crt"
    assert c["clientid_prefix"] == "mqtt-bridge-a-"
    rule = conf["rule_engine"]["rules"]["to_c"]
    assert "regex_match(clientid, '^mqtt-bridge-') = false" in rule["sql"] and rule["actions"] == ["mqtt:to-c"]
    assert conf["actions"]["mqtt"]["to-b"]["parameters"]["topic"] == "${topic}"


def test_the_bridge_script_loads_and_verifies_through_the_fake_cli(tmp_path):
    from components.renderers.bridges import bridge_script

    peers = [Peer("b", "mqtt-b.example.com", "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")]
    script = tmp_path / "bridges.sh"
    script.write_text(bridge_script("a", peers, ["#"], container="broker"))
    assert subprocess.run(["shellcheck", str(script)], capture_output=True).returncode == 0
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"self": "emqx@a", "seed": "emqx@a", "data_dir": str(tmp_path / "data")}))
    env = {
        "PATH": f"{Path(__file__).parent / 'fakes'}:/usr/bin:/bin",
        "FAKE_STATE": str(state),
        "BRIDGE_DIR": str(tmp_path / "data" / "bridges"),
    }
    proc = subprocess.run(["bash", str(script), "apply"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = json.loads(state.read_text())["calls"]
    assert "exec broker emqx ctl conf load --merge /opt/emqx/data/bridges/links.hocon" in calls
    assert not list((tmp_path / "data" / "bridges").glob("*.pem")), "no CA file on the seed only"
    # A rejected load exits 1 with "Can't merge the new configurations!" (emqx/emqx v5.8.6
    # apps/emqx_conf/src/emqx_conf_cli.erl:505-524, bin/nodetool:154): the command fails with the broker's words.
    state.write_text(json.dumps({"self": "emqx@a", "seed": "emqx@a", "data_dir": str(tmp_path / "data"), "conf_load_fails": True}))
    proc = subprocess.run(["bash", str(script), "apply"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "failed (exit 1): Can't merge the new configurations! Root key: connectors Reason: {cluster_rpc_failed" in proc.stderr


# --- validation: one line naming both stacks and the key --------------------------------------------


def _write(d: Path, name: str, region: str, cidr: str, auth: dict | None = None, **brokers) -> None:
    b = {"count": 3, **brokers}
    doc = {
        "config": {
            "aws:region": region,
            "mqtt-cluster:network": {"cidr": cidr},
            "mqtt-cluster:brokers": b,
            "mqtt-cluster:access": {"admin_cidrs": ["198.51.100.0/24"], "bastion": True},
            **({"mqtt-cluster:auth": auth} if auth else {}),
        }
    }
    (d / f"Pulumi.{name}.yaml").write_text(json.dumps(doc))


def _global(stacks, **links):
    return parse({"role": "global", "links": {"stacks": stacks, **links}}, stack="g", source="stacks/Pulumi.g.yaml")


def test_overlapping_cidrs_are_refused_naming_both_stacks(tmp_path):
    _write(tmp_path, "a", "eu-west-1", "10.1.0.0/16")
    _write(tmp_path, "b", "us-west-2", "10.1.128.0/17")
    with pytest.raises(ConfigError) as e:
        check(_global(["a", "b"]), "stacks/Pulumi.g.yaml", tmp_path)
    assert str(e.value) == (
        "stacks/Pulumi.g.yaml: mqtt-cluster:network.cidr: a (10.1.0.0/16) and b (10.1.128.0/17) overlap; peered VPCs need distinct blocks"
    )


def test_two_stacks_in_one_region_are_a_region_linked_to_itself(tmp_path):
    _write(tmp_path, "a", "eu-west-1", "10.1.0.0/16")
    _write(tmp_path, "b", "eu-west-1", "10.2.0.0/16")
    with pytest.raises(ConfigError, match=r"aws:region: a and b are both in eu-west-1: a region cannot be linked to itself"):
        check(_global(["a", "b"]), "x", tmp_path)
    with pytest.raises(ConfigError, match=r"links.stacks: a is linked to itself"):
        _global(["a", "a"])


def test_vernemq_version_and_cookie_mismatches_in_cluster_mode(tmp_path):
    _write(tmp_path, "a", "eu-west-1", "10.1.0.0/16")
    _write(tmp_path, "v", "us-west-2", "10.2.0.0/16", engine="vernemq", accept_eula=True, cluster_with="a")
    _write(tmp_path, "old", "us-west-2", "10.3.0.0/16", version="5.7.2", cluster_with="a")
    _write(tmp_path, "own", "us-west-2", "10.4.0.0/16")
    with pytest.raises(ConfigError, match=r"links.mode: v runs vernemq: its nodes already form a regional cluster"):
        check(_global(["a", "v"], mode="cluster"), "x", tmp_path)
    with pytest.raises(ConfigError, match=r"brokers.version: old runs 5.7.2, a runs 5.8.6"):
        check(_global(["a", "old"], mode="cluster"), "x", tmp_path)
    with pytest.raises(ConfigError, match=r"mqtt-cluster:cookie: own and a each generate their own Erlang cookie"):
        check(_global(["a", "own"], mode="cluster"), "x", tmp_path)
    # In bridge mode separate cookies are the point.
    _write(tmp_path, "a", "eu-west-1", "10.1.0.0/16", auth={"bridge_topics": ["#"]})
    _write(tmp_path, "own", "us-west-2", "10.4.0.0/16", auth={"bridge_topics": ["#"]})
    assert set(check(_global(["a", "own"], mode="bridge"), "x", tmp_path)) == {"a", "own"}


def test_vernemq_regions_cannot_form_one_cross_region_cluster(tmp_path):
    # Two VerneMQ regions: each is a cluster already; a node with history cannot join another.
    _write(tmp_path, "v1", "eu-west-1", "10.1.0.0/16", engine="vernemq", accept_eula=True)
    _write(tmp_path, "v2", "us-west-2", "10.2.0.0/16", engine="vernemq", accept_eula=True, cluster_with="v1")
    with pytest.raises(ConfigError, match=r"mqtt-cluster:links.mode: v1 runs vernemq: .*non_empty_node"):
        check(_global(["v1", "v2"], mode="cluster"), "x", tmp_path)


def test_a_stack_that_does_not_exist_is_refused_before_any_resource(program, monkeypatch):
    with pytest.raises(pulumi.RunError) as e:
        program("prod-global", links={"stacks": ["prod-eu-central-1", "prod-mars-1"], "mode": "bridge"})
    assert (
        str(e.value)
        == "stacks/Pulumi.prod-global.yaml: mqtt-cluster:links.stacks: prod-mars-1 does not exist (no stacks/Pulumi.prod-mars-1.yaml)"
    )


def test_the_plan_tool_prints_one_line_for_a_cross_stack_problem(tmp_path):
    bad = tmp_path / "Pulumi.g.yaml"
    bad.write_text(
        "config:\n  mqtt-cluster:role: global\n  mqtt-cluster:links:\n    stacks: [prod-us-east-1, vernemq]\n    mode: cluster\n"
    )
    proc = subprocess.run([sys.executable, "-m", "tools.plan", "g", "--config-file", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"{bad}: mqtt-cluster:links.mode: vernemq runs vernemq: its nodes already form a regional cluster, and VerneMQ refuses "
        "to join a node with history (non_empty_node) to another one; cross-region links need emqx"
    )


def _outputs():
    return copy.deepcopy(mockengine.resolve_references(stack_config("prod-global")))


def test_a_referenced_stack_lacking_an_output_is_refused_and_nothing_links(registered_types):
    outs = _outputs()
    del outs["prod-us-east-1"]["private_route_table_ids"]
    registered = registered_types
    registered.clear()  # only what the linking program registers counts
    with pytest.raises(pulumi.RunError) as e:
        mockengine.run_program("prod-global", stack_config("prod-global"), stack_outputs=outs)
    assert str(e.value) == (
        "stacks/Pulumi.prod-global.yaml: mqtt-cluster:links.stacks: prod-us-east-1 has no output 'private_route_table_ids' "
        "(update prod-us-east-1 with this version first)"
    )
    assert not [t for t in registered if t.startswith(("aws:", "command:"))]


def test_cookies_that_differ_at_run_time_are_refused_naming_both_stacks():
    outs = _outputs()
    outs["prod-ap-east-1"]["cookie_fingerprint"] = "0123456789abcdef"
    with pytest.raises(pulumi.RunError, match=r"mqtt-cluster:cookie: prod-ap-east-1 and prod-eu-central-1 use different Erlang cookies"):
        mockengine.run_program("prod-global", stack_config("prod-global"), stack_outputs=outs)


def test_private_route_tables_carry_no_inline_routes_so_peering_routes_survive_regional_updates():
    plan = plan_of("prod-us-east-1")
    tables = plan.of_type("aws:ec2/routeTable:RouteTable")
    assert tables and all(not t.inputs.get("routes") for t in tables)
    defaults = [r for r in plan.of_type(ROUTE) if r.inputs["destinationCidrBlock"] == "0.0.0.0/0"]
    assert len(defaults) == 4  # three private tables through their zone's NAT, one public through the IGW


def _bridge_env(tmp_path: Path, state: dict, **extra) -> tuple[dict, Path]:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"self": "emqx@a", "seed": "emqx@a", "data_dir": str(tmp_path / "data"), **state}))
    env = {
        "PATH": f"{Path(__file__).parent / 'fakes'}:/usr/bin:/bin",
        "FAKE_STATE": str(state_file),
        "BRIDGE_DIR": str(tmp_path / "data" / "bridges"),
        **extra,
    }
    return env, state_file


def test_the_bridges_of_a_removed_peer_are_disabled_and_the_others_kept(tmp_path):
    # `conf load --merge` never deletes (emqx/emqx v5.8.6 apps/emqx_conf/src/emqx_conf_cli.erl:444): the
    # script finds our rules of peers no longer linked in `emqx ctl rules list` and loads them disabled.
    from components.renderers.bridges import bridge_script

    pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"
    before = tmp_path / "before.sh"
    before.write_text(
        bridge_script("a", [Peer("b", "mqtt-b.example.com", pem), Peer("c-1", "mqtt-c.example.com", None)], ["#"], container="broker")
    )
    after = tmp_path / "after.sh"
    after.write_text(bridge_script("a", [Peer("b", "mqtt-b.example.com", pem)], ["#"], container="broker"))
    assert subprocess.run(["shellcheck", "-S", "style", str(after)], capture_output=True).returncode == 0
    env, state_file = _bridge_env(tmp_path, {})
    for script in (before, after):
        proc = subprocess.run(["bash", str(script), "apply"], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    conf = json.loads(state_file.read_text())["conf"]
    assert conf["connectors.mqtt.to-b"]["enable"] == "true"
    assert conf["actions.mqtt.to-b"]["enable"] == "true"
    assert conf["rule_engine.rules.to_b"]["enable"] == "true"
    assert conf["connectors.mqtt.to-c-1"]["enable"] == "false"
    assert conf["actions.mqtt.to-c-1"]["enable"] == "false"
    assert conf["rule_engine.rules.to_c_1"]["enable"] == "false"
    assert 'server = "mqtt-c.example.com:8883"' in conf["connectors.mqtt.to-c-1"]["body"]
    assert "disabling the bridge to c-1 (mqtt-c.example.com:8883): no longer linked" in proc.stderr
    # The disabled file is valid HOCON naming only the removed peer.
    from pyhocon import ConfigFactory

    stale = ConfigFactory.parse_file(str(tmp_path / "data" / "bridges" / "links-stale.hocon"))
    assert list(stale["connectors"]["mqtt"]) == ["to-c-1"] and list(stale["rule_engine"]["rules"]) == ["to_c_1"]
    assert stale["rule_engine"]["rules"]["to_c_1"]["actions"] == ["mqtt:to-c-1"]
    # A second run finds nothing more to disable.
    proc = subprocess.run(["bash", str(after), "apply"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "disabling" not in proc.stderr


def test_a_hung_conf_load_is_bounded(tmp_path):
    from components.renderers.bridges import bridge_script

    script = tmp_path / "bridges.sh"
    script.write_text(bridge_script("a", [Peer("b", "mqtt-b.example.com", None)], ["#"], container="broker"))
    env, _ = _bridge_env(tmp_path, {"hang": {"emqx ctl conf load": 25}}, CLI_TIMEOUT="1")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(script), "apply"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "timed out after 1s" in proc.stderr
    assert time.monotonic() - t0 < 8


def test_linked_stack_files_are_read_as_the_cli_reads_them(tmp_path):
    # YAML 1.2 (go-yaml v3): `on` is a string, so the regional model refuses it, naming the regional file.
    (tmp_path / "Pulumi.a.yaml").write_text(
        "config:\n  aws:region: eu-west-1\n  mqtt-cluster:network: {cidr: 10.1.0.0/16}\n  mqtt-cluster:brokers:\n    websocket: on\n"
    )
    _write(tmp_path, "b", "us-west-2", "10.2.0.0/16")
    with pytest.raises(ConfigError, match=r"^stacks/Pulumi.a.yaml: mqtt-cluster:brokers.websocket: must be true or false"):
        check(_global(["a", "b"]), "x", tmp_path)


def test_the_linking_actions_are_in_the_linking_stacks_steps_only(tmp_path):
    from components.rollout import step_script

    node = node_specs(parse({}, stack="dev", source="x", region="eu-central-1"))[1]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"instances": {}}))
    env = {"PATH": f"{FAKES / 'day2'}:/usr/bin:/bin", "FAKE_STATE": str(state), "INSTANCE_ID": "i-2", "POLL": "0.05"}
    for links in (False, True):
        text = step_script(
            stack="dev", node=node, node_script="exit 0", region="eu-central-1", transport="ssm", drain_wait=0, links_step=links
        )
        proc = subprocess.run(["bash", "-c", text, "step", "stays"], env=env, capture_output=True, text=True, timeout=30)
        if links:
            assert proc.returncode == 0 and "stays in the cross-region cluster" in proc.stderr
        else:
            assert proc.returncode != 0 and "usage: " in proc.stderr
    assert "calls" not in json.loads(state.read_text()), "saying that a node stays reaches no host"
