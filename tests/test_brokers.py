"""Broker hosts and cluster formation, as the engine would receive them."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from pyhocon import ConfigFactory

from tests.conftest import plan_of

INSTANCE = "aws:ec2/instance:Instance"
JOIN = "command:local:Command"


def brokers(plan):
    return sorted((r for r in plan.of_type(INSTANCE) if "Node" in r.inputs["tags"]), key=lambda r: r.name)


def test_dev_has_three_emqx_nodes_spread_over_three_azs():
    plan = plan_of("dev")
    nodes = brokers(plan)
    assert [n.inputs["tags"]["Node"] for n in nodes] == [f"emqx@emqx-{i}.dev.mqtt.internal" for i in (1, 2, 3)]
    subnets = {s.id: s.inputs["availabilityZone"] for s in plan.of_type("aws:ec2/subnet:Subnet")}
    assert sorted(subnets[n.inputs["subnetId"]] for n in nodes) == ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
    assert all(subnets[n.inputs["subnetId"]] in subnets.values() for n in nodes)
    private = {s.id for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["Tier"] == "private"}
    assert all(n.inputs["subnetId"] in private for n in nodes)


@pytest.mark.parametrize("stack", ["dev", "staging", "vernemq"])
def test_broker_hosts_are_private_imdsv2_and_encrypted(stack):
    plan = plan_of(stack)
    for n in brokers(plan):
        assert n.inputs["iamInstanceProfile"] and n.inputs["keyName"]
        assert n.inputs["associatePublicIpAddress"] is False
        assert n.inputs["metadataOptions"]["httpTokens"] == "required"
        assert n.inputs["rootBlockDevice"]["encrypted"] is True
        assert n.inputs["rootBlockDevice"]["volumeType"] == "gp3"
    vols = plan.of_type("aws:ebs/volume:Volume")
    assert len(vols) == len(brokers(plan))
    assert all(v.inputs["encrypted"] and v.inputs["type"] == "gp3" for v in vols)


def test_every_node_has_an_a_record_in_the_private_zone():
    plan = plan_of("staging")
    zone = plan.of_type("aws:route53/zone:Zone")[0]
    assert zone.inputs["name"] == "staging.mqtt.internal" and zone.inputs["vpcs"], "a private zone is tied to the VPC"
    names = sorted(r.inputs["name"] for r in plan.of_type("aws:route53/record:Record") if r.inputs["zoneId"] == zone.id)
    assert names == sorted(
        [
            "emqx-1.staging.mqtt.internal",
            "emqx-2.staging.mqtt.internal",
            "emqx-3.staging.mqtt.internal",
        ]
    )


def test_one_join_per_non_seed_node_each_waiting_only_for_the_seed_and_its_own_host():
    plan = plan_of("staging")
    joins = [r for r in plan.of_type(JOIN) if r.name.startswith("ops-member-")]
    nodes = brokers(plan)
    assert len(joins) == len(nodes) - 1
    seed = next(n for n in nodes if n.inputs["tags"]["Node"].startswith("emqx@emqx-1."))
    for j in joins:
        host = j.name.removeprefix("ops-member-")
        own = next(n for n in nodes if n.inputs["tags"]["Name"].startswith(host + "."))
        instance_deps = {d for d in j.dependencies if f"{INSTANCE}::" in d}
        assert instance_deps == {seed.urn, own.urn}, j.name
        assert not any(f"{JOIN}::" in d for d in j.dependencies), "joins never wait for each other"
        assert j.inputs["create"] == "join"
        assert j.inputs["delete"] == "leave", "scale-in leaves the cluster"
        assert j.inputs["update"] == "join" and j.inputs["environment"]["INSTANCE_ID"] == own.id, "a replaced host joins again"


def _depth(plan) -> int:
    by_urn = {r.urn: r for r in plan.resources}
    memo: dict[str, int] = {}

    def depth(urn: str) -> int:
        if urn not in memo:
            deps = [d for d in by_urn[urn].dependencies if d in by_urn and by_urn[d].custom]
            memo[urn] = 1 + max((depth(d) for d in deps), default=0)
        return memo[urn]

    return max(depth(r.urn) for r in plan.resources if r.custom)


def test_deploy_depth_does_not_grow_with_node_count(program):
    three = program("dev", brokers={"engine": "emqx", "count": 3, "instance_type": "t3.medium"})
    nine = program("dev", brokers={"engine": "emqx", "count": 9, "instance_type": "t3.medium"})
    joins = lambda p: [r for r in p.of_type(JOIN) if r.name.startswith("ops-member-")]  # noqa: E731 - not rollout/users steps
    assert len(joins(nine)) == 8 and len(joins(three)) == 2
    assert _depth(three) == _depth(nine)


def test_secrets_never_reach_user_data(program):
    plan = program("dev", cookie="C00kie-sentinel-7f3a", dashboard_password="Dash-sentinel-91bc")
    for r in plan.resources:
        text = str(r.inputs)
        assert "C00kie-sentinel-7f3a" not in text, r.name
        assert "Dash-sentinel-91bc" not in text, r.name
    for (_, _), text in plan.files.items():
        assert "sentinel" not in text
    params = {p.inputs["name"]: p.inputs for p in plan.of_type("aws:ssm/parameter:Parameter")}
    assert params["/mqtt-cluster/dev/cookie"]["type"] == "SecureString"
    assert params["/mqtt-cluster/dev/cookie"]["value"] == "[secret]"


def test_generated_secrets_are_secret_and_ssm_access_is_scoped_to_the_stack():
    plan = plan_of("dev")
    generated = {r.name for r in plan.of_type("random:index/randomPassword:RandomPassword")}
    assert generated == {"secrets-cookie", "secrets-dashboard-password", "auth-salt-key"}
    assert plan.outputs["dashboard_password"] == "[secret]"
    policy = plan.of_type("aws:iam/rolePolicy:RolePolicy")[0].inputs["policy"]
    # Exactly the parameters the brokers fetch (tests/test_aws_rules.py checks every role in detail).
    assert "parameter/mqtt-cluster/dev/cookie" in policy and "parameter/mqtt-cluster/dev/*" not in policy
    assert "kms:ViaService" in policy and "kms:EncryptionContext:PARAMETER_ARN" in policy


def test_emqx_hocon_parses_and_names_the_node_and_static_seeds():
    plan = plan_of("staging")
    conf = ConfigFactory.parse_string(plan.files[("emqx-3", "emqx.conf")])
    assert conf["node"]["name"] == "emqx@emqx-3.staging.mqtt.internal"
    assert conf["node"]["role"] == "core", "the open-source edition runs every node as core since 5.8.0"
    assert conf["cluster"]["discovery_strategy"] == "static"
    assert len(conf["cluster"]["static"]["seeds"]) == 3
    assert conf["listeners"]["ssl"]["default"]["enable"] is False, "TLS ends at the load balancer"


def test_vernemq_stack_needs_eula_and_sets_its_cluster_env():
    plan = plan_of("vernemq")
    env = plan.files[("vernemq-2", "broker.env")]
    assert "DOCKER_VERNEMQ_ACCEPT_EULA=yes" in env
    assert "DOCKER_VERNEMQ_NODENAME=vernemq-2.vernemq.mqtt.internal" in env
    assert "DOCKER_VERNEMQ_DISCOVERY_NODE=vernemq-1.vernemq.mqtt.internal" in env
    assert "DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT__PROXY_PROTOCOL=on" in env
    assert plan.outputs["node_names"][0] == "VerneMQ@vernemq-1.vernemq.mqtt.internal"


def test_every_rendered_cloud_init_passes_cloud_init_schema(tmp_path):
    import yaml

    checked = Counter()
    allowed = {"hostname", "fqdn", "prefer_fqdn_over_hostname", "package_update", "packages", "write_files", "runcmd"}
    for stack in ["dev", "staging", "vernemq"]:
        for (host, name), text in plan_of(stack).files.items():
            if name != "cloud-init.yaml":
                continue
            path = tmp_path / f"{stack}-{host}.yaml"
            path.write_text(text)
            proc = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert text.startswith("#cloud-config\n")
            unknown = set(yaml.safe_load(text)) - allowed  # `cloud-init schema` tolerates unknown top-level keys
            assert not unknown, unknown
            checked[stack] += 1
    assert checked["dev"] == 4 and checked["staging"] == 3, checked


def test_broker_start_scripts_pass_shellcheck(tmp_path):
    for stack in ["dev", "vernemq"]:
        for (host, name), text in plan_of(stack).files.items():
            if name in ("mqtt-broker-start", "mqtt-cluster-node.sh"):
                path = tmp_path / f"{stack}-{host}-{name}"
                path.write_text(text)
                proc = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
                assert proc.returncode == 0, proc.stdout


# --- the secrets a host fetches at start: a failed fetch stops the start ---------------------------
def _host_run(tmp_path, script: str, ssm: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a rendered host script with its absolute paths moved under tmp_path, the fake `aws`
    (tests/fakes/vernemq_host/aws: the CLI's output and errors) and recording stand-ins for the
    system commands it calls; returns the run and the commands recorded."""
    import json
    import os
    import re
    from pathlib import Path

    root = tmp_path / "root"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("docker", "systemctl", "haproxy", "nginx", "chgrp", "chown"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>{tmp_path}/commands\n')
        (bin_dir / tool).chmod(0o755)
    if not (bin_dir / "aws").exists():
        (bin_dir / "aws").symlink_to(Path(__file__).parent / "fakes" / "vernemq_host" / "aws")
    moved = re.sub(r"(?<=[\s='\"<>])/(etc|run|var)/", lambda m: f"{root}/{m.group(1)}/", script)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SSM": json.dumps(ssm)}
    proc = subprocess.run(["bash", "-c", moved], env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603, S607
    log = tmp_path / "commands"
    return proc, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("missing", ["cookie", "dashboard-password"])
def test_a_broker_start_stops_when_a_secret_cannot_be_fetched(tmp_path, missing):
    # `printf … "$(aws …)"` would go on with an empty value: set -e ignores a failed command
    # substitution inside another command's arguments.
    plan = plan_of("dev")
    script = plan.files[("emqx-1", "mqtt-broker-start")]
    header, rest = script.split("# 1. ", 1)
    body = "# 2. " + rest.split("# 2. ", 1)[1]
    ssm = {"/mqtt-cluster/dev/cookie": "C00kie", "/mqtt-cluster/dev/dashboard-password": "Dash-Pw"}
    proc, commands = _host_run(tmp_path, header + body, ssm)
    assert proc.returncode == 0, proc.stderr
    assert any(c.startswith("docker run") for c in commands), commands
    secrets = (tmp_path / "root/run/mqtt-cluster/secrets.env").read_text()
    assert secrets == "EMQX_NODE__COOKIE=C00kie\nEMQX_DASHBOARD__DEFAULT_PASSWORD=Dash-Pw\n"

    ssm.pop(f"/mqtt-cluster/dev/{missing}")
    (tmp_path / "commands").unlink()
    proc, commands = _host_run(tmp_path, header + body, ssm)
    assert proc.returncode != 0
    assert "(ParameterNotFound)" in proc.stderr
    assert not any(c.startswith("docker") for c in commands), "no broker restarted on a missing secret"


def test_a_haproxy_start_stops_when_its_stats_password_cannot_be_fetched(tmp_path):
    plan = plan_of("vernemq")
    script = plan.files[("haproxy-1", "mqtt-proxy-start")]
    ssm = {f"/mqtt-cluster/vernemq/{leaf}": f"{leaf}-value" for leaf in ("tls-certificate", "tls-private-key", "proxy-stats-password")}
    proc, commands = _host_run(tmp_path, script, ssm)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "root/run/mqtt-cluster/haproxy.env").read_text() == "HAPROXY_STATS_PASSWORD=proxy-stats-password-value\n"
    assert "systemctl restart haproxy" in commands

    ssm.pop("/mqtt-cluster/vernemq/proxy-stats-password")
    (tmp_path / "commands").unlink()
    proc, commands = _host_run(tmp_path, script, ssm)
    assert proc.returncode != 0
    assert not any(c.startswith("systemctl") for c in commands), "haproxy does not start with an empty stats password"
