"""Broker configuration: EMQX 5 HOCON + environment, VerneMQ environment (DOCKER_VERNEMQ_*).

Secrets (Erlang cookie, dashboard password, license) are never rendered here: the host fetches
them from SSM at boot and hands them to the container in an env file under /run.
"""

from __future__ import annotations

from components import config as c
from components.config import StackConfig
from components.renderers import auth, render
from components.renderers.nodes import NodeSpec


def listener_proxy_protocol(cfg: StackConfig) -> tuple[bool, bool]:
    """Whether the brokers' TCP and WebSocket listeners expect a PROXY header.

    One setting (load_balancer.proxy_protocol) drives both ends. nginx proxies WSS in its http
    module, which cannot send PROXY protocol; there the client address travels in X-Forwarded-For.
    """
    pp = cfg.load_balancer.proxy_protocol
    return pp, pp and cfg.load_balancer.kind != "nginx"


def emqx_hocon(cfg: StackConfig, node: NodeSpec, seeds: list[str]) -> str:
    pp, ws_pp = listener_proxy_protocol(cfg)
    return render(
        "emqx.conf.j2",
        node=node,
        cluster_name=cfg.cluster_name,
        seeds=seeds,
        websocket=cfg.brokers.websocket,
        proxy_protocol=pp,
        ws_proxy_protocol=ws_pp,
        mqtt_port=c.MQTT_PORT,
        ws_port=c.WS_PORT,
        dashboard_port=c.DASHBOARD_PORT,
        # Idle connections are closed by the broker after 1.5x keepalive (MQTT spec); this only
        # bounds how long an unauthenticated socket may sit before sending CONNECT.
        idle_timeout="15s",
    ) + auth.emqx_auth_hocon(cfg)  # devices: authentication chain and ACL source


def vernemq_env(cfg: StackConfig, node: NodeSpec, seed: NodeSpec) -> dict[str, str]:
    pp, ws_pp = listener_proxy_protocol(cfg)
    env = {
        "DOCKER_VERNEMQ_ACCEPT_EULA": "yes",
        "DOCKER_VERNEMQ_NODENAME": node.fqdn,
        "DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT": f"0.0.0.0:{c.MQTT_PORT}",
        "DOCKER_VERNEMQ_LISTENER__VMQ__CLUSTERING": f"0.0.0.0:{c.VERNEMQ_CLUSTER_PORT}",
        "DOCKER_VERNEMQ_LISTENER__HTTP__DEFAULT": f"0.0.0.0:{c.VERNEMQ_HTTP_PORT}",
        "DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MINIMUM": str(c.VERNEMQ_DIST_PORTS[0]),
        "DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MAXIMUM": str(c.VERNEMQ_DIST_PORTS[1]),
        "DOCKER_VERNEMQ_LISTENER__MAX_CONNECTIONS": "1000000",
        "DOCKER_VERNEMQ_LISTENER__NR_OF_ACCEPTORS": "100",
        "DOCKER_VERNEMQ_ERLANG__MAX_PORTS": "1100000",
    }
    if cfg.brokers.websocket:
        env["DOCKER_VERNEMQ_LISTENER__WS__DEFAULT"] = f"0.0.0.0:{c.WS_PORT}"
    if pp:
        env["DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT__PROXY_PROTOCOL"] = "on"
    if ws_pp and cfg.brokers.websocket:
        env["DOCKER_VERNEMQ_LISTENER__WS__DEFAULT__PROXY_PROTOCOL"] = "on"
    env.update(auth.vernemq_auth_env(cfg))
    if node.index != seed.index:
        # The image joins this node at every start, so a restarted node rejoins by itself.
        env["DOCKER_VERNEMQ_DISCOVERY_NODE"] = seed.fqdn
    return env


def env_file(env: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))


def broker_env(cfg: StackConfig, node: NodeSpec, seed: NodeSpec) -> dict[str, str]:
    """Non-secret container environment for the node."""
    if cfg.is_emqx:
        return {"EMQX_NODE__NAME": node.node_name, "EMQX_NODE__ROLE": node.role}
    return vernemq_env(cfg, node, seed)


def secret_env_names(cfg: StackConfig) -> dict[str, str]:
    """Container variable per SSM parameter (leaf name) the host fetches at boot."""
    if cfg.is_emqx:
        names = {"cookie": "EMQX_NODE__COOKIE", "dashboard-password": "EMQX_DASHBOARD__DEFAULT_PASSWORD"}
        if cfg.license:
            names["license"] = "EMQX_LICENSE__KEY"
        if cfg.auth.mechanism == "jwt" and cfg.jwt_secret:
            names[auth.JWT_SECRET_LEAF] = auth.EMQX_JWT_SECRET_ENV
        return names
    return {"cookie": "DOCKER_VERNEMQ_DISTRIBUTED_COOKIE"}
