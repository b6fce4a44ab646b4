"""ClusterOps: membership and rolling changes of the broker hosts, from the deploying machine.

Per node, two pulumi-command ``local.Command`` resources run the rendered step script
(templates/rollout.sh.j2), which reaches the host through AWS Systems Manager (``access.transport:
ssm``, the default: only AWS credentials, no inbound port) or SSH through the bastion:

- ``member-<host>`` (every node but the seed): join on create and when its host was replaced (an
  update: the instance id changed), leave on delete. It depends on the node's instance and volume
  attachment, so when a node is removed Pulumi deletes it, and runs the leave, before the host:
  deletes run in reverse dependency order (pulumi/pulumi v3.259.0
  pkg/resource/deploy/step_generator.go:2745 ScheduleDeletes, :2766 a condemned resource waits for
  its condemned dependents, :2791 the antichains reversed).
- ``users-<host>`` (every node): load changed device credentials into the running broker.
- ``rollout-<host>`` (every node): nothing on create (the host booted on its configuration); on an
  update of its configuration hash: gate (no stopped node), drain from the load balancer (NLB
  target groups, classic ELB, or every nginx/haproxy proxy host: templates/proxy-drain.sh.j2),
  restart on the new configuration, gate (running member, no stopped node), undrain and wait
  healthy.

Each nginx/haproxy proxy host has a gate (``proxy_gate``, built by components.load_balancer): the
same script's ``proxy-ready`` action waits, bounded, until a new proxy host serves, before its
Elastic IP moves to it and before the next proxy host is replaced.

Steps never depend on each other, so the initial deploy stays as deep for 9 nodes as for 3; they
take a lock on the deploying machine and each gates on a healthy cluster first, so no step takes a
broker out while another is out, and a failed gate stops the rollout: the next node's gate fails.
EMQX's own evacuation/rebalance is not available: emqx_node_rebalance is an enterprise application
at 5.8.6 (emqx/emqx v5.8.6 rebar.config.erl:130, apps/emqx_machine/priv/reboot_lists.eterm:86,
:129), so draining is the load balancer's.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command

from components.config import MQTTS_PORT
from components.renderers import render
from components.renderers.nodes import NodeSpec
from components.renderers.proxy import ADMIN_SOCKET, CHECKER_UNIT, DRAINED_FILE
from components.renderers.scripts import node_script_bound

STEP_WAIT = node_script_bound() + 60
"""Seconds one command on a host may take: the node script's longest run (a join: the local broker,
then the seed) and a minute for unpacking it. Sent as AWS-RunShellScript's executionTimeout (at most
172800, default 3600: aws/aws-cli 2.36.7 awscli/examples/ssm/get-document.rst:14); the agent kills
the command then."""
DELIVERY_WAIT = 60
"""Seconds Systems Manager may take to hand a command to the host's agent; a command not started by
then never runs (SendCommand TimeoutSeconds, 30-2592000: boto/botocore 1.43.67
botocore/data/ssm/2014-11-06/service-2.json:16406-16410, :17550-17554)."""
LB_WAIT = 600
"""Seconds the load balancer may take past the deregistration delay to finish a deregistration, or
to report a registered broker healthy: what botocore's own waiters allow (15 s x 40 attempts:
botocore 1.43.67 botocore/data/elbv2/2015-12-01/waiters-2.json:63-98 TargetInService, TargetDeregistered;
botocore/data/elb/2012-06-01/waiters-2.json:4-51 InstanceDeregistered, InstanceInService)."""
AGENT_WAIT = 900
"""Seconds a new host's SSM agent may take to register (boot, packages, docker)."""
LEAVE_REACH_WAIT = 60
"""Seconds a leave tries to reach its host before a live member removes the node instead."""
LOCK_WAIT = 3600
"""Seconds a step waits for another node's step on the same deploying machine."""


PROXY_WAIT = 60
"""Seconds a proxy host may take to take a broker out (nginx: the checker's next round and a
reload) or to have it back up (haproxy/the checker: ``rise`` passing checks)."""


READY_WAIT = 600
"""Seconds a new proxy host may take, once the deploying machine reaches it, to finish cloud-init
(packages, the TLS pair from SSM, the proxy's start) and accept connections on 8883."""
PROXY_UNITS = {"nginx": ("nginx.service", CHECKER_UNIT), "haproxy": ("haproxy.service",)}
"""What must be active on a proxy host before it takes its Elastic IP (nginx: and its upstream checker)."""


def _packed(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def proxy_script(kind: str) -> str:
    """The script a rollout step runs on every nginx/haproxy proxy host to drain/undrain a broker."""
    return render(
        "proxy-drain.sh.j2",
        kind=kind,
        admin_socket=ADMIN_SOCKET,
        nginx_conf="/etc/nginx/nginx.conf",
        drained_file=DRAINED_FILE,
        proxy_wait=PROXY_WAIT,
    )


def step_script(
    *,
    stack: str,
    node: NodeSpec,
    node_script: str,
    region: str,
    transport: str,
    drain_wait: int,
    proxy_kind: str | None = None,
    links_step: bool = False,
) -> str:
    """rollout.sh.j2 for ``node``; ``links_step``: with the linking stack's actions as well
    (``stays``, ``bridges-apply``, ``bridges-disable``: components/region_links.py)."""
    return _rollout_sh(
        proxy_script_gz=_packed(proxy_script(proxy_kind)) if proxy_kind else "",
        proxy_server=node.host,
        proxy_host=node.fqdn,
        stack=stack,
        node_name=node.node_name,
        region=region,
        transport=transport,
        node_script_gz=_packed(node_script),
        drain_wait=drain_wait,
        proxy_gate=False,
        links_step=links_step,
    )


def _rollout_sh(**step: object) -> str:
    """rollout.sh.j2 with the bounds every step shares; ``step``: what differs per script."""
    return render(
        "rollout.sh.j2",
        step_wait=STEP_WAIT,
        delivery_wait=DELIVERY_WAIT,
        lb_wait=LB_WAIT,
        agent_wait=AGENT_WAIT,
        leave_reach_wait=LEAVE_REACH_WAIT,
        lock_wait=LOCK_WAIT,
        **step,
    )


def proxy_ready_script(kind: str) -> str:
    """The check a proxy gate runs on its host: cloud-init done, the proxy units active, 8883 open."""
    return render("proxy-ready.sh.j2", kind=kind, units=list(PROXY_UNITS[kind]), port=MQTTS_PORT, ready_wait=READY_WAIT)


def gate_script(*, stack: str, host: str, kind: str, region: str, transport: str) -> str:
    """rollout.sh.j2 with the ``proxy-ready`` action, whose node script is ``proxy_ready_script``:
    the same transport (SSM Run Command or SSH through the bastion) as every day-2 step."""
    return _rollout_sh(
        proxy_script_gz="",
        proxy_server="",
        proxy_host="",
        stack=stack,
        node_name=host,
        region=region,
        transport=transport,
        node_script_gz=_packed(proxy_ready_script(kind)),
        drain_wait=0,
        proxy_gate=True,
        links_step=False,
    )


@dataclass
class HostAccess:
    """How the deploying machine reaches a host: ``access.transport`` and, for ssh, the bastion."""

    stack: str
    region: str
    transport: str
    ssh_user: pulumi.Input[str] = "ec2-user"
    private_key: pulumi.Input[str] | None = None
    bastion_host: pulumi.Input[str] | None = None

    def env(self) -> dict[str, pulumi.Input[str]]:
        """What rollout.sh.j2 reads to reach a host: nothing for ssm, the bastion and key for ssh."""
        if self.transport != "ssh":
            return {}
        return {"SSH_USER": self.ssh_user, "BASTION": self.bastion_host or "", "SSH_PRIVATE_KEY": self.private_key or ""}


def proxy_gate(
    name: str,
    *,
    host: str,
    kind: str,
    instance_id: pulumi.Input[str],
    address: pulumi.Input[str],
    access: HostAccess,
    opts: pulumi.ResourceOptions,
) -> command.local.Command:
    """A local.Command whose create waits until the proxy host ``instance_id`` serves and fails the
    deploy, naming the host, when it does not in time. ``triggers`` holds the instance id and a
    change of it replaces the command (replaceOnChanges: pulumi/pulumi-command v1.2.1
    provider/pkg/provider/common/inputs.go:10), so a replaced host gets a new gate run; another
    change of its inputs runs ``create`` again as the update (no ``update`` given:
    provider/pkg/provider/local/commandController.go:79-83), which a serving host passes at once."""
    env: dict[str, pulumi.Input[str]] = {"INSTANCE_ID": instance_id, "ADDRESS": address, **access.env()}
    script = gate_script(stack=access.stack, host=host, kind=kind, region=access.region, transport=access.transport)
    return command.local.Command(
        name,
        interpreter=["/bin/bash", "-c", script, f"mqtt-cluster-{host}"],
        create="proxy-ready",
        triggers=[instance_id],
        environment=env,
        logging=command.local.Logging.STDOUT_AND_STDERR,
        opts=opts,
    )


@dataclass
class OpsTarget:
    node: NodeSpec
    instance_id: pulumi.Input[str]
    address: pulumi.Input[str]
    script: str
    """The node script (components.renderers.scripts.node_script)."""
    config_hash: pulumi.Input[str]
    host_resources: list[pulumi.Resource]
    """The node's instance, volume attachment and DNS record."""


@dataclass
class ClusterOpsArgs:
    access: HostAccess
    seed: NodeSpec
    targets: list[OpsTarget]
    drain_target_groups: list[tuple[pulumi.Input[str], int]] = field(default_factory=list)
    drain_elb_name: pulumi.Input[str] | None = None
    drain_proxy_kind: str | None = None
    """nginx|haproxy: the rollout drains each node on every proxy host (drain_proxies)."""
    drain_proxies: list[tuple[pulumi.Input[str], pulumi.Input[str]]] = field(default_factory=list)
    """Proxy hosts: (instance id, private address)."""
    drain_wait: int = 30
    drain_resources: dict[str, list[pulumi.Resource]] = field(default_factory=dict)
    """Per node host: what registers it with the load balancer (the rollout waits for it)."""
    users_fingerprint: pulumi.Input[str] | None = None
    """Device credentials (a secret fingerprint): a change loads them into every running broker."""


class ClusterOps(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClusterOpsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:ClusterOps", name, None, opts)
        seed_t = next(t for t in args.targets if t.node.index == args.seed.index)
        groups = pulumi.Output.all(*[arn for arn, _ in args.drain_target_groups]).apply(
            lambda arns: " ".join(f"{a}|{p}" for a, (_, p) in zip(arns, args.drain_target_groups, strict=True))
        )
        proxies = pulumi.Output.all(*[x for pair in args.drain_proxies for x in pair]).apply(
            lambda v: " ".join(f"{v[i]},{v[i + 1]}" for i in range(0, len(v), 2))
        )
        self.members: list[command.local.Command] = []
        self.rollouts: list[command.local.Command] = []
        self.users: list[command.local.Command] = []
        for t in args.targets:
            script = step_script(
                stack=args.access.stack,
                node=t.node,
                node_script=t.script,
                region=args.access.region,
                transport=args.access.transport,
                drain_wait=args.drain_wait,
                proxy_kind=args.drain_proxy_kind,
            )
            env: dict[str, pulumi.Input[str]] = {
                "INSTANCE_ID": t.instance_id,
                "ADDRESS": t.address,
                "TARGET_GROUPS": groups,
                "ELB_NAME": args.drain_elb_name or "",
                "PROXIES": proxies,
                **args.access.env(),
            }
            interpreter = ["/bin/bash", "-c", script, f"mqtt-cluster-{t.node.host}"]
            waits = [*t.host_resources]
            if t is not seed_t:
                member_env = {**env, "PEERS": pulumi.Output.concat(seed_t.instance_id, ",", seed_t.address)}
                member = command.local.Command(
                    f"{name}-member-{t.node.host}",
                    interpreter=interpreter,
                    create="join",
                    update="join",  # a replaced host (new instance id) joins again; no leave
                    delete="leave",
                    environment=member_env,
                    logging=command.local.Logging.STDOUT_AND_STDERR,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[*seed_t.host_resources, *t.host_resources]),
                )
                self.members.append(member)
                waits = [member]
            rollout = command.local.Command(
                f"{name}-rollout-{t.node.host}",
                interpreter=interpreter,
                create="created",
                update="apply",
                environment={**env, "CONFIG_HASH": t.config_hash},
                logging=command.local.Logging.STDOUT_AND_STDERR,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*waits, *args.drain_resources.get(t.node.host, [])]),
            )
            self.rollouts.append(rollout)
            if args.users_fingerprint is not None:
                self.users.append(
                    command.local.Command(
                        f"{name}-users-{t.node.host}",
                        interpreter=interpreter,
                        create="users",
                        update="users",
                        environment={**env, "USERS_FINGERPRINT": args.users_fingerprint},
                        logging=command.local.Logging.STDOUT_AND_STDERR,
                        opts=pulumi.ResourceOptions(parent=self, depends_on=waits),
                    )
                )
        self.register_outputs({"members": [m.id for m in self.members], "rollouts": [r.id for r in self.rollouts]})
