"""Stable node identities: names survive host replacement because they are DNS names, not IPs."""

from __future__ import annotations

from dataclasses import dataclass

from components.config import StackConfig


@dataclass(frozen=True)
class NodeSpec:
    index: int
    """0-based position among all nodes (cores first)."""
    role: str
    """core | replicant."""
    host: str
    """Short host name, e.g. emqx-1 or emqx-replicant-1."""
    fqdn: str
    """Name in the stack's private zone, e.g. emqx-1.dev.mqtt.internal."""
    node_name: str
    """Erlang node name, e.g. emqx@emqx-1.dev.mqtt.internal."""
    az_index: int
    """Availability zone, round-robin over the zones."""


def node_prefix(engine: str) -> str:
    return "emqx" if engine == "emqx" else "VerneMQ"


def node_specs(cfg: StackConfig, zone: str | None = None) -> list[NodeSpec]:
    engine = cfg.brokers.engine
    zone = zone or cfg.zone_name
    azs = max(cfg.network.azs, 1)
    out: list[NodeSpec] = []
    roles = [("core", i) for i in range(cfg.brokers.count)] + [("replicant", i) for i in range(cfg.brokers.replicants)]
    for index, (role, i) in enumerate(roles):
        host = f"{engine}-{i + 1}" if role == "core" else f"{engine}-replicant-{i + 1}"
        fqdn = f"{host}.{zone}"
        out.append(NodeSpec(index, role, host, fqdn, f"{node_prefix(engine)}@{fqdn}", index % azs))
    return out


def seed(nodes: list[NodeSpec]) -> NodeSpec:
    """The first core node: every other node joins it, so joins never wait for each other."""
    return next(n for n in nodes if n.role == "core")
