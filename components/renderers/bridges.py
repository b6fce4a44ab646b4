"""EMQX MQTT bridges between regional clusters (links.mode bridge), and the script that loads them.

Each region forwards what its own clients publish on the bridged topic filters to every peer
region's TLS endpoint. Messages that arrived over a bridge are not forwarded again (their client
id starts with the bridge prefix), so a full mesh delivers each message once and never loops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from components import config as c
from components.renderers import render
from components.renderers.scripts import CLI_TIMEOUT

BRIDGE_CLIENT_PREFIX = "mqtt-bridge-"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""In the image on every node: emqx/emqx v5.8.6 deploy/docker/Dockerfile:53 installs ca-certificates."""
CONTAINER_DIR = "/opt/emqx/data/bridges"
"""Where the files appear inside the broker container (the data volume)."""
NAME_PREFIX = "to-"
"""Connector and action names: NAME_PREFIX + the peer's stack."""
REDACTED = "[secret]"
"""Stands for a peer's password in the copy of the passwords kept for review (``--render``)."""
PASSWORDS_LEAF = "links/bridge-passwords"
"""Under a regional stack's SSM prefix: the SecureString the linking stack writes with the passwords
of that region's peers, which the region's broker hosts may read (components/broker_cluster.py)."""
DESCRIBE = "forward local publishes to "
"""How our rules begin their description: the script finds the bridges of removed peers by it in
`emqx ctl rules list` (emqx/emqx v5.8.6 apps/emqx_rule_engine/src/emqx_rule_engine_cli.erl:57-59)."""


@dataclass(frozen=True)
class Peer:
    stack: str
    host: str
    """The peer region's client endpoint (its load balancer hostname)."""
    ca_pem: str | None
    """The peer's CA when its certificate is self-signed; None: a public (ACM) certificate."""
    username: str | None = None
    """The peer's bridge user (its `bridge_username` output); None: connect without credentials."""
    password: str | None = field(default=None, repr=False)
    """The peer's bridge password (its secret `bridge_password` output), or REDACTED."""

    @property
    def name(self) -> str:
        return f"{NAME_PREFIX}{self.stack}"

    @property
    def server(self) -> str:
        return f"{self.host}:{c.MQTTS_PORT}"


def rule_sql(topics: list[str]) -> str:
    sources = ", ".join(json.dumps(t) for t in topics)
    # EMQX rule SQL; the topic filters are validated by the model and quoted here.
    return f"SELECT * FROM {sources} WHERE regex_match(clientid, '^{BRIDGE_CLIENT_PREFIX}') = false"  # noqa: S608


def bridge_hocon(self_stack: str, peers: list[Peer], topics: list[str], enable: bool = True, stale: bool = False) -> str:
    """The bridges to ``peers``; ``stale``: the template that disables one removed peer's bridge."""
    return render(
        "bridges.hocon.j2",
        self_stack=self_stack,
        peers=peers,
        stale=stale,
        enable="true" if enable else "false",
        sql=json.dumps(rule_sql(topics)),
        prefix=BRIDGE_CLIENT_PREFIX,
        describe=DESCRIBE,
        system_ca=SYSTEM_CA_BUNDLE,
        json=json.dumps,
    )


def redacted(peers: list[Peer]) -> list[Peer]:
    """The peers with REDACTED for each password they carry."""
    return [replace(p, password=REDACTED) if p.password is not None else p for p in peers]


def bridge_passwords(peers: list[Peer]) -> str:
    """The peers' passwords as HOCON path keys, one line per peer that has one.

    The host appends this text to the connectors the bridge script writes: objects under the same
    key merge and dotted keys expand into nested objects that merge too (emqx/hocon 0.43.4, the
    version emqx/emqx v5.8.6 rebar.config:101 pins: test/hocon_tests.erl:441-444 ``foo.x=…,
    foo.y=…``, :603-609 ``a={x:1},a={y:2}``), so each connector gets its ``password`` (the key of
    emqx/emqx v5.8.6 apps/emqx_bridge_mqtt/src/emqx_bridge_mqtt_connector_schema.erl:130-135)."""
    return "".join(f"connectors.mqtt.{p.name}.password = {json.dumps(p.password)}\n" for p in peers if p.password is not None)


def bridge_script(
    self_stack: str,
    peers: list[Peer],
    topics: list[str],
    container: str,
    *,
    passwords_parameter: str | None = None,
    region: str | None = None,
) -> str:
    """``bash bridges.sh apply|disable`` on a region's seed host. The text holds no secret: a
    peer's password, where ``peers`` carry one, is left out of it; ``apply`` reads the passwords
    (``bridge_passwords``) on the host from the SecureString ``passwords_parameter`` in ``region``
    with the host's instance role and hands them to the broker in the file it loads, removed once
    loaded. The disabled copies carry no password: ``conf load --merge`` deep-merges into the
    stored connector and keeps its password (emqx/emqx v5.8.6
    apps/emqx_conf/src/emqx_conf_cli.erl:472-474, 698-703).
    """
    if any(p.password is not None for p in peers) and not (passwords_parameter and region):
        raise ValueError("peers with passwords need the SSM parameter (and its region) the host reads them from")
    bare = [replace(p, password=None) for p in peers]
    return render(
        "bridges.sh.j2",
        self_stack=self_stack,
        peers=bare,
        hocon=bridge_hocon(self_stack, bare, topics),
        disable_hocon=bridge_hocon(self_stack, bare, topics, enable=False),
        stale_hocon=bridge_hocon(self_stack, [], topics, stale=True),
        exec_prefix=f"docker exec {container}",
        cadir=CONTAINER_DIR,
        name_prefix=NAME_PREFIX,
        describe=DESCRIBE,
        cli_timeout=CLI_TIMEOUT,
        passwords_parameter=passwords_parameter or "",
        region=region or "",
    )
