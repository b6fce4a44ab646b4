"""mqtt-cluster: a production MQTT broker cluster per stack. Wiring only; see components/."""

import pulumi
import pulumi_aws as aws

from components import firewall, settings
from components.broker_cluster import Bastion, BastionArgs, BrokerCluster, BrokerClusterArgs, DeployKey
from components.cluster_join import ClusterJoin, ClusterJoinArgs, JoinTarget
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.network import Network, NetworkArgs
from components.renderers.nodes import seed
from components.secrets import ClusterSecrets, ClusterSecretsArgs
from components.security_groups import SecurityGroups, SecurityGroupsArgs

cfg = settings.load()  # every check happens here, before any resource is registered
tags = cfg.base_tags

if cfg.role == "regional":
    zones = aws.get_availability_zones(state="available").names
    if len(zones) < cfg.network.azs:
        raise settings.StackConfigError(
            settings.source_name(cfg.stack), "mqtt-cluster:network.azs", f"this account sees {len(zones)} zones in {cfg.region}"
        )
    azs = zones[: cfg.network.azs]
    account_id = aws.get_caller_identity().account_id

    net = Network("net", NetworkArgs(cidr=cfg.network.cidr, azs=azs, nat=cfg.network.nat, subnet_bits=cfg.network.subnet_bits, tags=tags))
    sgs = SecurityGroups("sg", SecurityGroupsArgs(vpc_id=net.vpc_id, groups=firewall.groups(cfg), rules=firewall.rules(cfg), tags=tags))

    param_prefix = f"/mqtt-cluster/{cfg.stack}"
    secrets = ClusterSecrets(
        "secrets",
        ClusterSecretsArgs(
            param_prefix=param_prefix,
            cookie=settings.secret("cookie"),
            dashboard_password=settings.secret("dashboard_password"),
            license=settings.secret("license") if cfg.license else None,
            tags=tags,
        ),
    )
    deploy_key = DeployKey("deploy", tags)
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
            secret_leaves=list(secrets.parameter_names),
            account_id=account_id,
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(depends_on=[secrets]),  # hosts read the parameters at first boot
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
            ),
        )

    first = seed(brokers.nodes)
    host_of = {n.index: [brokers.instances[n.index], brokers.attachments[n.index], brokers.records[n.index]] for n in brokers.nodes}
    ClusterJoin(
        "join",
        ClusterJoinArgs(
            seed_resources=host_of[first.index],
            targets=[
                JoinTarget(node=n, host=brokers.private_ips[n.index], script=brokers.scripts[n.index], waits_for=host_of[n.index])
                for n in brokers.nodes
                if n.index != first.index
            ],
            user=cfg.access.ssh_user,
            private_key=deploy_key.private_key,
            bastion_host=bastion.public_ip if bastion else None,
        ),
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
    pulumi.export("seed_node", first.node_name)
    pulumi.export("private_zone_id", brokers.zone.zone_id)
    pulumi.export("private_zone_name", cfg.zone_name)
    pulumi.export("ssm_parameter_prefix", param_prefix)
    pulumi.export("dashboard_password", secrets.dashboard_password)
    if bastion:
        pulumi.export("bastion_ip", bastion.public_ip)
