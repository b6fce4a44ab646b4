"""EMQX MQTT bridges between regional clusters (links.mode bridge), and the script that loads them.

Each region forwards what its own clients publish on the bridged topic filters to every peer
region's TLS endpoint. Messages that arrived over a bridge are not forwarded again (their client
id starts with the bridge prefix), so a full mesh delivers each message once and never loops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from components import config as c
from components.renderers import render

BRIDGE_CLIENT_PREFIX = "mqtt-bridge-"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CONTAINER_DIR = "/opt/emqx/data/bridges"
"""Where the files appear inside the broker container (the data volume)."""


@dataclass(frozen=True)
class Peer:
    stack: str
    host: str
    """The peer region's client endpoint (its load balancer hostname)."""
    ca_pem: str | None
    """The peer's CA when its certificate is self-signed; None: a public (ACM) certificate."""

    @property
    def name(self) -> str:
        return f"to-{self.stack}"


def rule_sql(topics: list[str]) -> str:
    sources = ", ".join(json.dumps(t) for t in topics)
    # EMQX rule SQL; the topic filters are validated by the model and quoted here.
    return f"SELECT * FROM {sources} WHERE regex_match(clientid, '^{BRIDGE_CLIENT_PREFIX}') = false"  # noqa: S608


def bridge_hocon(self_stack: str, peers: list[Peer], topics: list[str], enable: bool = True) -> str:
    return render(
        "bridges.hocon.j2",
        self_stack=self_stack,
        peers=peers,
        enable="true" if enable else "false",
        sql=json.dumps(rule_sql(topics)),
        port=c.MQTTS_PORT,
        prefix=BRIDGE_CLIENT_PREFIX,
        cadir=CONTAINER_DIR,
        system_ca=SYSTEM_CA_BUNDLE,
        json=json.dumps,
    )


def bridge_script(self_stack: str, peers: list[Peer], topics: list[str], container: str) -> str:
    """``bash -s -- apply|disable`` on a region's seed host."""
    return render(
        "bridges.sh.j2",
        self_stack=self_stack,
        peers=peers,
        hocon=bridge_hocon(self_stack, peers, topics),
        disable_hocon=bridge_hocon(self_stack, peers, topics, enable=False),
        exec_prefix=f"docker exec {container}",
        cadir=CONTAINER_DIR,
    )
