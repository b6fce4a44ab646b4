"""ClusterJoin: a remote command per joining node — join on create, leave on delete."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import hostfiles
from components.renderers.nodes import NodeSpec


@dataclass
class JoinTarget:
    node: NodeSpec
    host: pulumi.Input[str]
    """Address the SSH connection dials (private IP)."""
    script: str
    """The rendered node script (components.renderers.scripts.node_script)."""
    waits_for: list[pulumi.Resource]
    """This node's own host resources (instance, volume attachment, DNS record)."""


@dataclass
class ClusterJoinArgs:
    seed_resources: list[pulumi.Resource]
    """The seed's host resources; every join waits for them and for nothing else."""
    targets: list[JoinTarget]
    user: str
    private_key: pulumi.Input[str]
    bastion_host: pulumi.Input[str] | None


class ClusterJoin(pulumi.ComponentResource):
    """Joins wait only for the seed and their own host, never for each other: the deploy graph
    stays two levels deep however many nodes there are."""

    def __init__(self, name: str, args: ClusterJoinArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:ClusterJoin", name, None, opts)
        proxy = None
        if args.bastion_host is not None:
            proxy = command.remote.ProxyConnectionArgs(host=args.bastion_host, user=args.user, private_key=args.private_key)
        self.commands: list[command.remote.Command] = []
        for t in args.targets:
            hostfiles.put(t.node.host, "mqtt-cluster-node.sh", t.script)
            conn = command.remote.ConnectionArgs(
                host=t.host,
                user=args.user,
                private_key=args.private_key,
                proxy=proxy,
                dial_error_limit=60,  # sshd comes up a minute or two after the instance is "running"
            )
            cmd = command.remote.Command(
                f"{name}-{t.node.host}",
                connection=conn,
                create="sudo bash -s -- join",
                delete="sudo bash -s -- leave",
                stdin=t.script,
                # A replaced host (new instance id) must join again.
                triggers=[r.id for r in t.waits_for if isinstance(r, aws.ec2.Instance)],
                logging=command.remote.Logging.STDOUT_AND_STDERR,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.seed_resources, *t.waits_for]),
            )
            self.commands.append(cmd)
        self.register_outputs({"joined": [c.id for c in self.commands]})
