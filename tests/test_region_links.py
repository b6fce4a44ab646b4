"""Multi-region: regional stacks linked by the global stack (mock engine over the whole program,
references resolved from the regional stacks' own offline plans)."""

from __future__ import annotations

import base64
import copy
import gzip
import ipaddress
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pulumi
import pytest

from components.config import ConfigError, parse
from components.links import REQUIRED_OUTPUTS, SSH_OUTPUTS, check, load_region, pairs
from components.renderers.bridges import Peer, bridge_hocon, bridge_passwords
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
JOIN = "command:local:Command"
PARAMETER = "aws:ssm/parameter:Parameter"
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
    missing = [k for k in (*REQUIRED_OUTPUTS, *SSH_OUTPUTS) if k not in out]
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


def _unpacked(step: str) -> str:
    """The node script a rendered step script carries (NODE_SCRIPT_GZ: gzip, then base64)."""
    packed = re.search(r"^NODE_SCRIPT_GZ='([A-Za-z0-9+/=]+)'", step, flags=re.M)
    assert packed, "no node script in the step"
    return gzip.decompress(base64.b64decode(packed.group(1))).decode()


def test_joins_run_the_shared_script_against_the_primary_seed_through_ssm_in_each_nodes_region():
    plan = plan_of("prod-global")
    primary_seed = seed(node_specs(load_region(PROD[0], source="x", key="x").cfg))
    network = {r.urn for r in plan.resources if r.type in (ACCEPT, ROUTE, RULE, ZONE_ASSOC)}
    joins = plan.of_type(JOIN)
    assert len(joins) == 9 and not plan.of_type("command:remote:Command")
    for j in joins:
        stack = next(s for s in PROD[1:] if f"-join-{s}-" in j.name)
        host = j.name.removeprefix(f"links-join-{stack}-")
        index = int(host.rsplit("-", 1)[1]) - 1
        outs = plan_of(stack).outputs
        # The node's own instance in its own region, from the regional stack's outputs; SSM needs
        # no key, so the command holds none.
        assert j.inputs["environment"] == {
            "INSTANCE_ID": outs["node_instance_ids"][index],
            "ADDRESS": outs["node_addresses"][index],
            "REGION": outs["region"],
        }
        bash, flag, step, name = j.inputs["interpreter"]
        assert (bash, flag, name) == ("/bin/bash", "-c", f"mqtt-cluster-{stack}-{host}")
        assert "TRANSPORT=${TRANSPORT:-'ssm'}" in step and f"REGION=${{REGION:-'{outs['region']}'}}" in step
        script = _unpacked(step)
        assert script.count(f"SEED='{primary_seed.node_name}'") == 1
        assert f"SELF='emqx@{host}.{stack}.mqtt.internal'" in script
        assert (j.inputs["create"], j.inputs["update"]) == ("join", "join")
        assert j.inputs["delete"] == "stays", "removing the link must not tear a region out of the cluster"
        assert network <= set(j.dependencies)
    node = node_specs(parse({"brokers": {"cluster_with": PROD[0]}}, stack=PROD[1], source="x", region="us-east-1"))[1]
    expected = node_script("emqx", node, primary_seed, container="broker")
    assert _unpacked(plan.named(f"links-join-{PROD[1]}-emqx-2").inputs["interpreter"][2]) == expected


def _edit_stack(tmp_path: Path, stack: str, section: str, values: dict) -> None:
    """Merge ``values`` into one section of a stack file in the scratch copy (fixture bridged_stacks)."""
    import yaml

    path = tmp_path / "stacks" / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(path.read_text())
    key = f"mqtt-cluster:{section}"
    doc["config"][key] = {**doc["config"].get(key, {}), **values}
    path.write_text(yaml.safe_dump(doc))


def test_a_region_that_chose_ssh_is_reached_through_its_bastion_with_its_key_as_a_secret(bridged_stacks, tmp_path):
    _edit_stack(tmp_path, "prod-us-east-1", "access", {"transport": "ssh"})
    config = stack_config("prod-global")
    config["mqtt-cluster:links"] = json.dumps({"stacks": PROD[:3], "mode": "cluster", "primary": PROD[0]})
    outs = mockengine.resolve_references(config)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nSentinel-deploy-key\n-----END OPENSSH PRIVATE KEY-----\n"
    outs["prod-us-east-1"]["deploy_private_key"] = key  # as a real StackReference would hand it over
    plan = mockengine.run_program("prod-global", config, stack_outputs=outs)
    joins = {j.name: j for j in plan.of_type(JOIN)}
    ssh, east = joins["links-join-prod-us-east-1-emqx-1"], outs["prod-us-east-1"]
    assert "TRANSPORT=${TRANSPORT:-'ssh'}" in ssh.inputs["interpreter"][2]
    assert ssh.inputs["environment"] == {
        "INSTANCE_ID": east["node_instance_ids"][0],
        "ADDRESS": east["node_addresses"][0],
        "REGION": "us-east-1",
        "SSH_USER": east["ssh_user"],
        "BASTION": east["bastion_ip"],
        "SSH_PRIVATE_KEY": "[secret]",
    }
    assert all("Sentinel-deploy-key" not in json.dumps(r.inputs) for r in plan.resources)
    ssm = joins["links-join-prod-ap-southeast-1-emqx-1"]
    assert "TRANSPORT=${TRANSPORT:-'ssm'}" in ssm.inputs["interpreter"][2]
    assert set(ssm.inputs["environment"]) == {"INSTANCE_ID", "ADDRESS", "REGION"}
    # A region reached over SSH must export how; one that does not is refused naming the output.
    del outs["prod-us-east-1"]["bastion_ip"]
    with pytest.raises(pulumi.RunError, match=r"links.stacks: prod-us-east-1 has no output 'bastion_ip'"):
        mockengine.run_program("prod-global", config, stack_outputs=outs)
    del outs["prod-ap-southeast-1"]["bastion_ip"]  # not needed through SSM
    outs["prod-us-east-1"]["bastion_ip"] = "203.0.113.9"
    mockengine.run_program("prod-global", config, stack_outputs=outs)


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


def _bridge_config(stacks: list[str], **links) -> dict[str, str]:
    config = stack_config("prod-global")
    config["mqtt-cluster:links"] = json.dumps({"stacks": stacks, "mode": "bridge", **links})
    return config


def test_bridge_mode_peers_without_opening_cluster_ports_and_loads_bridges_on_each_seed(bridged_stacks):
    bridged_stacks("dev", ["plant/#", "alerts/#"])
    bridged_stacks("edge", ["#"])
    config = _bridge_config(["dev", "edge"], bridge_topics=["plant/#", "alerts/+"])
    outs = mockengine.resolve_references(config)
    plan = mockengine.run_program("prod-global", config, stack_outputs=outs)
    assert len(plan.of_type(PCX)) == 1 and len(plan.of_type(ROUTE)) == 3 + 2  # dev: 3 tables, edge: 2
    assert plan.of_type(RULE) == [] and plan.of_type(ZONE_ASSOC) == []
    bridges = {c.name: c for c in plan.of_type(JOIN)}
    assert sorted(bridges) == ["links-bridges-dev", "links-bridges-edge"]
    params = {p.name: p for p in plan.of_type(PARAMETER)}
    for stack in ("dev", "edge"):
        cmd, out = bridges[f"links-bridges-{stack}"], outs[stack]
        assert (cmd.inputs["create"], cmd.inputs["update"], cmd.inputs["delete"]) == ("bridges-apply", "bridges-apply", "bridges-disable")
        # The region's seed, by instance id, in the region's own Systems Manager.
        assert cmd.inputs["environment"] == {
            "INSTANCE_ID": out["node_instance_ids"][0],
            "ADDRESS": out["node_addresses"][0],
            "REGION": out["region"],
            "PASSWORDS_VERSION": "1",  # a new version of the passwords runs apply again
        }
        # The peers' passwords: one SecureString in the region, where its hosts may read them.
        param = params[f"links-bridge-passwords-{stack}"]
        assert param.inputs["region"] == out["region"] and param.inputs["type"] == "SecureString"
        assert param.inputs["name"] == out["bridge_passwords_parameter"] == f"/mqtt-cluster/{stack}/links/bridge-passwords"
        assert param.inputs["value"] == "[secret]"
        assert param.urn in cmd.dependencies, "the passwords are in place before the bridges load"
        step = cmd.inputs["interpreter"][2]
        assert _unpacked(step) == plan.files[(f"{stack}/seed", "bridges.sh")]
    # dev bridges to edge's public TLS endpoint, trusting edge's certificate chain.
    script = plan.files[("dev/seed", "bridges.sh")]
    assert '"mqtt.edge.example.com:8883"' in script
    assert 'SELECT * FROM \\"plant/#\\", \\"alerts/+\\"' in script
    assert '"mqtt.example.com' not in script
    assert "PASSWORDS='/mqtt-cluster/dev/links/bridge-passwords'" in script and f"REGION='{outs['dev']['region']}'" in script


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


def _write(d: Path, name: str, region: str, cidr: str, auth: dict | None = None, access: dict | None = None, **brokers) -> None:
    b = {"count": 3, **brokers}
    doc = {
        "config": {
            "aws:region": region,
            "mqtt-cluster:network": {"cidr": cidr},
            "mqtt-cluster:brokers": b,
            "mqtt-cluster:access": access if access is not None else {"admin_cidrs": ["198.51.100.0/24"], "bastion": True},
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


@pytest.mark.parametrize("mode", ["cluster", "bridge"])
def test_regions_reached_through_ssm_need_no_bastion_and_ssh_without_one_is_refused_naming_the_key(tmp_path, mode):
    auth = {"bridge_topics": ["#"]}
    _write(tmp_path, "a", "eu-west-1", "10.1.0.0/16", auth, access={})
    _write(tmp_path, "b", "us-west-2", "10.2.0.0/16", auth, access={"transport": "ssm"}, cluster_with="a" if mode == "cluster" else None)
    assert set(check(_global(["a", "b"], mode=mode), "x", tmp_path)) == {"a", "b"}
    # ssh reaches private hosts only through the bastion: refused as the regional stack refuses it.
    _write(tmp_path, "b", "us-west-2", "10.2.0.0/16", auth, access={"transport": "ssh"})
    with pytest.raises(ConfigError) as e:
        check(_global(["a", "b"], mode=mode), "stacks/Pulumi.g.yaml", tmp_path)
    assert str(e.value).startswith(
        "stacks/Pulumi.b.yaml: mqtt-cluster:access.transport: ssh reaches the private broker hosts only through the bastion"
    )


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


def _run(cmd, action: str, state: Path, **machine: str) -> subprocess.CompletedProcess:
    """Run a linking-stack command as pulumi-command runs it: its interpreter with the action
    appended, its environment over the deploying machine's (pulumi/pulumi-command v1.2.1
    provider/pkg/provider/local/commandOutputs.go:39-51, :81-86). The machine has the fakes on
    PATH: Systems Manager (tests/fakes/day2/aws, which runs the command on the fake host at once),
    Parameter Store as the hosts read it (tests/fakes/paramstore/aws) and the brokers (tests/fakes/docker)."""
    env = {
        "PATH": f"{FAKES / 'paramstore'}:{FAKES / 'day2'}:{FAKES}:/usr/bin:/bin",
        "FAKE_STATE": str(state),
        "POLL": "0.05",
        "AGENT_WAIT": "2",
        "STEP_WAIT": "30",
        **machine,
        **cmd.inputs["environment"],
    }
    return subprocess.run([*cmd.inputs["interpreter"], action], env=env, capture_output=True, text=True, timeout=120)


def test_a_cross_region_join_runs_through_ssm_on_its_instance_in_its_region_and_the_node_joins_the_primary(tmp_path):
    plan = plan_of("prod-global")
    cmd = plan.named("links-join-prod-ap-east-1-emqx-2")
    out = plan_of("prod-ap-east-1").outputs
    iid, node = out["node_instance_ids"][1], out["node_names"][1]
    primary = plan_of("prod-eu-central-1").outputs["node_names"]
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps({"self": node, "seed": primary[0], "members": primary, "containers": {"c-hk-2": node}, "instances": {iid: "c-hk-2"}})
    )
    step = tmp_path / "step.sh"
    step.write_text(cmd.inputs["interpreter"][2])
    assert subprocess.run(["shellcheck", str(step)], capture_output=True).returncode == 0
    proc = _run(cmd, cmd.inputs["create"], state)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(state.read_text())
    sends = [c for c in st["calls"] if c.startswith("aws ssm ")]
    assert sends and all("--region ap-east-1 " in c and f" {iid} " in c for c in sends), sends
    assert f"exec c-hk-2 emqx ctl cluster join {primary[0]}" in st["calls"]
    assert node in st["members"] and set(primary) <= set(st["members"])
    # Removing the link (the delete) leaves the node in the cluster and touches no host.
    proc = _run(cmd, cmd.inputs["delete"], state)
    assert proc.returncode == 0 and "stays in the cross-region cluster" in proc.stderr
    assert json.loads(state.read_text())["calls"] == st["calls"]


def _bridged_plan(bridged_stacks):
    bridged_stacks("dev", ["#"])
    bridged_stacks("edge", ["#"])
    config = _bridge_config(["dev", "edge"])
    outs = mockengine.resolve_references(config)
    return mockengine.run_program("prod-global", config, stack_outputs=outs), outs


def _seed_state(tmp_path: Path, out: dict, passwords: str | None, **extra) -> Path:
    """dev's seed as the fake host behind its instance id; the passwords the linking stack wrote
    into dev's region (the plan shows them as [secret] only)."""
    state = tmp_path / "state.json"
    params = {f"{out['region']} {out['bridge_passwords_parameter']}": passwords} if passwords is not None else {}
    state.write_text(
        json.dumps(
            {
                "self": out["node_names"][0],
                "seed": out["node_names"][0],
                "members": out["node_names"],
                "containers": {"c-dev-1": out["node_names"][0]},
                "instances": {out["node_instance_ids"][0]: "c-dev-1"},
                "data_dir": str(tmp_path / "data"),
                "parameters": params,
                **extra,
            }
        )
    )
    return state


def test_a_bridge_apply_runs_through_ssm_on_the_seed_which_reads_its_peers_passwords_in_its_region(bridged_stacks, tmp_path):
    from pyhocon import ConfigFactory

    plan, outs = _bridged_plan(bridged_stacks)
    cmd, out, edge = plan.named("links-bridges-dev"), outs["dev"], outs["edge"]
    sentinel = "Sentinel-edge-bridge-pw-0xC0FFEE"
    passwords = bridge_passwords([Peer("edge", edge["mqtt_host"], None, edge["bridge_username"], sentinel)])
    state = _seed_state(tmp_path, out, passwords)
    bridges = tmp_path / "data" / "bridges"
    proc = _run(cmd, cmd.inputs["create"], state, BRIDGE_DIR=str(bridges))
    assert proc.returncode == 0, proc.stderr
    st = json.loads(state.read_text())
    iid, region, name = out["node_instance_ids"][0], out["region"], out["bridge_passwords_parameter"]
    sends = [c for c in st["calls"] if c.startswith("aws ssm send-command")]
    assert len(sends) == 1 and f"--region {region} " in sends[0] and f"--instance-ids {iid} " in sends[0]
    # On the host: the passwords from dev's own region, decrypted with the host's role.
    assert f"aws ssm get-parameter --region {region} --name {name} --with-decryption" in st["calls"]
    assert "exec c-dev-1 emqx ctl conf load --merge /opt/emqx/data/bridges/links.hocon" in st["calls"]
    conf = ConfigFactory.parse_string(st["loads"][0])
    to_edge = conf["connectors"]["mqtt"]["to-edge"]
    assert (to_edge["server"], to_edge["username"], to_edge["password"]) == (f"{edge['mqtt_host']}:8883", "mqtt-bridge", sentinel)
    assert to_edge["ssl"]["verify"] == "verify_peer" and st["conf"]["rule_engine.rules.to_edge"]["enable"] == "true"
    # The password reached the broker and nothing else: not the command, its output, the calls, the disk.
    assert not (bridges / "links.hocon").exists()
    assert all(sentinel not in f.read_text() for f in bridges.iterdir())
    assert sentinel not in proc.stdout + proc.stderr + cmd.inputs["interpreter"][2] + _unpacked(cmd.inputs["interpreter"][2])
    assert sentinel not in json.dumps({k: v for k, v in st.items() if k not in ("parameters", "loads")})
    # The delete loads the same bridges disabled, without reading the passwords.
    proc = _run(cmd, cmd.inputs["delete"], state, BRIDGE_DIR=str(bridges))
    assert proc.returncode == 0, proc.stderr
    st2 = json.loads(state.read_text())
    assert [c for c in st2["calls"] if "get-parameter" in c] == [c for c in st["calls"] if "get-parameter" in c]
    assert st2["conf"]["connectors.mqtt.to-edge"]["enable"] == "false" and sentinel not in st2["loads"][-1]


@pytest.mark.parametrize("problem", ["missing", "denied"])
def test_a_bridge_apply_whose_passwords_cannot_be_read_loads_nothing_and_names_the_parameter(bridged_stacks, tmp_path, problem):
    plan, outs = _bridged_plan(bridged_stacks)
    cmd, out = plan.named("links-bridges-dev"), outs["dev"]
    key = f"{out['region']} {out['bridge_passwords_parameter']}"
    state = _seed_state(tmp_path, out, None if problem == "missing" else "x", denied_parameters=[key] if problem == "denied" else [])
    proc = _run(cmd, cmd.inputs["create"], state, BRIDGE_DIR=str(tmp_path / "data" / "bridges"))
    assert proc.returncode != 0
    assert f"could not be read from {out['bridge_passwords_parameter']} in {out['region']}" in proc.stderr
    assert ("ParameterNotFound" if problem == "missing" else "AccessDeniedException") in proc.stderr
    assert "the bridges were not loaded" in proc.stderr
    st = json.loads(state.read_text())
    assert "loads" not in st and not (tmp_path / "data" / "bridges" / "links.hocon").exists()


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
