"""LocalCluster: the same cluster on one machine's Docker — brokers, a TLS proxy, joins.

Nothing here is AWS: a private Docker network, one container and one named data volume per
node (restart=always, so a crashed or rebooted broker comes back and rejoins with its data), a
proxy container rendered by the same functions as the AWS proxy hosts, and joins made by the
same script the EC2 hosts run, through ``docker exec`` instead of SSH.

A new image or configuration replaces the broker containers one at a time, each on its own data
volume: Docker cannot change a container's image or environment, so pulumi-docker replaces it, and
deletes the old one first (pulumi/pulumi-docker 237b789 provider/resources.go:112-114
``DeleteBeforeReplace``: two containers cannot share the name, address and data directory). Each
broker container depends on a gate and on the previous node's container; the engine registers a
resource only once its dependencies are done (the SDK awaits their URNs: pulumi/pulumi v3.259.0
sdk/python/lib/pulumi/runtime/resource.py:190-195, rpc.py:336; the URN resolves when the engine answers the
registration, resource.py:1223), so the order is

    gate-1 (the cluster is whole) → emqx-1 replaced and healthy → gate-2 → emqx-2 … → emqx-N

``wait`` makes the create return only when Docker reports the container healthy
(kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/resource_docker_container_funcs.go:590-622),
and each gate runs the nodes' health gate (a running member, no stopped node) before its node goes.
Nothing that reads a broker container's outputs forces a replacement of its own, so a replacement
deletes nothing else first (step_generator.go:2044-2069, :3270-3287): the join re-checks its
membership as an update (pulumi/pulumi-command v1.2.1 provider/pkg/provider/common/inputs.go:10 —
only ``triggers`` replaces), and never runs its leave for a replacement.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components import auth, hostfiles
from components import config as c
from components.config import StackConfig
from components.observability import local_monitoring
from components.renderers import broker as br
from components.renderers.nodes import NodeSpec, node_specs, seed
from components.renderers.proxy import Backend, ProxySettings, haproxy_cfg, nginx_conf
from components.renderers.scripts import node_script

PROXY_IMAGES = {"nginx": "nginx:1.27-alpine", "haproxy": "haproxy:2.8-alpine"}
"""Official images; nginx's is built with the stream module, haproxy's runs as uid 99."""
LOCAL_MAXCONN = 10_000
DOCKER_DNS = "127.0.0.11:53"
"""Docker's embedded resolver on user-defined networks."""
HAPROXY_GID = "99"
LOCAL_CLIENT_CA = "/etc/mqtt-cluster/devices-ca.pem"

DATA_DIRS = {"emqx": "/opt/emqx/data", "vernemq": "/vernemq/data"}
# `emqx ctl status` exits 0 while the node is "is starting"; only "is started" is healthy
# (emqx/emqx v5.8.6 apps/emqx_management/src/emqx_mgmt_cli.erl:66-68). Same check as docker/emqx/Dockerfile.
EMQX_HEALTH_COMMAND = "timeout 8 /opt/emqx/bin/emqx ctl status | grep -q 'is started'"
HEALTH = {"emqx": ["CMD-SHELL", EMQX_HEALTH_COMMAND], "vernemq": ["CMD", "vernemq", "ping"]}
STATUS_PORT = {"emqx": c.DASHBOARD_PORT, "vernemq": c.VERNEMQ_HTTP_PORT}
START_WAIT = 300
"""Seconds a (re)created broker container may take to report healthy before the deploy stops."""
ROLE_LABEL = "mqtt-cluster.role"
"""broker | proxy | monitoring: ``docker ps --filter label=mqtt-cluster.role=broker``."""
GATE_CREATED = "echo 'created: the node starts on this configuration'"


def fingerprint(*parts: pulumi.Input) -> pulumi.Output[str]:
    """A digest of everything a container is created from: it changes exactly when the container
    is recreated. Secret when any part is."""
    return pulumi.Output.all(*parts).apply(lambda v: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest())


def container_name(cfg: StackConfig, host: str) -> str:
    return f"mqtt-cluster-{cfg.stack}-{host}"


def addresses(cfg: StackConfig, nodes: list[NodeSpec]) -> tuple[str, dict[int, str], str]:
    """Fixed addresses: the proxy, each node, and the range left to Docker for anything else."""
    net = ipaddress.ip_network(cfg.local_settings.subnet)
    static, dynamic = net.subnets(prefixlen_diff=1)
    proxy = str(static.network_address + c.LOCAL_PROXY_HOST)
    nodes_ip = {n.index: str(static.network_address + c.LOCAL_FIRST_NODE_HOST + n.index) for n in nodes}
    return proxy, nodes_ip, str(dynamic)


def local_proxy_settings(cfg: StackConfig, nodes: list[NodeSpec]) -> ProxySettings:
    """The AWS proxy hosts' settings, with container paths: foreground, logs to stdout/stderr."""
    kind = cfg.local_settings.proxy
    return ProxySettings(
        backends=[Backend(n.host, n.fqdn) for n in nodes],
        wss_port=c.WSS_PORT if cfg.brokers.websocket else None,
        # Plain MQTT would bypass the device certificate check.
        plain_port=None if cfg.auth.uses_mtls else c.MQTT_PORT,
        proxy_protocol=False,
        keepalive=cfg.brokers.keepalive,
        maxconn=LOCAL_MAXCONN,
        user="nginx" if kind == "nginx" else None,  # the haproxy image already runs unprivileged
        daemon=False,
        pid="/var/run/nginx.pid" if kind == "nginx" else "/tmp/haproxy.pid",  # noqa: S108 - inside the container
        error_log="/dev/stderr",
        access_log="/dev/stdout",
        log_target="stdout format raw",
        resolver=DOCKER_DNS if kind == "haproxy" else None,
        client_ca=LOCAL_CLIENT_CA if cfg.auth.uses_mtls else None,
    )


@dataclass
class LocalClusterArgs:
    cfg: StackConfig
    image: pulumi.Input[str] | None
    """Built broker image (docker/<engine>/); None pulls the stock or configured image."""
    cookie: pulumi.Output[str]
    dashboard_password: pulumi.Output[str]
    license: pulumi.Output[str] | None
    ca_cert_pem: pulumi.Input[str]
    cert_pem: pulumi.Input[str]
    private_key_pem: pulumi.Output[str]
    state_dir: Path
    """Where the CA certificate is written for clients (e.g. ./.local/<stack>)."""
    docker_host: str | None = None
    """docker:host of the provider; the join commands talk to the same daemon."""
    users_file: pulumi.Output[str] | None = None
    """Device credentials (salted hashes, secret) from components.auth.DeviceAuth."""
    auth_secrets: dict[str, pulumi.Output[str]] | None = None
    """More secret environment by leaf (e.g. the JWT key), from components.auth.DeviceAuth."""


class LocalCluster(pulumi.ComponentResource):
    nodes: list[NodeSpec]
    brokers: list[docker.Container]
    joins: list[command.local.Command]

    def __init__(self, name: str, args: LocalClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:LocalCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, local = args.cfg, args.cfg.local_settings
        engine = cfg.brokers.engine
        self.nodes = node_specs(cfg)
        self.scripts: dict[str, str] = {}
        first = seed(self.nodes)
        proxy_ip, node_ip, dynamic_range = addresses(cfg, self.nodes)
        labels = [docker.ContainerLabelArgs(label=f"mqtt-cluster.{k.lower()}", value=v) for k, v in cfg.base_tags.items()]

        network = docker.Network(
            f"{name}-net",
            name=f"mqtt-cluster-{cfg.stack}",
            driver="bridge",
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=local.subnet, ip_range=dynamic_range)],
            labels=[docker.NetworkLabelArgs(label=la.label, value=la.value) for la in labels],
            opts=child,
        )

        secret_env = {var: leaf for leaf, var in br.secret_env_names(cfg).items()}
        secret_values = {"cookie": args.cookie, "dashboard-password": args.dashboard_password}
        if args.license is not None:
            secret_values["license"] = args.license
        secret_values.update(args.auth_secrets or {})
        core_names = [n.node_name for n in self.nodes if n.role == "core"]

        image = args.image
        if image is None:
            image = docker.RemoteImage(f"{name}-broker-image", name=cfg.brokers.effective_image, keep_locally=True, opts=child).image_id
        env = {"DOCKER_HOST": args.docker_host} if args.docker_host else {}
        self.brokers = []
        self.gates: list[command.local.Command] = []
        previous: docker.Container | None = None
        for node in self.nodes:
            volume = docker.Volume(
                f"{name}-{node.host}-data",
                name=f"{container_name(cfg, node.host)}-data",
                labels=[docker.VolumeLabelArgs(label=la.label, value=la.value) for la in labels],
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=False),
            )
            env_plain = br.broker_env(cfg, node, first)
            envs: list[pulumi.Input[str]] = [f"{k}={v}" for k, v in sorted(env_plain.items())]
            envs += [
                pulumi.Output.concat(var, "=", secret_values[leaf]) for var, leaf in sorted(secret_env.items()) if leaf in secret_values
            ]
            uploads = []
            if cfg.is_emqx:
                conf = br.emqx_hocon(cfg, node, core_names)
                hostfiles.put(node.host, "emqx.conf", conf)
                uploads.append(docker.ContainerUploadArgs(file="/opt/emqx/etc/emqx.conf", content=conf, permissions="0644"))
            hostfiles.put(node.host, "broker.env", br.env_file(env_plain))
            if args.users_file is not None:
                uploads += auth.local_uploads(cfg, args.users_file)
            ports = []
            if node.index == first.index:
                ports.append(docker.ContainerPortArgs(internal=STATUS_PORT[engine], external=local.dashboard_port, ip=local.bind))
            script = node_script(
                engine,
                node,
                first,
                container=container_name(cfg, node.host),
                seed_container=container_name(cfg, first.host),  # the same Docker engine reaches the seed
                local_wait=START_WAIT,
                join_wait=START_WAIT,
            )
            hostfiles.put(node.host, "mqtt-cluster-node.sh", script)
            # The gate before this node goes: it runs (an update) when the container is about to be
            # recreated, after the previous node is back; a failed gate stops the deploy here.
            gate = command.local.Command(
                f"{name}-gate-{node.host}",
                create=GATE_CREATED,
                update="bash -s -- health",
                stdin=script,
                environment={
                    **env,
                    "CONTAINER_INPUTS": fingerprint(
                        image,
                        envs,
                        [[u.file, u.content, u.permissions] for u in uploads],
                        br.broker_command(cfg),
                        [[p.internal, p.external, p.ip] for p in ports],
                        [node.fqdn, node_ip[node.index], [[la.label, la.value] for la in labels]],
                    ),
                },
                logging=command.local.Logging.STDOUT_AND_STDERR,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[previous] if previous else None),
            )
            self.gates.append(gate)
            container = docker.Container(
                f"{name}-{node.host}",
                name=container_name(cfg, node.host),
                image=image,
                command=br.broker_command(cfg),
                hostname=node.fqdn,
                restart="always",
                networks_advanced=[
                    docker.ContainerNetworksAdvancedArgs(
                        name=network.name, aliases=[node.fqdn, node.host], ipv4_address=node_ip[node.index]
                    )
                ],
                volumes=[docker.ContainerVolumeArgs(volume_name=volume.name, container_path=DATA_DIRS[engine])],
                envs=envs,
                uploads=uploads,
                ports=ports,
                ulimits=[docker.ContainerUlimitArgs(name="nofile", soft=1_048_576, hard=1_048_576)],
                healthcheck=docker.ContainerHealthcheckArgs(
                    tests=HEALTH[engine], interval="10s", timeout="10s", start_period="60s", retries=3
                ),
                # Created (and recreated) only once Docker reports it healthy: the next node waits.
                wait=True,
                wait_timeout=START_WAIT,
                labels=[*labels, docker.ContainerLabelArgs(label=ROLE_LABEL, value="broker")],
                # Stop gracefully: the broker hands its sessions over before the container goes.
                destroy_grace_seconds=60,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gate, *([previous] if previous else [])]),
            )
            self.brokers.append(container)
            self.scripts[node.host] = script
            previous = container

        # The proxy: the AWS proxy renderer with container paths; TLS on 8883, plain 1883 locally.
        kind = local.proxy
        settings = local_proxy_settings(cfg, self.nodes)
        conf_text = nginx_conf(settings) if kind == "nginx" else haproxy_cfg(settings)
        conf_path = "/etc/nginx/nginx.conf" if kind == "nginx" else "/usr/local/etc/haproxy/haproxy.cfg"
        hostfiles.put("proxy", conf_path.rsplit("/", 1)[1], conf_text)
        if kind == "nginx":
            # The nginx master reads the key as root before dropping privileges.
            tls_files = [
                docker.ContainerUploadArgs(file=settings.cert, content=args.cert_pem, permissions="0644"),
                docker.ContainerUploadArgs(file=settings.key, content=args.private_key_pem, permissions="0600"),
            ]
        else:
            pem = pulumi.Output.secret(pulumi.Output.concat(args.cert_pem, args.private_key_pem))
            tls_files = [docker.ContainerUploadArgs(file=settings.pem, content=pem, permissions="0640", owner="0", group=HAPROXY_GID)]
        if cfg.auth.uses_mtls and cfg.auth.mtls and cfg.auth.mtls.ca_bundle:
            tls_files.append(docker.ContainerUploadArgs(file=LOCAL_CLIENT_CA, content=cfg.auth.mtls.ca_bundle, permissions="0644"))
        published = [(c.MQTTS_PORT, local.mqtts_port)]
        if settings.plain_port:
            published.append((c.MQTT_PORT, local.mqtt_port))
        if cfg.brokers.websocket:
            published.append((c.WSS_PORT, local.wss_port))
        proxy_image = docker.RemoteImage(f"{name}-proxy-image", name=PROXY_IMAGES[kind], keep_locally=True, opts=child)
        self.proxy = docker.Container(
            f"{name}-proxy",
            name=container_name(cfg, "proxy"),
            image=proxy_image.image_id,
            hostname=f"proxy.{cfg.zone_name}",
            restart="always",
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=["proxy"], ipv4_address=proxy_ip)],
            ports=[docker.ContainerPortArgs(internal=i, external=e, ip=local.bind) for i, e in published],
            uploads=[docker.ContainerUploadArgs(file=conf_path, content=conf_text, permissions="0644"), *tls_files],
            ulimits=[docker.ContainerUlimitArgs(name="nofile", soft=65_536, hard=65_536)],
            labels=[*labels, docker.ContainerLabelArgs(label=ROLE_LABEL, value="proxy")],
            # nginx resolves the broker names once, at start: they must exist by then.
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.brokers),
        )

        # Prometheus and Grafana over the brokers (components/observability.py).
        self.monitoring = local_monitoring(self, name, cfg, network.name, self.nodes, self.brokers, labels)

        # Joins: the EC2 hosts' script, through `docker exec`, one command per non-seed node. A
        # recreated container (same data volume, so still a member) only re-checks membership: the
        # container id is an environment value, an update; a join is replaced only with its volume.
        self.joins = []
        for node, container in zip(self.nodes, self.brokers, strict=True):
            if node.index == first.index:
                continue
            self.joins.append(
                command.local.Command(
                    f"{name}-join-{node.host}",
                    create="bash -s -- join",
                    delete="bash -s -- leave",
                    stdin=self.scripts[node.host],
                    # The leave acts only on the container this command last saw join.
                    environment={**env, "BROKER_ID": container.id},
                    logging=command.local.Logging.STDOUT_AND_STDERR,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.brokers[first.index], container]),
                )
            )

        # The CA certificate as a file, for mosquitto_pub --cafile and friends.
        ca_dir = args.state_dir
        self.ca_file = str(ca_dir / "ca.crt")
        ca_writer = command.local.Command(
            f"{name}-ca-file",
            create='umask 022 && mkdir -p "$CA_DIR" && cat >"$CA_DIR/ca.crt"',
            delete='rm -f "$CA_DIR/ca.crt"',
            stdin=args.ca_cert_pem,
            environment={"CA_DIR": str(ca_dir)},
            triggers=[args.ca_cert_pem],
            opts=child,
        )
        self.ca_file_ready = ca_writer.id.apply(lambda _: self.ca_file)
        self.register_outputs({"ca_file": self.ca_file_ready, "proxy": self.proxy.name})
