"""What the linking (global) stack may link: the regional stacks' own files, checked together.

The linking stack reads each regional stack's file (stacks/Pulumi.<name>.yaml, in this repository)
so every cross-stack rule — overlapping CIDRs, a region linked to itself, engine or cookie
mismatches in cluster mode — is decided before any resource is registered, naming both stacks
and the key. Run-time facts (ids, addresses, hostnames) come from stack references.
Pure: no Pulumi imports.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from components import stackfile
from components.config import ConfigError, LinksConfig, StackConfig, filter_covers, parse, stack_file_config

STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"

REQUIRED_OUTPUTS = (
    "region",
    "engine",
    "vpc_id",
    "vpc_cidr",
    "private_route_table_ids",
    "broker_security_group_id",
    "node_names",
    "node_addresses",
    "node_instance_ids",
    "private_zone_id",
    "mqtt_host",
    "cluster_name",
    "cookie_fingerprint",
)
"""What every regional stack exports for its peers (README: "Multi-region"); the linking stack's
commands reach a region's hosts by instance id through Systems Manager in its ``region``."""
SSH_OUTPUTS = ("deploy_private_key", "ssh_user", "bastion_ip")
"""Also needed for a region whose file says ``access.transport: ssh``: its commands go over SSH
through its bastion (the regional model refuses ssh without one, naming access.transport)."""
BRIDGE_OUTPUTS = ("bridge_username", "bridge_password", "bridge_passwords_parameter")
"""What the bridges of peer regions log in with (links.mode bridge; the regional auth.bridge_topics),
and the SecureString the region's hosts may read them from."""


@dataclass(frozen=True)
class Region:
    """A linked regional stack as its file describes it."""

    stack: str
    cfg: StackConfig
    source: str

    @property
    def region(self) -> str:
        return self.cfg.region or ""

    @property
    def cidr(self) -> str:
        return self.cfg.network.cidr

    @property
    def route_tables(self) -> int:
        """Private route tables: one per availability zone (components/network.py)."""
        return self.cfg.network.azs


def load_region(stack: str, *, source: str, key: str, stacks_dir: Path = STACKS_DIR) -> Region:
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise ConfigError(source, key, f"{stack} does not exist (no stacks/{path.name})")
    try:
        # Read as the CLI reads it (go-yaml v3, YAML 1.2): `on`/`yes` stay strings, duplicate keys are refused.
        doc = stackfile.load(path.read_text(encoding="utf-8")) or {}
    except stackfile.StackFileError as exc:
        raise ConfigError(f"stacks/{path.name}", key, str(exc)) from None
    raw, region = stack_file_config(doc)
    rel = f"stacks/{path.name}"
    cfg = parse(raw, stack=stack, source=rel, region=region)  # its own errors name its own file
    return Region(stack, cfg, rel)


def pairs(links: LinksConfig) -> list[tuple[str, str]]:
    """(requester, accepter) per peering: every pair (full) or the primary with each (hub)."""
    if links.mesh == "hub":
        primary = links.primary_stack
        return [(primary, s) for s in links.stacks if s != primary]
    return [(a, b) for i, a in enumerate(links.stacks) for b in links.stacks[i + 1 :]]


def _minor(version: str) -> str:
    return ".".join(re.findall(r"\d+", version)[:2])


def check(cfg: StackConfig, source: str, stacks_dir: Path | None = None) -> dict[str, Region]:
    """Load and cross-check the linked stacks; raise ConfigError naming both stacks and the key."""
    stacks_dir = stacks_dir or STACKS_DIR
    links = cfg.links
    assert links is not None  # the model requires links for role global
    regions: dict[str, Region] = {}
    for name in links.stacks:
        if name == cfg.stack:
            raise ConfigError(source, "mqtt-cluster:links.stacks", f"{cfg.stack} cannot link itself")
        r = load_region(name, source=source, key="mqtt-cluster:links.stacks", stacks_dir=stacks_dir)
        if r.cfg.role != "regional":
            raise ConfigError(source, "mqtt-cluster:links.stacks", f"{name} has role {r.cfg.role}; only regional stacks can be linked")
        regions[name] = r
    listed = list(regions.values())
    for i, a in enumerate(listed):
        for b in listed[i + 1 :]:
            if a.region == b.region:
                raise ConfigError(
                    source,
                    "aws:region",
                    f"{a.stack} and {b.stack} are both in {a.region}: a region cannot be linked to itself",
                )
            if ipaddress.ip_network(a.cidr).overlaps(ipaddress.ip_network(b.cidr)):
                raise ConfigError(
                    source,
                    "mqtt-cluster:network.cidr",
                    f"{a.stack} ({a.cidr}) and {b.stack} ({b.cidr}) overlap; peered VPCs need distinct blocks",
                )
    primary = regions[links.primary_stack]
    if links.mode == "cluster":
        for r in listed:
            if not r.cfg.is_emqx:
                # Each region is already a VerneMQ cluster of its own, and VerneMQ refuses to join a node
                # with history to another cluster: vmq_swc.prevent_nonempty_join defaults to on and
                # attempt_join answers {error, non_empty_node} (vernemq/vernemq 2.1.1
                # apps/vmq_swc/src/vmq_swc_peer_service.erl:54-65, apps/vmq_swc/priv/vmq_swc.schema:81).
                # Bridges are EMQX-only here, so VerneMQ regions cannot be linked at all.
                raise ConfigError(
                    source,
                    "mqtt-cluster:links.mode",
                    f"{r.stack} runs vernemq: its nodes already form a regional cluster, and VerneMQ refuses to join a node "
                    "with history (non_empty_node) to another one; cross-region links need emqx",
                )
    for r in listed:
        if r is primary:
            continue
        if links.mode == "cluster":
            if _minor(r.cfg.brokers.effective_version) != _minor(primary.cfg.brokers.effective_version):
                raise ConfigError(
                    source,
                    "mqtt-cluster:brokers.version",
                    f"{r.stack} runs {r.cfg.brokers.effective_version}, {primary.stack} runs "
                    f"{primary.cfg.brokers.effective_version}: one cluster needs one release line",
                )
            if r.cfg.brokers.cluster_with not in (None, primary.stack):
                raise ConfigError(
                    source,
                    "mqtt-cluster:brokers.cluster_with",
                    f"{r.stack} shares the cluster of {r.cfg.brokers.cluster_with}, but the primary is {primary.stack}",
                )
            if r.cfg.brokers.cluster_with is None and not (r.cfg.cookie and primary.cfg.cookie):
                raise ConfigError(
                    source,
                    "mqtt-cluster:cookie",
                    f"{r.stack} and {primary.stack} each generate their own Erlang cookie, so they cannot form one cluster; "
                    f"set brokers.cluster_with: {primary.stack} in {r.source}",
                )
        else:
            if r.cfg.brokers.cluster_with is not None:
                raise ConfigError(
                    source,
                    "mqtt-cluster:brokers.cluster_with",
                    f"{r.stack} shares the cluster of {r.cfg.brokers.cluster_with}, but links.mode is bridge",
                )
    if links.mode == "bridge":
        for r in listed:
            if not r.cfg.is_emqx:
                raise ConfigError(
                    source,
                    "mqtt-cluster:links.mode",
                    f"bridge mode configures EMQX bridges, and {r.stack} runs {r.cfg.brokers.engine} (use cluster mode)",
                )
            # Peers' bridges log in as the region's bridge user, whose ACL allows its own
            # auth.bridge_topics only: a filter outside them would be refused message by message.
            admitted = r.cfg.auth.bridge_topics or []
            refused = [t for t in links.bridge_topics if not any(filter_covers(a, t) for a in admitted)]
            if refused:
                allowed = ", ".join(admitted) if admitted else "none: no bridge user"
                raise ConfigError(
                    source,
                    "mqtt-cluster:links.bridge_topics",
                    f"{cfg.stack} bridges {', '.join(refused)} into {r.stack}, which admits {allowed} "
                    f"(set mqtt-cluster:auth.bridge_topics in {r.source})",
                )
    return regions
