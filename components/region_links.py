"""RegionLinks: regional stacks tied together — peering, routes, cross-region cluster or bridges,
one global hostname.

Counts come from the regional stacks' files (components/links.py), run-time ids from their stack
references, so every resource is declared up front (none inside an apply). Every resource names
its region explicitly (pulumi-aws 7 takes ``region=`` per resource): one provider serves all.

The commands on the regions' hosts (cross-region joins, bridge configuration) run as the regional
day-2 steps do: a ``local.Command`` runs the step script (templates/rollout.sh.j2, components.rollout)
on the deploying machine, which reaches the host through Systems Manager Run Command in that host's
region (each regional stack's ``region`` output) or, where the region's file says ``access.transport:
ssh``, over SSH through its bastion. So the linking stack deploys from wherever the regional ones
do: a GitHub-hosted runner with AWS credentials only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components import config as c
from components import firewall, hostfiles
from components.broker_cluster import CONTAINER
from components.config import LinksConfig
from components.links import BRIDGE_OUTPUTS, REQUIRED_OUTPUTS, SSH_OUTPUTS, Region, pairs
from components.renderers.bridges import REDACTED, Peer, bridge_passwords, bridge_script
from components.renderers.nodes import NodeSpec, node_specs, seed
from components.renderers.scripts import node_script
from components.rollout import HostAccess, step_script
from components.settings import StackConfigError

LEFT_IN_CLUSTER = "stays"
"""The delete of a cross-region join: the step script only says that the node stays in the cluster
(removing the link must not tear a region out of it; README: Multi-region)."""


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Remote:
    """One regional stack's exports, each checked for presence with a one-line error."""

    def __init__(self, region: Region, organization: str, source: str, parent: pulumi.Resource):
        self.region = region
        self.source = source
        self.ref = pulumi.StackReference(
            f"{organization}/{pulumi.get_project()}/{region.stack}", opts=pulumi.ResourceOptions(parent=parent)
        )

    def out(self, name: str) -> pulumi.Output[Any]:
        stack, source = self.region.stack, self.source

        def present(value: Any) -> Any:
            if value is None:
                raise StackConfigError(
                    source, "mqtt-cluster:links.stacks", f"{stack} has no output {name!r} (update {stack} with this version first)"
                )
            return value

        return self.ref.get_output(name).apply(present)


def remote_item(values: pulumi.Output[list[Any]], index: int) -> pulumi.Output[Any]:
    """One element of an exported list whose length the regional stack file fixes."""
    return values.apply(lambda v: v[index])


@dataclass
class RegionLinksArgs:
    stack: str
    links: LinksConfig
    regions: dict[str, Region]
    """The linked stacks, as their files describe them, in links.stacks order."""
    organization: str
    source: str
    tags: dict[str, str]


class RegionLinks(pulumi.ComponentResource):
    def __init__(self, name: str, args: RegionLinksArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:RegionLinks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        links, tags = args.links, args.tags
        self.remotes = {s: Remote(r, args.organization, args.source, self) for s, r in args.regions.items()}

        def needed(region: Region) -> tuple[str, ...]:
            # Both modes run commands on the regions' hosts: through SSM by instance id, or over SSH
            # through the bastion where the region's file says so.
            keys = REQUIRED_OUTPUTS + (SSH_OUTPUTS if region.cfg.access.transport == "ssh" else ())
            if links.mode == "bridge":
                keys += BRIDGE_OUTPUTS  # each region's bridge user, and where its hosts read the peers' passwords
            return keys

        # Every export a peer relies on is checked, so a stack deployed by an older version fails
        # with one line naming it and the output, whatever this run goes on to use.
        raw = {s: {k: r.out(k) for k in needed(r.region)} for s, r in self.remotes.items()}
        gate = pulumi.Output.all(*[v for outs in raw.values() for v in outs.values()]).apply(lambda _: True)
        if links.mode == "cluster":
            gate = pulumi.Output.all(gate, self._same_cookie(raw, links.primary_stack, args.source)).apply(lambda _: True)
        # The gate says only "all present": it must not make every value that passes it secret
        # because a secret export (a bridge password, the deploy key) was among those checked.
        gate = pulumi.Output.unsecret(gate)
        # Every value a resource takes passes the gate: one missing export or one mismatch, and
        # no link resource is registered at all.
        self.checked = {s: {k: pulumi.Output.all(gate, v).apply(lambda x: x[1]) for k, v in outs.items()} for s, outs in raw.items()}

        network: list[pulumi.Resource] = []
        self.peerings: list[aws.ec2.VpcPeeringConnection] = []
        for a_name, b_name in pairs(links):
            a, b = self.remotes[a_name], self.remotes[b_name]
            ra, rb = a.region, b.region
            pair = f"{name}-{a_name}-{b_name}"
            pcx = aws.ec2.VpcPeeringConnection(
                pair,
                region=ra.region,
                vpc_id=self.checked[a_name]["vpc_id"],
                peer_vpc_id=self.checked[b_name]["vpc_id"],
                peer_region=rb.region,
                auto_accept=False,  # inter-region peering is accepted in the peer region
                tags={**tags, "Name": f"{a_name} <-> {b_name}", "Side": "requester"},
                opts=child,
            )
            accept = aws.ec2.VpcPeeringConnectionAccepter(
                f"{pair}-accept",
                region=rb.region,
                vpc_peering_connection_id=pcx.id,
                auto_accept=True,
                tags={**tags, "Name": f"{a_name} <-> {b_name}", "Side": "accepter"},
                opts=child,
            )
            # Private DNS across the peering: each side resolves the other's names to private IPs.
            dns = [
                aws.ec2.PeeringConnectionOptions(
                    f"{pair}-dns-requester",
                    region=ra.region,
                    vpc_peering_connection_id=accept.id,
                    requester=aws.ec2.PeeringConnectionOptionsRequesterArgs(allow_remote_vpc_dns_resolution=True),
                    opts=child,
                ),
                aws.ec2.PeeringConnectionOptions(
                    f"{pair}-dns-accepter",
                    region=rb.region,
                    vpc_peering_connection_id=accept.id,
                    accepter=aws.ec2.PeeringConnectionOptionsAccepterArgs(allow_remote_vpc_dns_resolution=True),
                    opts=child,
                ),
            ]
            network += [accept, *dns]
            for here, there in ((a, rb), (b, ra)):
                for i in range(here.region.route_tables):
                    network.append(
                        aws.ec2.Route(
                            f"{name}-{here.region.stack}-rt{i + 1}-to-{there.stack}",
                            region=here.region.region,
                            route_table_id=remote_item(self.checked[here.region.stack]["private_route_table_ids"], i),
                            destination_cidr_block=there.cidr,
                            vpc_peering_connection_id=accept.id,
                            opts=child,
                        )
                    )
                if links.mode == "cluster":
                    # Only the brokers' cluster ports cross, and only from the peer's VPC block.
                    for lo, hi, what in firewall.cluster_ports(here.region.cfg.brokers.engine):
                        ports = str(lo) if lo == hi else f"{lo}-{hi}"
                        network.append(
                            aws.vpc.SecurityGroupIngressRule(
                                f"{name}-{here.region.stack}-broker-{ports}-from-{there.stack}",
                                region=here.region.region,
                                security_group_id=self.checked[here.region.stack]["broker_security_group_id"],
                                cidr_ipv4=there.cidr,
                                from_port=lo,
                                to_port=hi,
                                ip_protocol="tcp",
                                description=f"{what} from {there.stack}",
                                tags={**tags, "Name": f"{ports} from {there.stack}"},
                                opts=child,
                            )
                        )
            self.peerings.append(pcx)

        self.commands: list[command.local.Command] = []
        self.parameters: list[aws.ssm.Parameter] = []
        if links.mode == "cluster":
            self._cluster(name, args, network)
        else:
            self._bridges(name, args)

        self.records: list[aws.route53.Record] = []
        if links.global_hostname and links.hosted_zone_id:
            self._global_name(name, args)

        self.register_outputs({"peerings": [p.id for p in self.peerings]})

    @staticmethod
    def _same_cookie(raw: dict[str, dict[str, pulumi.Output[Any]]], primary: str, source: str) -> pulumi.Output[bool]:
        stacks = list(raw)

        def check(values: list[str]) -> bool:
            by_stack = dict(zip(stacks, values, strict=True))
            for stack, fp in by_stack.items():
                if fp != by_stack[primary]:
                    raise StackConfigError(source, "mqtt-cluster:cookie", f"{stack} and {primary} use different Erlang cookies")
            return True

        return pulumi.Output.all(*[raw[s]["cookie_fingerprint"] for s in stacks]).apply(check)

    def _step(
        self,
        name: str,
        remote: Remote,
        node: NodeSpec,
        node_script: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
        *,
        create: str,
        delete: str,
        environment: dict[str, pulumi.Input[str]] | None = None,
    ) -> command.local.Command:
        """A ``local.Command`` running the day-2 step script for ``node`` of ``remote``'s region on the
        deploying machine: ``create`` (and, on any change, again as the update) and ``delete`` are its
        actions. The host is reached as the region's own steps reach it (its ``access.transport``):
        SSM Run Command to its instance id (``node_instance_ids``) in its ``region`` output, or SSH
        to its address through the bastion with the deploy key, a secret environment value."""
        region, out = remote.region, self.checked[remote.region.stack]
        transport = region.cfg.access.transport
        script = pulumi.Output.from_input(node_script).apply(
            lambda text: step_script(
                stack=region.stack,
                node=node,
                node_script=text,
                region=region.region,
                transport=transport,
                drain_wait=0,
                links_step=True,
            )
        )
        env: dict[str, pulumi.Input[str]] = {
            "INSTANCE_ID": remote_item(out["node_instance_ids"], node.index),
            "ADDRESS": remote_item(out["node_addresses"], node.index),
            "REGION": out["region"],
        }
        if transport == "ssh":  # only ssh regions export the bastion and the key (components/links.py)
            access = HostAccess(
                region.stack,
                region.region,
                transport,
                ssh_user=out["ssh_user"],
                private_key=pulumi.Output.secret(out["deploy_private_key"]),
                bastion_host=out["bastion_ip"],
            )
            env.update(access.env())
        command_ = command.local.Command(
            name,
            interpreter=["/bin/bash", "-c", script, f"mqtt-cluster-{region.stack}-{node.host}"],
            create=create,
            update=create,
            delete=delete,
            environment={**env, **(environment or {})},
            logging=command.local.Logging.STDOUT_AND_STDERR,
            opts=opts,
        )
        self.commands.append(command_)
        return command_

    def _cluster(self, name: str, args: RegionLinksArgs, network: list[pulumi.Resource]) -> None:
        """One cluster: node names resolve everywhere, then every core node of every other region
        joins the primary's seed with the same script the regional joins use."""
        child = pulumi.ResourceOptions(parent=self)
        for a_name in self.remotes:
            for b_name, b in self.remotes.items():
                if a_name == b_name:
                    continue
                network.append(
                    aws.route53.ZoneAssociation(
                        f"{name}-zone-{a_name}-in-{b_name}",
                        zone_id=self.checked[a_name]["private_zone_id"],
                        vpc_id=self.checked[b_name]["vpc_id"],
                        vpc_region=b.region.region,
                        opts=child,
                    )
                )
        primary = self.remotes[args.links.primary_stack]
        primary_seed = seed(node_specs(primary.region.cfg))
        engine = primary.region.cfg.brokers.engine
        for stack, remote in self.remotes.items():
            if remote is primary:
                continue
            for node in node_specs(remote.region.cfg):
                if node.role != "core":
                    continue  # replicants follow their region's cores by discovery
                script = node_script(engine, node, primary_seed, container=CONTAINER)
                hostfiles.put(f"{stack}/{node.host}", "join-primary.sh", script)
                # A replaced host (new instance id) joins again; removing the link leaves the node
                # in the cluster (LEFT_IN_CLUSTER).
                self._step(
                    f"{name}-join-{stack}-{node.host}",
                    remote,
                    node,
                    script,
                    pulumi.ResourceOptions(parent=self, depends_on=network),
                    create="join",
                    delete=LEFT_IN_CLUSTER,
                )

    def _bridges(self, name: str, args: RegionLinksArgs) -> None:
        """Separate clusters; each forwards local publishes on the bridged topics to its peers.

        The peers' passwords never travel with the command. Systems Manager keeps a command's
        parameters, and ListCommands returns them to whoever may list commands (boto/botocore
        1.43.67 botocore/data/ssm/2014-11-06/service-2.json:1522-1538 ListCommands, :11415-11421
        Commands, :4416-4419 Command.Parameters; the model marks that map sensitive, :14474-14479,
        which does not take it out of the answer), and the step script's ``aws ssm send-command``
        carries them on its command line, visible in ``ps`` on the deploying machine. So the bridge
        script holds no secret (the peers' hosts, public CAs and usernames only). The passwords go
        from this stack's secret state into one SecureString per region
        (``bridge_passwords_parameter``, under the region's own SSM prefix, encrypted with the
        account's aws/ssm key), which that region's broker role may read (its read policy names
        it: components/broker_cluster.py; every other host role denies it, as every parameter not
        its own). The seed reads it with its instance role while it applies the bridges, appends
        it to the file it loads and removes that file (templates/bridges.sh.j2). A new value (a
        peer's password rotated) is a new parameter version, which runs ``bridges-apply`` again."""
        peers_of: dict[str, list[str]] = {s: [] for s in self.remotes}
        for a, b in pairs(args.links):
            peers_of[a].append(b)
            peers_of[b].append(a)
        topics = args.links.bridge_topics
        for stack, remote in self.remotes.items():
            out = self.checked[stack]
            names = peers_of[stack]
            # Per peer (host, CA, bridge username): public; their passwords: secret.
            public = pulumi.Output.all(
                *[
                    pulumi.Output.all(
                        self.checked[p]["mqtt_host"], self.remotes[p].ref.get_output("ca_certificate"), self.checked[p]["bridge_username"]
                    )
                    for p in names
                ]
            )
            passwords = pulumi.Output.all(*[pulumi.Output.secret(self.checked[p]["bridge_password"]) for p in names])

            def peers(values: list[list[Any]], pws: list[str | None], names: list[str] = names) -> list[Peer]:
                return [Peer(p, host, ca, user, pw) for p, (host, ca, user), pw in zip(names, values, pws, strict=True)]

            parameter = aws.ssm.Parameter(
                f"{name}-bridge-passwords-{stack}",
                region=out["region"],
                name=out["bridge_passwords_parameter"],
                type="SecureString",
                value=pulumi.Output.secret(
                    pulumi.Output.all(public, passwords).apply(lambda v, peers=peers: bridge_passwords(peers(v[0], v[1])))
                ),
                description=f"mqtt-cluster: the bridge passwords of {stack}'s peers (linking stack {args.stack})",
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.parameters.append(parameter)
            script = pulumi.Output.all(out["region"], out["bridge_passwords_parameter"], public).apply(
                lambda v, stack=stack, peers=peers: bridge_script(
                    stack,
                    peers(v[2], [None] * len(v[2])),
                    topics,
                    container=CONTAINER,
                    passwords_parameter=v[1],
                    region=v[0],
                )
            )
            # The copies kept for review (the offline plan's --render): the script as the host gets
            # it, and the parameter's text with [secret] for each password.
            hostfiles.put(f"{stack}/seed", "bridges.sh", script)
            hostfiles.put(
                f"{stack}/seed",
                "bridge-passwords.hocon",
                public.apply(lambda v, peers=peers: bridge_passwords(peers(v, [REDACTED] * len(v)))),
            )
            self._step(
                f"{name}-bridges-{stack}",
                remote,
                seed(node_specs(remote.region.cfg)),
                script,
                pulumi.ResourceOptions(parent=self, depends_on=[parameter]),
                create="bridges-apply",
                delete="bridges-disable",
                environment={"PASSWORDS_VERSION": parameter.version.apply(lambda v: str(v or ""))},
            )

    def _global_name(self, name: str, args: RegionLinksArgs) -> None:
        """Latency records over the regional endpoints, each withdrawn when its health check fails."""
        links = args.links
        child = pulumi.ResourceOptions(parent=self)
        for stack, remote in self.remotes.items():
            host = self.checked[stack]["mqtt_host"]
            check = aws.route53.HealthCheck(
                f"{name}-health-{stack}",
                type="TCP",
                fqdn=host.apply(lambda h: None if _is_ip(h) else h),
                ip_address=host.apply(lambda h: h if _is_ip(h) else None),
                port=c.MQTTS_PORT,
                request_interval=10,
                failure_threshold=3,
                tags={**args.tags, "Name": f"{links.global_hostname} via {stack}"},
                opts=child,
            )
            self.records.append(
                aws.route53.Record(
                    f"{name}-latency-{stack}",
                    zone_id=links.hosted_zone_id or "",
                    name=links.global_hostname or "",
                    type=host.apply(lambda h: "A" if _is_ip(h) else "CNAME"),
                    ttl=60,
                    records=[host],
                    set_identifier=stack,
                    latency_routing_policies=[aws.route53.RecordLatencyRoutingPolicyArgs(region=remote.region.region)],
                    health_check_id=check.id,
                    opts=child,
                )
            )
