"""The firewall as one table: (group, ports, source, reason). Pure; SecurityGroups turns it into rules.

Groups: ``front`` (the load balancer or the proxy hosts, whichever the stack uses), ``broker``,
``bastion``. A source is either a tuple of CIDRs or the name of a group.
"""

from __future__ import annotations

from dataclasses import dataclass

from components import config as c
from components.config import StackConfig, tls_passthrough


@dataclass(frozen=True)
class Rule:
    group: str
    from_port: int
    to_port: int
    source: str | tuple[str, ...]
    """A group name, or CIDR blocks."""
    reason: str
    protocol: str = "tcp"

    @property
    def from_group(self) -> bool:
        return isinstance(self.source, str)

    @property
    def ports(self) -> str:
        return str(self.from_port) if self.from_port == self.to_port else f"{self.from_port}-{self.to_port}"


def cluster_ports(engine: str) -> list[tuple[int, int, str]]:
    """Ports brokers use among themselves: (from, to, what)."""
    if engine == "emqx":
        return [
            (c.EMQX_DIST_PORT, c.EMQX_DIST_PORT, "EMQX Erlang distribution"),
            (c.EMQX_RPC_PORT, c.EMQX_RPC_PORT, "EMQX cluster RPC (gen_rpc)"),
        ]
    return [
        (c.EPMD_PORT, c.EPMD_PORT, "VerneMQ EPMD"),
        (c.VERNEMQ_CLUSTER_PORT, c.VERNEMQ_CLUSTER_PORT, "VerneMQ cluster messages"),
        (*c.VERNEMQ_DIST_PORTS, "VerneMQ Erlang distribution range"),
    ]


def health_check(cfg: StackConfig) -> tuple[int, str] | None:
    """(port, path) an NLB/ELB health check probes over HTTP, or None where the check is MQTT-level."""
    if cfg.load_balancer.kind not in ("nlb", "elb"):
        return None
    return (c.DASHBOARD_PORT, "/api/v5/status") if cfg.is_emqx else (c.VERNEMQ_HTTP_PORT, "/health")


def rules(cfg: StackConfig) -> list[Rule]:
    """Every ingress rule of the stack. Egress is open (image pulls through NAT, SSM)."""
    lb = cfg.load_balancer
    clients = tuple(cfg.access.client_cidrs)
    admins = tuple(cfg.access.admin_cidrs)
    ws = cfg.brokers.websocket
    out: list[Rule] = []

    # Devices -> the front (TLS terminates there).
    out.append(Rule("front", c.MQTTS_PORT, c.MQTTS_PORT, clients, "MQTT over TLS from devices"))
    if ws:
        out.append(Rule("front", c.WSS_PORT, c.WSS_PORT, clients, "MQTT over secure WebSocket from devices"))
    if lb.plain_mqtt:
        out.append(Rule("front", c.MQTT_PORT, c.MQTT_PORT, clients, "plain MQTT (load_balancer.plain_mqtt)"))

    if tls_passthrough(cfg):
        # Device certificates behind an NLB: TLS passes through to the brokers' SSL listeners.
        out.append(Rule("broker", c.MQTTS_PORT, c.MQTTS_PORT, "front", "MQTT over TLS passed through the load balancer"))
        if ws:
            out.append(Rule("broker", c.WSS_PORT, c.WSS_PORT, "front", "secure WebSocket passed through the load balancer"))
    else:
        # Front -> brokers: plain TCP inside the VPC.
        out.append(Rule("broker", c.MQTT_PORT, c.MQTT_PORT, "front", "MQTT forwarded by the load balancer"))
        if ws:
            out.append(Rule("broker", c.WS_PORT, c.WS_PORT, "front", "WebSocket forwarded by the load balancer"))
    check = health_check(cfg)
    if check is not None:
        hp = check[0]
        out.append(Rule("broker", hp, hp, "front", "load balancer health check"))

    # Brokers <-> brokers only.
    for lo, hi, what in cluster_ports(cfg.brokers.engine):
        out.append(Rule("broker", lo, hi, "broker", what))

    # Operators.
    ssh_from: list[str | tuple[str, ...]] = ["bastion"] if cfg.access.bastion else ([admins] if admins else [])
    for src in ssh_from:
        out.append(Rule("broker", c.SSH_PORT, c.SSH_PORT, src, "SSH for operators and the cluster-join commands"))
        if lb.kind in ("nginx", "haproxy"):
            out.append(Rule("front", c.SSH_PORT, c.SSH_PORT, src, "SSH for operators"))
    if cfg.is_emqx:
        if admins:
            out.append(Rule("broker", c.DASHBOARD_PORT, c.DASHBOARD_PORT, admins, "EMQX dashboard and API"))
        if cfg.access.bastion:
            out.append(Rule("broker", c.DASHBOARD_PORT, c.DASHBOARD_PORT, "bastion", "EMQX dashboard via the bastion"))
    if lb.kind == "haproxy" and admins:
        out.append(Rule("front", c.HAPROXY_STATS_PORT, c.HAPROXY_STATS_PORT, admins, "haproxy stats page"))
    if cfg.access.bastion:
        out.append(Rule("bastion", c.SSH_PORT, c.SSH_PORT, admins, "SSH to the bastion from operators"))
    return out


def groups(cfg: StackConfig) -> list[str]:
    names = ["front", "broker"]
    if cfg.access.bastion:
        names.append("bastion")
    return names
