"""RegionLinks: regional stacks tied together — peering, routes, cross-region cluster or bridges,
one global hostname.

Counts come from the regional stacks' files (components/links.py), run-time ids from their stack
references, so every resource is declared up front (none inside an apply). Every resource names
its region explicitly (pulumi-aws 7 takes ``region=`` per resource): one provider serves all.
"""

from __future__ import annotations

import functools
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
from components.links import BRIDGE_OUTPUTS, CLUSTER_OUTPUTS, REQUIRED_OUTPUTS, Region, pairs
from components.renderers.bridges import Peer, bridge_script, redacted
from components.renderers.nodes import node_specs, seed
from components.renderers.scripts import node_script
from components.settings import StackConfigError

LEFT_IN_CLUSTER = (
    "echo 'mqtt-cluster: this node stays in the cross-region cluster; to split its region off, run "
    "emqx ctl cluster leave on each of its nodes (see README: Multi-region)' >&2"
)


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
        needed = REQUIRED_OUTPUTS + CLUSTER_OUTPUTS  # both modes run commands on the regions' hosts
        if links.mode == "bridge":
            needed += BRIDGE_OUTPUTS  # each region's bridge user, which its peers log in as
        # Every export a peer relies on is checked, so a stack deployed by an older version fails
        # with one line naming it and the output, whatever this run goes on to use.
        raw = {s: {k: r.out(k) for k in needed} for s, r in self.remotes.items()}
        gate = pulumi.Output.all(*[v for outs in raw.values() for v in outs.values()]).apply(lambda _: True)
        if links.mode == "cluster":
            gate = pulumi.Output.all(gate, self._same_cookie(raw, links.primary_stack, args.source)).apply(lambda _: True)
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

        self.commands: list[command.remote.Command] = []
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

    def _connection(self, remote: Remote, host: pulumi.Input[str]) -> command.remote.ConnectionArgs:
        out = self.checked[remote.region.stack]
        key = pulumi.Output.secret(out["deploy_private_key"])
        user = out["ssh_user"]
        bastion = command.remote.ProxyConnectionArgs(host=out["bastion_ip"], user=user, private_key=key)
        return command.remote.ConnectionArgs(host=host, user=user, private_key=key, proxy=bastion, dial_error_limit=60)

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
                host = remote_item(self.checked[stack]["node_addresses"], node.index)
                self.commands.append(
                    command.remote.Command(
                        f"{name}-join-{stack}-{node.host}",
                        connection=self._connection(remote, host),
                        create="sudo bash -s -- join",
                        delete=LEFT_IN_CLUSTER,
                        stdin=script,
                        logging=command.remote.Logging.STDOUT_AND_STDERR,
                        opts=pulumi.ResourceOptions(parent=self, depends_on=network),
                    )
                )

    def _bridges(self, name: str, args: RegionLinksArgs) -> None:
        """Separate clusters; each forwards local publishes on the bridged topics to its peers."""
        peers_of: dict[str, list[str]] = {s: [] for s in self.remotes}
        for a, b in pairs(args.links):
            peers_of[a].append(b)
            peers_of[b].append(a)
        for stack, remote in self.remotes.items():
            peer_names = peers_of[stack]
            peer_values = [
                pulumi.Output.all(
                    self.checked[p]["mqtt_host"],
                    self.remotes[p].ref.get_output("ca_certificate"),
                    self.checked[p]["bridge_username"],
                    pulumi.Output.secret(self.checked[p]["bridge_password"]),
                )
                for p in peer_names
            ]

            def render(values: list[list[Any]], stack: str = stack, peer_names: list[str] = peer_names, hide: bool = False) -> str:
                peers = [Peer(p, host, ca, user, pw) for p, (host, ca, user, pw) in zip(peer_names, values, strict=True)]
                return bridge_script(stack, redacted(peers) if hide else peers, args.links.bridge_topics, container=CONTAINER)

            everything = pulumi.Output.all(*peer_values)
            # The peers' passwords travel only in the command's secret stdin; the copy kept for
            # review (the offline plan's --render) shows REDACTED in their place.
            script = pulumi.Output.secret(everything.apply(render))
            hostfiles.put(f"{stack}/seed", "bridges.sh", everything.apply(functools.partial(render, hide=True)))
            region_seed = seed(node_specs(remote.region.cfg))
            self.commands.append(
                command.remote.Command(
                    f"{name}-bridges-{stack}",
                    connection=self._connection(remote, remote_item(self.checked[stack]["node_addresses"], region_seed.index)),
                    create="sudo bash -s -- apply",
                    update="sudo bash -s -- apply",
                    delete="sudo bash -s -- disable",
                    stdin=script,
                    logging=command.remote.Logging.STDOUT_AND_STDERR,
                    opts=pulumi.ResourceOptions(parent=self),
                )
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
