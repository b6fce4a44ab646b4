"""BrokerCluster: EMQX or VerneMQ hosts in the private subnets, one AZ after another."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from components import hostfiles
from components.config import StackConfig, instance_arch
from components.renderers import auth as ra
from components.renderers import broker as br
from components.renderers import cloud_init
from components.renderers.bridges import PASSWORDS_LEAF
from components.renderers.nodes import NodeSpec, node_specs, seed
from components.renderers.scripts import node_script

CONTAINER = "broker"
EMQX_UID = "1000:1000"  # the emqx user in emqx/emqx images
VERNEMQ_UID = "10000:10000"  # the vernemq user in vernemq/vernemq images


def amazon_linux_ami(arch: str, region: str | None = None) -> str:
    return aws.ec2.get_ami(
        most_recent=True,
        owners=["amazon"],
        filters=[
            aws.ec2.GetAmiFilterArgs(name="name", values=[f"al2023-ami-2023.*-kernel-*-{arch}"]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=[arch]),
            aws.ec2.GetAmiFilterArgs(name="virtualization-type", values=["hvm"]),
        ],
        region=region,
    ).id


def start_parameter(param_prefix: str, host: str) -> str:
    """SSM parameter holding a node's start script (configuration, image); no secret in it."""
    return f"{param_prefix}/nodes/{host}/start"


def config_hash(start: str) -> str:
    """What a rollout step compares: the node's start script without the static seed list. Seeds
    matter only to a node without cluster membership (its first start); a member finds its peers
    in its own membership, so adding cores rewrites the parameter without restarting anyone."""
    lines = [line for line in start.splitlines() if "seeds = [" not in line]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


START_PARAMETER_LIMIT = 8192
"""Bytes an SSM parameter value may hold in the advanced tier (standard: 4096). pulumi_aws
ssm/parameter.py:54 (`tier`: Standard, Advanced, Intelligent-Tiering)."""


def pack_start(start: str) -> str:
    """The start script as the parameter holds it: gzip, then base64 (the bootstrap reverses it)."""
    packed = base64.b64encode(gzip.compress(start.encode(), mtime=0)).decode()
    if len(packed) > START_PARAMETER_LIMIT:
        raise ValueError(f"the packed start script is {len(packed)} bytes, above the SSM limit of {START_PARAMETER_LIMIT}")
    return packed


def parameter_arns(region: str, account_id: str, names: list[str]) -> list[str]:
    return [f"arn:aws:ssm:{region}:{account_id}:parameter{name}" for name in names]


def read_parameters_policy(region: str, account_id: str, names: list[str]) -> dict:
    """Read (and decrypt) exactly ``names``: the parameters the host's start script fetches.

    AmazonSSMManagedInstanceCore allows ssm:GetParameter/GetParameters on "*" (AWS managed policy
    reference, AmazonSSMManagedInstanceCore v2), and the aws/ssm key lets every principal of the
    account decrypt through SSM; so an explicit Deny keeps the host to its own parameters."""
    arns = parameter_arns(region, account_id, names)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnParameters", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": arns},
            {
                "Sid": "DecryptOwnParameters",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                # SSM encrypts each SecureString with its own ARN as encryption context.
                "Condition": {
                    "StringEquals": {"kms:ViaService": f"ssm.{region}.amazonaws.com", "kms:EncryptionContext:PARAMETER_ARN": arns}
                },
            },
            {
                "Sid": "NoOtherParameters",
                "Effect": "Deny",
                "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"],
                "NotResource": arns,
            },
        ],
    }


def instance_profile(
    name: str,
    parameters: list[str],
    region: str,
    account_id: str,
    tags: dict[str, str],
    parent: pulumi.Resource,
    ecr_repository_arn: pulumi.Input[str] | None = None,
) -> aws.iam.InstanceProfile:
    """An instance role with SSM core access, read access to exactly the SSM ``parameters`` its host
    fetches and, when the stack builds its broker image, pull access to that one ECR repository."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
            }
        ),
        tags=tags,
        opts=child,
    )
    aws.iam.RolePolicyAttachment(
        f"{name}-ssm-core", role=role.name, policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", opts=child
    )
    aws.iam.RolePolicy(
        f"{name}-read-own-params",
        role=role.id,
        policy=json.dumps(read_parameters_policy(region, account_id, parameters)),
        opts=child,
    )
    if ecr_repository_arn is not None:
        aws.iam.RolePolicy(
            f"{name}-pull-image",
            role=role.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        # The token call has no resource scope; the pulls are limited to one repository.
                        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                        {
                            "Effect": "Allow",
                            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                            "Resource": ecr_repository_arn,
                        },
                    ],
                }
            ),
            opts=child,
        )
    return aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=child)


def ami_changes(cfg: StackConfig, host: str) -> list[str]:
    """ignore_changes of every host: a new AL2023 release replaces nothing by itself (both proxies
    at once, the bastion, the brokers); access.refresh_ami names the one host to rebuild on it."""
    return [] if cfg.access.refresh_ami == host else ["ami"]


IMDSV2 = aws.ec2.InstanceMetadataOptionsArgs(http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1)


def root_volume(size: int) -> aws.ec2.InstanceRootBlockDeviceArgs:
    return aws.ec2.InstanceRootBlockDeviceArgs(volume_type="gp3", volume_size=size, encrypted=True, delete_on_termination=True)


@dataclass
class BrokerClusterArgs:
    cfg: StackConfig
    """The validated stack model."""
    vpc_id: pulumi.Input[str]
    azs: list[str]
    """Zone names, index-aligned with private_subnet_ids."""
    private_subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    key_name: pulumi.Input[str]
    """EC2 key pair of the deploy key (the join commands log in with it)."""
    param_prefix: str
    """SSM path of this stack's secrets."""
    secret_leaves: list[str]
    """SSM parameter leaves the hosts fetch (cookie, dashboard-password, license)."""
    account_id: str
    tags: dict[str, str]
    image: pulumi.Input[str] | None = None
    """Broker image; default: the stock (or configured) image. A built image comes by digest."""
    ecr_repository_arn: pulumi.Input[str] | None = None
    """ECR repository of a built image; the hosts get pull access to it."""
    registry: pulumi.Input[str] | None = None
    """ECR registry host the hosts log in to before pulling."""
    telemetry: Any = None
    """components.observability.HostHooks: the monitoring agent's files and the role's policy."""


class BrokerCluster(pulumi.ComponentResource):
    """Core (and replicant) nodes with encrypted data volumes, an instance role and private DNS names."""

    nodes: list[NodeSpec]
    instances: list[aws.ec2.Instance]
    records: list[aws.route53.Record]
    attachments: list[aws.ec2.VolumeAttachment]

    def __init__(self, name: str, args: BrokerClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:BrokerCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg, tags = args.cfg, args.tags
        region = cfg.region or ""
        self.nodes = node_specs(cfg)
        first = seed(self.nodes)
        core_names = [n.node_name for n in self.nodes if n.role == "core"]

        # Private DNS: node names are stable DNS names, so a replaced host keeps its identity.
        self.zone = aws.route53.Zone(
            f"{name}-zone",
            name=cfg.zone_name,
            comment=f"mqtt-cluster {cfg.stack} node names",
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=args.vpc_id)],
            force_destroy=True,
            tags=tags,
            # The linking stack associates this zone with peer VPCs (ZoneAssociation); without
            # this, every regional update would remove those associations again.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["vpcs"]),
        )

        secrets = {leaf: var for leaf, var in br.secret_env_names(cfg).items() if leaf in args.secret_leaves}
        tls_leaves = [leaf for leaf in br.secret_files(cfg) if leaf in args.secret_leaves]
        # A region that takes bridges (auth.bridge_topics) is linked in bridge mode: the linking
        # stack writes its peers' bridge passwords here, and the seed reads them while it applies
        # the bridges (templates/bridges.sh.j2).
        self.bridge_passwords_parameter = f"{args.param_prefix}/{PASSWORDS_LEAF}" if cfg.auth.bridge_topics is not None else None
        profile = instance_profile(
            name,
            # What the start script fetches and the device credentials the users script loads, no more;
            # the nodes' start scripts hold no secret.
            [f"{args.param_prefix}/{leaf}" for leaf in [*secrets, *tls_leaves, ra.USERS_PARAMETER_LEAF]]
            + [start_parameter(args.param_prefix, "*")]
            + ([self.bridge_passwords_parameter] if self.bridge_passwords_parameter else []),
            region,
            args.account_id,
            tags,
            self,
            ecr_repository_arn=args.ecr_repository_arn,
        )
        self.profile = profile
        if args.telemetry is not None:
            aws.iam.RolePolicy(f"{name}-telemetry", role=profile.role, policy=args.telemetry.policy, opts=child)
        image = pulumi.Output.from_input(args.image or cfg.brokers.effective_image)
        registry = pulumi.Output.from_input(args.registry or "")

        self.instances, self.records, self.attachments, self.scripts = [], [], [], []
        self.start_parameters: list[aws.ssm.Parameter] = []
        self.config_hashes: list[pulumi.Output[str]] = []
        # A node removed by scale-in leaves the cluster first (its membership command depends on
        # the volume's attachment, so Pulumi deletes it before); its data volume goes with it
        # unless brokers.retain_data_on_scale_in keeps it in the account.
        volume_opts = pulumi.ResourceOptions(parent=self, retain_on_delete=cfg.brokers.retain_data_on_scale_in)
        for node in self.nodes:
            az = args.azs[node.az_index]
            itype = cfg.brokers.instance_type if node.role == "core" else (cfg.brokers.replicant_instance_type or cfg.brokers.instance_type)
            volume = aws.ebs.Volume(
                f"{name}-{node.host}-data",
                availability_zone=az,
                size=cfg.brokers.data_volume_gb,
                type="gp3",
                encrypted=True,
                tags={**tags, "Name": f"{node.host}-data", "Node": node.node_name},
                opts=volume_opts,
            )
            script = node_script(cfg.brokers.engine, node, first, container=CONTAINER)
            self.scripts.append(script)
            hostfiles.put(node.host, "mqtt-cluster-node.sh", script)
            start = pulumi.Output.all(volume.id, image, registry).apply(
                lambda v, node=node: self._start_script(
                    cfg, node, first, core_names, v[0], args.param_prefix, secrets, image=v[1], registry=v[2]
                )
            )
            parameter = aws.ssm.Parameter(
                f"{name}-{node.host}-start",
                name=start_parameter(args.param_prefix, node.host),
                type="String",
                # Standard parameters hold 4 KB; Intelligent-Tiering moves a larger one to the
                # advanced tier (8 KB) by itself (pulumi_aws ssm/parameter.py:54, `tier`).
                tier="Intelligent-Tiering",
                # No secret in it (the start script fetches those at run time), so the plan and the
                # preview show it (pulumi_aws ssm/parameter.py:48 insecure_value; `value` is always
                # marked secret, :55, :821).
                insecure_value=start.apply(pack_start),
                description=f"mqtt-cluster start script of {node.node_name} (no secrets)",
                tags={**tags, "Node": node.node_name},
                opts=child,
            )
            self.start_parameters.append(parameter)
            self.config_hashes.append(start.apply(config_hash))
            extra = args.telemetry.extras(node) if args.telemetry is not None else None
            user_data = cloud_init.broker_user_data(
                hostname=node.fqdn,
                bootstrap=cloud_init.broker_bootstrap_script(
                    node_name=node.node_name, region=region, parameter=start_parameter(args.param_prefix, node.host)
                ),
                extra=extra,
            )
            for path, text in (extra.files if extra is not None else {}).items():
                hostfiles.put(node.host, path.rsplit("/", 1)[1], text)
            hostfiles.put(node.host, "cloud-init.yaml", user_data)
            instance = aws.ec2.Instance(
                f"{name}-{node.host}",
                ami=amazon_linux_ami(instance_arch(itype), cfg.region),
                instance_type=itype,
                subnet_id=args.private_subnet_ids[node.az_index],
                vpc_security_group_ids=[args.security_group_id],
                iam_instance_profile=profile.name,
                key_name=args.key_name,
                associate_public_ip_address=False,
                metadata_options=IMDSV2,
                root_block_device=root_volume(cfg.brokers.root_volume_gb),
                # gzip as every host's (cloud_init.packed); small now, kept for one format.
                user_data_base64=cloud_init.packed(user_data),
                # User-data is the host's identity and bootstrap only: it changes when the
                # bootstrap itself does, never with a version, a setting or the node count.
                user_data_replace_on_change=True,
                tags={**tags, "Name": node.fqdn, "Node": node.node_name, "Role": node.role},
                # A new instance type is applied by the provider in place (stop, modify, start) on every
                # host at once: it reaches a broker host only when access.refresh_ami names it.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    ignore_changes=[*ami_changes(cfg, node.host), *(["instanceType"] if ami_changes(cfg, node.host) else [])],
                    depends_on=[parameter],
                ),
            )
            # Detach from the old host before attaching to its replacement: a volume has one owner.
            attachment = aws.ec2.VolumeAttachment(
                f"{name}-{node.host}-data-attach",
                device_name="/dev/sdf",
                volume_id=volume.id,
                instance_id=instance.id,
                stop_instance_before_detaching=True,
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
            )
            record = aws.route53.Record(
                f"{name}-{node.host}-dns",
                zone_id=self.zone.zone_id,
                name=node.fqdn,
                type="A",
                ttl=30,
                records=[instance.private_ip],
                opts=child,
            )
            self.instances.append(instance)
            self.attachments.append(attachment)
            self.records.append(record)

        self.private_ips = [i.private_ip for i in self.instances]
        self.register_outputs(
            {
                "node_names": [n.node_name for n in self.nodes],
                "private_ips": self.private_ips,
                "zone_id": self.zone.zone_id,
            }
        )

    @staticmethod
    def _start_script(cfg, node, first, core_names, vol_id, param_prefix, secrets, *, image: str, registry: str) -> str:
        env = br.broker_env(cfg, node, first)
        files = {"/etc/mqtt-cluster/broker.env": br.env_file(env)}
        if cfg.is_emqx:
            files["/etc/mqtt-cluster/emqx.conf"] = br.emqx_hocon(cfg, node, core_names)
            mounts = ["/var/lib/mqtt-broker/data:/opt/emqx/data", "/etc/mqtt-cluster/emqx.conf:/opt/emqx/etc/emqx.conf:ro"]
            owner = EMQX_UID
        else:
            mounts = ["/var/lib/mqtt-broker/data:/vernemq/data"]
            owner = VERNEMQ_UID
        # Devices: the ACL (not secret) in user-data; the hash file is fetched from SSM at boot.
        acl_host, _, acl_text = ra.acl_file(cfg)
        files[acl_host] = acl_text
        files[ra.USERS_SCRIPT] = ra.users_script(cfg, region=cfg.region or "", param_prefix=param_prefix, owner=owner, container=CONTAINER)
        mounts += ra.host_mounts(cfg)
        if br.secret_files(cfg):
            files[br.DEVICE_CA_HOST] = cfg.auth.mtls.ca_bundle
            mounts += br.passthrough_mounts(cfg)
        start = cloud_init.broker_start_script(
            engine=cfg.brokers.engine,
            node_name=node.node_name,
            region=cfg.region,
            param_prefix=param_prefix,
            device=f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{vol_id.replace('-', '')}",
            data_owner=owner,
            secrets=secrets,
            container=CONTAINER,
            mounts=mounts,
            users_script=ra.USERS_SCRIPT,
            secret_files=br.secret_files(cfg),
            tls_dir=br.TLS_HOST_DIR,
            image=image,
            registry=registry,
            files={path: ("0600" if path.endswith(".env") else "0644", text) for path, text in files.items()},
        )
        for path, text in {**files, "/usr/local/sbin/mqtt-broker-start": start}.items():
            hostfiles.put(node.host, path.rsplit("/", 1)[1], text)
        return start


@dataclass
class BastionArgs:
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    key_name: pulumi.Input[str]
    instance_type: str
    region: str | None
    tags: dict[str, str]
    ignore_changes: list[str] = field(default_factory=lambda: ["ami"])
    """Default: keep the image it was built on (see ami_changes)."""


class Bastion(pulumi.ComponentResource):
    """A small SSH jump host in a public subnet; SSH only from the admin networks."""

    public_ip: pulumi.Output[str]

    def __init__(self, name: str, args: BastionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:Bastion", name, None, opts)
        user_data = cloud_init.plain_host_user_data("bastion")
        hostfiles.put("bastion", "cloud-init.yaml", user_data)
        host = aws.ec2.Instance(
            f"{name}-host",
            ami=amazon_linux_ami(instance_arch(args.instance_type), args.region),
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            key_name=args.key_name,
            associate_public_ip_address=True,
            metadata_options=IMDSV2,
            root_block_device=root_volume(8),
            user_data_base64=cloud_init.packed(user_data),
            tags={**args.tags, "Name": f"{name}"},
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=args.ignore_changes),
        )
        self.public_ip = host.public_ip
        self.register_outputs({"public_ip": self.public_ip})


class DeployKey(pulumi.ComponentResource):
    """An ED25519 key generated per stack (a Pulumi secret) and registered as an EC2 key pair."""

    def __init__(self, name: str, tags: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:DeployKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{name}-key", algorithm="ED25519", opts=child)
        pair = aws.ec2.KeyPair(f"{name}-pair", public_key=key.public_key_openssh, tags=tags, opts=child)
        self.private_key = pulumi.Output.secret(key.private_key_openssh)
        self.key_name = pair.key_name
        self.register_outputs({"key_name": self.key_name})
