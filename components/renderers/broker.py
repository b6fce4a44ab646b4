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


def front_kind(cfg: StackConfig) -> str:
    """What sits in front of the brokers: the local stack's proxy container, or load_balancer.kind."""
    return cfg.local_settings.proxy if cfg.role == "local" else cfg.load_balancer.kind


def ws_forwarded_headers(cfg: StackConfig) -> tuple[str, str]:
    """Headers the WebSocket listener takes the client's address and port from ("" = none).

    EMQX believes the first address of proxy_address_header and the first value of
    proxy_port_header, defaults x-forwarded-for / x-forwarded-port (emqx/emqx v5.8.6
    apps/emqx/src/emqx_ws_connection.erl:1056-1087; apps/emqx/src/emqx_schema.erl:960-975).
    Only nginx sets them (from $remote_addr / $remote_port, replacing whatever the client sent);
    NLB, ELB and haproxy pass WebSocket through as TCP, so there the header would be the device's
    own claim. A blank name matches no header, and EMQX falls back to the socket's peer.
    """
    if front_kind(cfg) == "nginx":
        return "x-forwarded-for", "x-forwarded-port"
    return "", ""


# TLS passthrough (device certificates behind an NLB): the brokers terminate TLS themselves.
TLS_HOST_DIR = "/run/mqtt-cluster/tls"
"""Server certificate and key, fetched from SSM at boot onto tmpfs (never user-data)."""
TLS_FILES = {"broker-tls-cert": "server.crt", "broker-tls-key": "server.key"}
"""SSM parameter leaf -> file name in TLS_HOST_DIR."""
EMQX_TLS_DIR = "/opt/emqx/etc/server-tls"
DEVICE_CA_HOST = "/etc/mqtt-cluster/devices-ca.pem"
"""The device CA bundle: public, so in user-data."""
EMQX_DEVICE_CA = "/opt/emqx/etc/devices-ca.pem"


def secret_files(cfg: StackConfig) -> dict[str, str]:
    """SSM parameter leaf -> host file the start script writes (root-only tmpfs, owned by the broker)."""
    return {leaf: f"{TLS_HOST_DIR}/{name}" for leaf, name in TLS_FILES.items()} if c.tls_passthrough(cfg) else {}


def passthrough_mounts(cfg: StackConfig) -> list[str]:
    if not c.tls_passthrough(cfg):
        return []
    return [f"{TLS_HOST_DIR}:{EMQX_TLS_DIR}:ro", f"{DEVICE_CA_HOST}:{EMQX_DEVICE_CA}:ro"]


def emqx_hocon(cfg: StackConfig, node: NodeSpec, seeds: list[str]) -> str:
    pp, ws_pp = listener_proxy_protocol(cfg)
    addr_header, port_header = ws_forwarded_headers(cfg)
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
        rpc_port=c.EMQX_RPC_PORT,
        proxy_address_header=addr_header,
        proxy_port_header=port_header,
        # Idle connections are closed by the broker after 1.5x keepalive (MQTT spec); this only
        # bounds how long an unauthenticated socket may sit before sending CONNECT.
        idle_timeout="15s",
        passthrough=c.tls_passthrough(cfg),
        mqtts_port=c.MQTTS_PORT,
        wss_port=c.WSS_PORT,
        tls_dir=EMQX_TLS_DIR,
        tls_files=TLS_FILES,
        device_ca=EMQX_DEVICE_CA,
    ) + auth.emqx_auth_hocon(cfg)  # devices: authentication chain and ACL source


# VerneMQ image facts (vernemq/docker-vernemq at 31299af, the commit that set VERNEMQ_VERSION="2.1.1";
# bin/vernemq.sh, files/vm.args and Dockerfile are unchanged in what follows up to 82e93e6).
VERNEMQ_ETC = "/vernemq/etc"
"""docker-vernemq 31299af bin/vernemq.sh:8-9 (VERNEMQ_ETC_DIR, vm.args in it)."""
VERNEMQ_START = "/usr/sbin/start_vernemq"
"""The image's CMD: docker-vernemq 31299af Dockerfile:16 (COPY bin/vernemq.sh /usr/sbin/start_vernemq), :49 (CMD)."""
VERNEMQ_COOKIE_ENV = "DOCKER_VERNEMQ_DISTRIBUTED_COOKIE"
"""Secret container variable carrying the cookie; vernemq.sh:237 also copies it into vernemq.conf
as ``distributed_cookie`` (vernemq 2.1.1 files/vmq.schema:15)."""

# The image ships /vernemq/etc/vm.args with "-setcookie vmq" (docker-vernemq 31299af files/vm.args:7,
# Dockerfile:18). A vm.args in the etc dir wins over distributed_cookie: cuttlefish v3.4.0
# src/cuttlefish_escript.erl:266-269 uses the existing vm.args, and vernemq 2.1.1 files/env.sh:83-90
# (sourced by bin/vernemq and bin/vmq-admin, files/vmq-admin:6) takes -setcookie from it before
# looking at distributed_cookie. So the cookie is written into vm.args itself, at container start,
# from the secret environment: nothing rendered holds it. The file stays in place and writable by
# the image user, because vernemq.sh refuses a vm.args it cannot write (bin/vernemq.sh:86-95) and
# edits it with sed -i (:108, :137, :286), which cannot replace a bind-mounted file.
# The cookie must be letters and digits: env.sh:83 and :128 put the vm.args line unquoted on
# nodetool's command line, and vernemq.sh:237 rewrites "__" in every value.
VERNEMQ_COOKIE_STEP = f"""set -eu
f={VERNEMQ_ETC}/vm.args
c="${{{VERNEMQ_COOKIE_ENV}:-}}"
case "$c" in
  "" | *[!A-Za-z0-9]*)
    echo "mqtt-cluster: {VERNEMQ_COOKIE_ENV} must be set to letters and digits only" >&2
    exit 1 ;;
esac
(
  umask 077
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in -setcookie*) ;; *) printf "%s\\n" "$line" ;; esac
  done <"$f" >"$f.new"
  printf "%s\\n" "-setcookie $c" >>"$f.new"
)
mv -f "$f.new" "$f"
unset c
exec {VERNEMQ_START}
"""


def vernemq_command() -> list[str]:
    """The container command: set the secret cookie in the image's vm.args, then the image's CMD."""
    return ["bash", "-c", VERNEMQ_COOKIE_STEP]


def vernemq_env(cfg: StackConfig, node: NodeSpec, seed: NodeSpec) -> dict[str, str]:
    """DOCKER_VERNEMQ_* for the image's start script (docker-vernemq 31299af bin/vernemq.sh).

    vernemq.sh:237 turns each variable into a vernemq.conf line (prefix cut, name lower-cased,
    "__" -> "."), then appends defaults for whatever is unset (:255-281); the package's own
    vernemq.conf already carries ``listener.http.default = 127.0.0.1:8888`` and
    ``listener.vmq.clustering = 0.0.0.0:44053`` (vernemq 2.1.1 apps/vmq_server/priv/
    vmq_server.schema:1100-1120 with vars.config:71-81). So:

    - HTTP: the image always adds ``listener.http.metrics = <host address>:8888`` (:276-278); that
      listener serves /health (every HTTP listener gets the global http_modules, vmq_server.schema:
      333-335, vmq_http_config.erl:30-31), and the package's loopback one stays beside it. Setting
      listener.http.default to 0.0.0.0:8888 as well made the two collide (EADDRINUSE).
    - WebSocket: the image adds ``listener.ws.default = <host address>:8080`` unless the variable is
      set (:268-270), and a listener cannot be switched off; without WebSocket it is kept on
      loopback, out of reach of other hosts.

    ``allow_anonymous`` defaults to off (vmq_server.schema:8-11): clients must authenticate.
    """
    pp, ws_pp = listener_proxy_protocol(cfg)
    env = {
        # The image is VerneMQ's EULA binary: commercial use needs a paid subscription
        # (docker-vernemq 31299af Dockerfile:20, README.md:23). brokers.accept_eula says so.
        "DOCKER_VERNEMQ_ACCEPT_EULA": "yes",
        "DOCKER_VERNEMQ_NODENAME": node.fqdn,
        "DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT": f"0.0.0.0:{c.MQTT_PORT}",
        "DOCKER_VERNEMQ_LISTENER__VMQ__CLUSTERING": f"0.0.0.0:{c.VERNEMQ_CLUSTER_PORT}",
        "DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MINIMUM": str(c.VERNEMQ_DIST_PORTS[0]),
        "DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MAXIMUM": str(c.VERNEMQ_DIST_PORTS[1]),
        "DOCKER_VERNEMQ_LISTENER__MAX_CONNECTIONS": "1000000",
        "DOCKER_VERNEMQ_LISTENER__NR_OF_ACCEPTORS": "100",
        "DOCKER_VERNEMQ_ERLANG__MAX_PORTS": "1100000",
    }
    if cfg.brokers.websocket:
        env["DOCKER_VERNEMQ_LISTENER__WS__DEFAULT"] = f"0.0.0.0:{c.WS_PORT}"
    else:
        env["DOCKER_VERNEMQ_LISTENER__WS__DEFAULT"] = f"127.0.0.1:{c.WS_PORT}"
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


def broker_command(cfg: StackConfig) -> list[str] | None:
    """Container command, or None for the image's own."""
    return None if cfg.is_emqx else vernemq_command()


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
    return {"cookie": VERNEMQ_COOKIE_ENV}
