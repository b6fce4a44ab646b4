"""mqtt-cluster: a production MQTT broker cluster per stack. Wiring only; see components/."""

from pathlib import Path

import pulumi
import pulumi_aws as aws

from components import firewall, settings
from components.auth import DeviceAuth, DeviceAuthArgs, users_from_config
from components.broker_cluster import Bastion, BastionArgs, BrokerCluster, BrokerClusterArgs, DeployKey, ami_changes
from components.broker_tls import BrokerTls
from components.config import BRIDGE_USER, tls_passthrough
from components.images import BrokerImage, BrokerImageArgs
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.local_cluster import LocalCluster, LocalClusterArgs
from components.network import Network, NetworkArgs
from components.observability import Observability, ObservabilityArgs
from components.region_links import RegionLinks, RegionLinksArgs
from components.renderers.nodes import seed
from components.renderers.observability import Watched, broker_instance_type
from components.rollout import ClusterOps, ClusterOpsArgs, HostAccess, OpsTarget
from components.secrets import ClusterSecrets, ClusterSecretsArgs, LocalSecrets, fingerprint
from components.security_groups import SecurityGroups, SecurityGroupsArgs
from components.tls_certs import TlsMaterial, TlsMaterialArgs

DEMO_USER = "demo"
cfg = settings.load()  # every check happens here, before any resource is registered
tags = cfg.base_tags

if cfg.role == "regional":
    zones = aws.get_availability_zones(state="available").names
    if len(zones) < cfg.network.azs:
        raise settings.StackConfigError(
            settings.source_name(cfg.stack), "mqtt-cluster:network.azs", f"this account sees {len(zones)} zones in {cfg.region}"
        )
    azs = zones[: cfg.network.azs]
    region_name = cfg.region or ""
    account_id = aws.get_caller_identity().account_id

    net = Network("net", NetworkArgs(cidr=cfg.network.cidr, azs=azs, nat=cfg.network.nat, subnet_bits=cfg.network.subnet_bits, tags=tags))
    sgs = SecurityGroups("sg", SecurityGroupsArgs(vpc_id=net.vpc_id, groups=firewall.groups(cfg), rules=firewall.rules(cfg), tags=tags))

    param_prefix = f"/mqtt-cluster/{cfg.stack}"
    cookie = settings.secret("cookie")
    primary = None
    if cfg.brokers.cluster_with:
        # One cluster across regions: the cookie is the primary stack's, by stack reference.
        primary = pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{cfg.brokers.cluster_with}")
        cookie = pulumi.Output.secret(primary.require_output("cookie"))
    secrets = ClusterSecrets(
        "secrets",
        ClusterSecretsArgs(
            param_prefix=param_prefix,
            cookie=cookie,
            dashboard_password=settings.secret("dashboard_password"),
            license=settings.secret("license") if cfg.license else None,
            tags=tags,
        ),
    )
    # Peer regions' bridges log in as BRIDGE_USER with a generated password (auth.bridge_topics).
    bridge_users = [BRIDGE_USER] if cfg.auth.bridge_topics is not None else []
    device_auth = DeviceAuth(
        "auth",
        DeviceAuthArgs(
            cfg=cfg,
            users=users_from_config(),
            generated_users=bridge_users,
            param_prefix=param_prefix,
            tags=tags,
            jwt_secret=settings.secret("jwt_secret"),
        ),
    )
    # Device certificates behind an NLB: the brokers terminate TLS with a certificate from SSM.
    broker_tls = BrokerTls("broker-tls", cfg, param_prefix, tags) if tls_passthrough(cfg) else None
    deploy_key = DeployKey("deploy", tags)
    obs = Observability("obs", ObservabilityArgs(cfg=cfg, account_id=account_id, tags=tags))
    built = BrokerImage("image", BrokerImageArgs(cfg=cfg, push_to_ecr=True, tags=tags)) if cfg.brokers.build_image else None
    brokers = BrokerCluster(
        "brokers",
        BrokerClusterArgs(
            cfg=cfg,
            vpc_id=net.vpc_id,
            azs=azs,
            private_subnet_ids=net.private_subnet_ids,
            security_group_id=sgs.ids["broker"],
            key_name=deploy_key.key_name,
            param_prefix=param_prefix,
            secret_leaves=[*secrets.parameter_names, *device_auth.secret_values, *(broker_tls.parameter_names if broker_tls else [])],
            account_id=account_id,
            tags=tags,
            image=built.ref if built else None,
            ecr_repository_arn=built.repository_arn if built else None,
            registry=built.registry if built else None,
            telemetry=obs.hooks("brokers"),
        ),
        # Hosts read the parameters at first boot.
        opts=pulumi.ResourceOptions(depends_on=[secrets, device_auth, *([broker_tls] if broker_tls else [])]),
    )
    bastion = None
    if cfg.access.bastion:
        bastion = Bastion(
            "bastion",
            BastionArgs(
                subnet_id=net.public_subnet_ids[0],
                security_group_id=sgs.ids["bastion"],
                key_name=deploy_key.key_name,
                instance_type=cfg.access.bastion_instance_type,
                region=cfg.region,
                tags=tags,
                ignore_changes=ami_changes(cfg, "bastion"),
            ),
        )
    # How the deploying machine reaches the hosts: the proxy gates and the day-2 steps alike.
    access = HostAccess(
        stack=cfg.stack,
        region=region_name,
        transport=cfg.access.transport,
        ssh_user=cfg.access.ssh_user,
        private_key=deploy_key.private_key if cfg.access.transport == "ssh" else None,
        bastion_host=bastion.public_ip if bastion else None,
    )

    lb = LoadBalancer(
        "lb",
        LoadBalancerArgs(
            cfg=cfg,
            vpc_id=net.vpc_id,
            public_subnet_ids=net.public_subnet_ids,
            security_group_id=sgs.ids["front"],
            nodes=brokers.nodes,
            instance_ids=[i.id for i in brokers.instances],
            key_name=deploy_key.key_name,
            param_prefix=param_prefix,
            account_id=account_id,
            tags=tags,
            # The proxy hosts' gates reach them as the day-2 steps reach the brokers.
            access=access,
            telemetry=obs.hooks("proxies"),
            passthrough_ca=broker_tls.ca_cert_pem if broker_tls else None,
        ),
    )
    obs.watch(
        Watched(
            brokers=[(n, i.id, broker_instance_type(cfg, n)) for n, i in zip(brokers.nodes, brokers.instances, strict=True)],
            proxies=[(h, i.id, cfg.load_balancer.proxy_instance_type) for h, i in lb.proxy_instances],
            nlb=lb.nlb.arn_suffix if lb.nlb else None,
            target_groups={port: tg.arn_suffix for port, tg in lb.target_groups.items()},
            elb=lb.elb.name if lb.elb else None,
            health_checks=[(h, hc.id) for h, hc in lb.health_checks],
        )
    )

    # Joins, leaves and rollout steps: from the deploying machine, through SSM (or SSH via the bastion).
    first = seed(brokers.nodes)
    ClusterOps(
        "ops",
        ClusterOpsArgs(
            access=access,
            seed=first,
            targets=[
                OpsTarget(
                    node=n,
                    instance_id=brokers.instances[n.index].id,
                    address=brokers.private_ips[n.index],
                    script=brokers.scripts[n.index],
                    config_hash=brokers.config_hashes[n.index],
                    host_resources=[brokers.instances[n.index], brokers.attachments[n.index], brokers.records[n.index]],
                )
                for n in brokers.nodes
            ],
            drain_target_groups=lb.drain_target_groups,
            drain_elb_name=lb.drain_elb_name,
            drain_proxy_kind=lb.drain_proxy_kind,
            drain_proxies=[(i.id, i.private_ip) for _, i in lb.proxy_instances],
            drain_wait=cfg.load_balancer.deregistration_delay,
            drain_resources=lb.drain_resources,
            # Changed device credentials reach the running brokers without replacing a host.
            users_fingerprint=device_auth.fingerprint,
        ),
    )

    pulumi.export("mqtt_host", lb.hostname)
    pulumi.export("mqtts_url", lb.hostname.apply(lambda h: f"mqtts://{h}:8883"))
    if cfg.brokers.websocket:
        pulumi.export("wss_url", lb.hostname.apply(lambda h: f"wss://{h}:8084/mqtt"))
    if lb.addresses:
        pulumi.export("proxy_addresses", lb.addresses)
    if lb.ca_cert_pem is not None:
        pulumi.export("ca_certificate", lb.ca_cert_pem)
    pulumi.export("region", cfg.region)
    pulumi.export("engine", cfg.brokers.engine)
    pulumi.export("vpc_id", net.vpc_id)
    pulumi.export("vpc_cidr", cfg.network.cidr)
    pulumi.export("private_route_table_ids", net.private_route_table_ids)
    pulumi.export("broker_security_group_id", sgs.ids["broker"])
    pulumi.export("node_names", [n.node_name for n in brokers.nodes])
    pulumi.export("node_addresses", brokers.private_ips)
    pulumi.export("node_instance_ids", [i.id for i in brokers.instances])
    pulumi.export("seed_node", first.node_name)
    pulumi.export("private_zone_id", brokers.zone.zone_id)
    pulumi.export("private_zone_name", cfg.zone_name)
    pulumi.export("ssm_parameter_prefix", param_prefix)
    pulumi.export("dashboard_password", secrets.dashboard_password)
    # For the linking stack: the cluster's identity, and how to reach these hosts.
    pulumi.export("cluster_name", cfg.cluster_name)
    pulumi.export("cookie", secrets.cookie)
    if primary is not None:
        pulumi.export("cookie_fingerprint", primary.require_output("cookie_fingerprint"))
    else:
        pulumi.export("cookie_fingerprint", pulumi.Output.unsecret(secrets.cookie.apply(fingerprint)))
    pulumi.export("deploy_private_key", deploy_key.private_key)
    pulumi.export("ssh_user", cfg.access.ssh_user)
    if bastion:
        pulumi.export("bastion_ip", bastion.public_ip)
    pulumi.export("alarm_topic_arn", obs.topic.arn)
    pulumi.export("log_groups", {role: g.name for role, g in obs.log_groups.items()})
    if obs.dashboard_url is not None:
        pulumi.export("dashboard_url", obs.dashboard_url)
    if bridge_users:
        # The linking stack's bridges into this region log in with these (links.mode bridge).
        pulumi.export("bridge_username", BRIDGE_USER)
        pulumi.export("bridge_password", device_auth.passwords[BRIDGE_USER])
        # Where the linking stack puts its peers' passwords for these hosts to read (bridge mode).
        pulumi.export("bridge_passwords_parameter", brokers.bridge_passwords_parameter)

if cfg.role == "global":
    links = cfg.links
    source = settings.source_name(cfg.stack)
    regions = settings.linked_regions(cfg)  # every cross-stack check, before any resource
    organization = links.organization or pulumi.get_organization()
    region_links = RegionLinks(
        "links",
        RegionLinksArgs(stack=cfg.stack, links=links, regions=regions, organization=organization, source=source, tags=tags),
    )
    pulumi.export("mode", links.mode)
    pulumi.export("primary", links.primary_stack)
    pulumi.export("regions", {s: r.region for s, r in regions.items()})
    pulumi.export("peerings", [p.id for p in region_links.peerings])
    if links.global_hostname:
        pulumi.export("global_hostname", links.global_hostname)
        pulumi.export("global_mqtts_url", f"mqtts://{links.global_hostname}:8883")

if cfg.role == "local":
    local = cfg.local_settings
    secrets = LocalSecrets("secrets", cookie=settings.secret("cookie"), dashboard_password=settings.secret("dashboard_password"))
    image = BrokerImage("image", BrokerImageArgs(cfg=cfg, push_to_ecr=False, tags=tags)).ref if cfg.brokers.build_image else None
    # A generated demo device, so the quick start connects the way every device must.
    device_auth = DeviceAuth(
        "auth",
        DeviceAuthArgs(cfg=cfg, users=users_from_config(), generated_users=[DEMO_USER], jwt_secret=settings.secret("jwt_secret")),
    )
    tls = TlsMaterial(
        "tls",
        TlsMaterialArgs(common_name="localhost", dns_names=["localhost", f"proxy.{cfg.zone_name}"], ip_addresses=["127.0.0.1", local.bind]),
    )
    cluster = LocalCluster(
        "local",
        LocalClusterArgs(
            cfg=cfg,
            image=image,
            cookie=secrets.cookie,
            dashboard_password=secrets.dashboard_password,
            license=settings.secret("license") if cfg.license else None,
            ca_cert_pem=tls.ca_cert_pem,
            cert_pem=tls.cert_pem,
            private_key_pem=tls.private_key_pem,
            state_dir=Path.cwd() / ".local" / cfg.stack,
            docker_host=pulumi.Config("docker").get("host"),
            users_file=device_auth.users_file,
            auth_secrets=device_auth.secret_values,
        ),
    )
    host = "localhost" if local.bind in ("127.0.0.1", "0.0.0.0") else local.bind  # noqa: S104 - a comparison
    pulumi.export("engine", cfg.brokers.engine)
    pulumi.export("mqtt_url", f"mqtt://{host}:{local.mqtt_port}")
    pulumi.export("mqtts_url", f"mqtts://{host}:{local.mqtts_port}")
    if cfg.brokers.websocket:
        pulumi.export("wss_url", f"wss://{host}:{local.wss_port}/mqtt")
    pulumi.export("ca_file", cluster.ca_file_ready)
    pulumi.export("demo_username", DEMO_USER)
    pulumi.export("demo_password", device_auth.passwords[DEMO_USER])
    pulumi.export("demo_topic", f"devices/{DEMO_USER}/hello")
    pulumi.export("ca_certificate", tls.ca_cert_pem)
    if cfg.is_emqx:
        pulumi.export("dashboard_url", f"http://{host}:{local.dashboard_port}")
        pulumi.export("dashboard_user", "admin")
        pulumi.export("dashboard_password", secrets.dashboard_password)
        pulumi.export("dashboard_password_hint", "pulumi stack output dashboard_password --show-secrets")
    else:
        pulumi.export("status_url", f"http://{host}:{local.dashboard_port}/status")
    pulumi.export("node_names", [n.node_name for n in cluster.nodes])
    pulumi.export("containers", [b.name for b in cluster.brokers])
    if cluster.monitoring is not None:
        pulumi.export("grafana_url", cluster.monitoring.grafana_url)
        pulumi.export("grafana_user", "admin")
        pulumi.export("grafana_password", cluster.monitoring.grafana_password)
        pulumi.export("prometheus_url", cluster.monitoring.prometheus_url)
