"""EMQX 5.8.6 as the official image really runs it: the ports it listens on, the roles it accepts,
the client address it believes and the status it prints. Every fact below is copied from the
upstream source at a pinned tag (repository, tag, file:line beside it); the tests derive what the
container will do from the rendered files plus these facts, and check the design against that.
"""

from __future__ import annotations

import re
import shlex
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from pyhocon import ConfigFactory

from components import config as c
from components.config import ConfigError, parse
from components.renderers.nodes import node_specs
from components.renderers.proxy import Backend
from tests.conftest import ROOT, group_id, plan_of, rules_into
from tests.harness import Lab, free_port, make_certs

# --- Facts -------------------------------------------------------------------------------------

# emqx/emqx v5.8.6 deploy/docker/docker-entrypoint.sh:52
#   export EMQX_RPC__PORT_DISCOVERY="${EMQX_RPC__PORT_DISCOVERY:-manual}"
ENTRYPOINT_PORT_DISCOVERY = "manual"
# emqx/emqx v5.8.6 apps/emqx_conf/src/emqx_conf_schema.erl:120 (-define(DEFAULT_RPC_PORT, 5369)),
# :782-790 (rpc.server_port, aliases tcp_server_port / ssl_server_port)
RPC_SERVER_PORT_DEFAULT = 5369
RPC_SERVER_PORT_ALIASES = ("server_port", "tcp_server_port", "ssl_server_port")
# emqx/emqx v5.8.6 apps/emqx_conf/src/emqx_conf_schema.erl:1157-1160 and :1244-1245: gen_rpc's
# tcp_server_port, ssl_server_port, tcp_client_port and ssl_client_port all take rpc.server_port.
# emqx/gen_rpc 3.4.1 src/gen_rpc_helper.erl:118-122 (server listens on <driver>_server_port) and
# :233-237 (client dials <driver>_client_port) under manual discovery.
# emqx/emqx v5.8.6 rel/i18n/emqx_conf_schema.hocon:137-140: stateless listens on 5370 + N for emqxN@host.
RPC_STATELESS_BASE = 5370
# emqx/ekka 0.19.8 src/ekka_dist.erl:30 (DEFAULT_PORT 4370), :134-141 (base + offset), :144-150
# (offset = the integer ending the part before '@', else 0). ekka tag: emqx/emqx v5.8.6 rebar.config:86.
DIST_BASE_PORT = 4370
# emqx/emqx v5.8.6 deploy/docker/Dockerfile:76: EXPOSE 1883 8083 8084 8883 18083 4370 5369
IMAGE_EXPOSES = {1883, 8083, 8084, 8883, 18083, 4370, 5369}
# emqx/emqx v5.8.6 apps/emqx_management/src/emqx_mgmt_cli.erl:66-68:
#   "Node ~p ~ts is ~p~n" with init:get_status()'s starting | started | stopping; exit 0 either way.
STATUS_LINE = "Node '{node}' 5.8.6 is {status}\n"
# emqx/emqx v5.8.6 apps/emqx/src/emqx_schema.erl:960-975: defaults of the WebSocket listener.
WS_HEADER_DEFAULTS = {"proxy_address_header": "x-forwarded-for", "proxy_port_header": "x-forwarded-port"}

EMQX_AWS_STACKS = ["dev", "staging", "edge", "prod-us-east-1", "prod-eu-central-1", "prod-ap-east-1", "prod-ap-southeast-1"]


def rpc_port_in_container(hocon: str, env: dict[str, str]) -> tuple[int, int]:
    """(port gen_rpc listens on, port it dials on peers) for a node named emqx@…, from the rendered
    emqx.conf and the container environment (which overrides the file, as EMQX_* variables do)."""
    conf = ConfigFactory.parse_string(hocon)
    discovery = env.get("EMQX_RPC__PORT_DISCOVERY", ENTRYPOINT_PORT_DISCOVERY)
    port = RPC_SERVER_PORT_DEFAULT
    for alias in RPC_SERVER_PORT_ALIASES:
        port = conf.get(f"rpc.{alias}", port)
        port = int(env.get(f"EMQX_RPC__{alias.upper()}", port))
    if discovery == "manual":
        return port, port
    return RPC_STATELESS_BASE, RPC_STATELESS_BASE  # emqx@… carries no N


def dist_port(node_name: str) -> int:
    short = node_name.split("@", 1)[0]
    m = re.search(r"[0-9]+$", short)
    return DIST_BASE_PORT + (int(m.group()) % 60000 if m else 0)


def _env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def _ports(rule: dict) -> set[int]:
    return set(range(rule["fromPort"], rule["toPort"] + 1))


# --- 1. Cluster ports ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", EMQX_AWS_STACKS)
def test_broker_to_broker_rules_cover_exactly_the_ports_the_containers_use(stack):
    plan = plan_of(stack)
    broker = group_id(plan, "broker")
    hosts = sorted({h for (h, name) in plan.files if name == "emqx.conf"})
    assert hosts
    needed: set[int] = set()
    for host in hosts:
        env = _env(plan.files[(host, "broker.env")])
        assert not [k for k in env if k.startswith("EMQX_RPC__")], "the environment must not override the rendered rpc block"
        listen, dial = rpc_port_in_container(plan.files[(host, "emqx.conf")], env)
        assert listen == dial, "every node dials the port its peers listen on"
        name = ConfigFactory.parse_string(plan.files[(host, "emqx.conf")])["node.name"]
        needed |= {listen, dist_port(name)}
    assert needed == {c.EMQX_DIST_PORT, c.EMQX_RPC_PORT}
    opened = set().union(*(_ports(r) for r in rules_into(plan, "broker") if r.get("referencedSecurityGroupId") == broker))
    assert opened == needed, f"broker<->broker opens {sorted(opened)}, the containers use {sorted(needed)}"


def test_the_default_image_port_would_not_be_covered():
    """The fact the fix rests on: without the rpc block the container listens on 5369 (the image's
    EXPOSE), which the firewall does not open."""
    listen, _ = rpc_port_in_container('node.name = "emqx@emqx-1.dev.mqtt.internal"', {})
    assert listen == RPC_SERVER_PORT_DEFAULT in IMAGE_EXPOSES and listen != c.EMQX_RPC_PORT


def test_cross_region_cluster_rules_admit_only_the_same_two_ports():
    plan = plan_of("prod-global")
    rules = [r.inputs for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]
    assert rules
    assert set().union(*(_ports(r) for r in rules)) == {c.EMQX_DIST_PORT, c.EMQX_RPC_PORT}


def test_policy_pack_and_readme_name_the_same_cluster_ports():
    from policy.rules import PROTECTED_PORTS

    assert {c.EMQX_DIST_PORT, c.EMQX_RPC_PORT} <= set(PROTECTED_PORTS)
    assert RPC_SERVER_PORT_DEFAULT not in PROTECTED_PORTS
    readme = (ROOT / "README.md").read_text()
    assert f"{c.EMQX_DIST_PORT}/{c.EMQX_RPC_PORT} only broker↔broker" in readme
    assert f"rpc.server_port = {c.EMQX_RPC_PORT}" in readme


# --- 2. Replicants ---------------------------------------------------------------------------


def _parse(brokers: dict, **top) -> c.StackConfig:
    return parse({"brokers": brokers, **top}, stack="x", source="stacks/Pulumi.x.yaml", region="eu-west-1")


def test_open_source_5_8_refuses_replicants_in_one_line_naming_the_key():
    with pytest.raises(ConfigError) as exc:
        _parse({"engine": "emqx", "version": "5.8.6", "replicants": 1})
    assert str(exc.value).startswith("stacks/Pulumi.x.yaml: mqtt-cluster:brokers.replicants: ")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("brokers", "top", "role"),
    [
        ({"version": "5.7.2", "replicants": 1}, {}, "replicant"),  # the open-source edition before 5.8.0
        ({"image": "emqx/emqx-enterprise:5.8.6", "replicants": 1}, {"license": True}, "replicant"),
        ({"image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/emqx-enterprise:5.8.6", "replicants": 1}, {"license": True}, "replicant"),
    ],
)
def test_editions_that_run_replicants_render_them(brokers, top, role):
    cfg = _parse(brokers, **top)
    assert [n.role for n in node_specs(cfg)] == ["core", "core", "core", role]


def test_enterprise_replicants_need_a_license_key():
    with pytest.raises(ConfigError, match=r"mqtt-cluster:license: .*Enterprise edition"):
        _parse({"image": "emqx/emqx-enterprise:5.8.6", "replicants": 2})


def test_no_shipped_emqx_stack_asks_an_open_source_image_for_replicants():
    for stack in EMQX_AWS_STACKS:
        roles = {ConfigFactory.parse_string(t)["node.role"] for (h, n), t in plan_of(stack).files.items() if n == "emqx.conf"}
        assert roles == {"core"}, stack


# --- 5. Client addresses over WebSocket ------------------------------------------------------


def _ws_headers(hocon: str) -> dict[str, str]:
    conf = ConfigFactory.parse_string(hocon)
    ws = conf.get("listeners.ws.default.websocket", {})
    return {k: ws.get(k, d) for k, d in WS_HEADER_DEFAULTS.items()}


@pytest.mark.parametrize(
    ("overrides", "trusted"),
    [
        ({"load_balancer": {"kind": "nginx"}}, True),
        ({"load_balancer": {"kind": "nginx", "proxy_protocol": True}}, True),
        ({"load_balancer": {"kind": "nlb"}}, False),
        ({"load_balancer": {"kind": "nlb", "proxy_protocol": True}}, False),
        ({"load_balancer": {"kind": "elb"}}, False),
        ({"load_balancer": {"kind": "haproxy"}}, False),
    ],
)
def test_brokers_believe_forwarded_headers_only_behind_nginx(program, overrides, trusted):
    plan = program("dev", **overrides)
    for (_, name), text in plan.files.items():
        if name == "emqx.conf":
            headers = _ws_headers(text)
            assert headers == (WS_HEADER_DEFAULTS if trusted else {"proxy_address_header": "", "proxy_port_header": ""})


@pytest.mark.parametrize(("proxy", "trusted"), [("nginx", True), ("haproxy", False)])
def test_local_stack_brokers_believe_headers_only_behind_its_nginx(program, proxy, trusted):
    plan = program("local", local={"proxy": proxy})
    confs = [t for (_, n), t in plan.files.items() if n == "emqx.conf"]
    assert confs
    for text in confs:
        assert (_ws_headers(text)["proxy_address_header"] == "x-forwarded-for") is trusted


def test_rendered_nginx_sets_the_forwarded_headers_instead_of_appending():
    text = next(t for (_, n), t in plan_of("edge").files.items() if n == "nginx.conf")
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "proxy_set_header X-Forwarded-Port $remote_port;" in text
    assert "$proxy_add_x_forwarded_for" not in text


def emqx_peer(headers: list[tuple[str, str]], peer: tuple[str, int], conf: dict[str, str]) -> tuple[str, int]:
    """The client address EMQX records: the first address of the address header, the first value
    of the port header, else the socket's peer (emqx/emqx v5.8.6 apps/emqx/src/emqx_ws_connection.erl:1056-1087)."""

    def first(name: str) -> str | None:
        values = [v for k, v in headers if name and k.lower() == name]
        tokens = re.split(r"[, ]+", ",".join(values).strip(", ")) if values else []
        return tokens[0] if tokens and tokens[0] else None

    addr = first(conf["proxy_address_header"])
    try:
        socket.inet_pton(socket.AF_INET6 if addr and ":" in addr else socket.AF_INET, addr or "")
    except OSError:
        addr = None
    port = first(conf["proxy_port_header"])
    return (addr or peer[0], int(port) if port and port.isdigit() else peer[1])


class WebSocketCapture:
    """A stand-in WebSocket backend: records each upgrade request's headers and accepts it."""

    def __init__(self, host: str, port: int):
        self.requests: list[list[tuple[str, str]]] = []
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(3)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
                    self.requests.append([(k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)])
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


def test_real_nginx_replaces_a_forged_forwarded_for_with_the_real_address(tmp_path):
    certs = make_certs(tmp_path / "certs")
    backend_host, client_host = "127.0.0.7", "127.0.0.9"
    port = free_port(backend_host)
    capture = WebSocketCapture(backend_host, port)
    try:
        with Lab(tmp_path) as lab:
            s = lab.settings(certs, [Backend("b0", backend_host, port, port)], mqtts_port=free_port(), wss_port=free_port())
            lab.start_proxy("nginx", s)
            ctx = ssl.create_default_context(cafile=str(certs["ca"]))
            raw = socket.create_connection(("127.0.0.1", s.wss_port), timeout=5, source_address=(client_host, 0))
            client_port = raw.getsockname()[1]
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(
                    b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Protocol: mqtt\r\n"
                    b"X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-Port: 1\r\n\r\n"
                )
                assert tls.recv(64).startswith(b"HTTP/1.1 101"), "the upgrade went through nginx"
        assert len(capture.requests) == 1
        headers = capture.requests[0]
        xff = [v for k, v in headers if k.lower() == "x-forwarded-for"]
        xfp = [v for k, v in headers if k.lower() == "x-forwarded-port"]
        assert xff == [client_host], headers
        assert xfp == [str(client_port)], headers
        conf = _ws_headers(next(t for (_, n), t in plan_of("edge").files.items() if n == "emqx.conf"))
        assert emqx_peer(headers, ("127.0.0.1", 40000), conf) == (client_host, client_port)
    finally:
        capture.close()


def test_without_a_header_setting_proxy_the_forged_address_is_ignored():
    conf = _ws_headers(next(t for (_, n), t in plan_of("dev").files.items() if n == "emqx.conf"))
    forged = [("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-Port", "1")]
    assert emqx_peer(forged, ("198.51.100.7", 50123), conf) == ("198.51.100.7", 50123)
    assert emqx_peer(forged, ("198.51.100.7", 50123), WS_HEADER_DEFAULTS) == ("203.0.113.66", 1), "the default trusts it"


# --- 6. Health check -------------------------------------------------------------------------


def _dockerfile_health() -> str:
    text = (ROOT / "docker" / "emqx" / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert m, "the image has a health check"
    import json

    cmd = json.loads(m.group(1))
    assert cmd[:2] == ["/bin/sh", "-c"]
    return cmd[2]


def _local_health() -> str:
    plan = plan_of("local")
    checks = {
        tuple(r.inputs["healthcheck"]["tests"]) for r in plan.of_type("docker:index/container:Container") if "healthcheck" in r.inputs
    }
    assert len(checks) == 1
    (tests,) = checks
    assert tests[0] == "CMD-SHELL"
    return tests[1]


def _run_health(command: str, tmp_path: Path, status: str | None) -> int:
    fake = tmp_path / "emqx"
    if status is None:  # node down: the CLI writes to stderr and exits 1
        fake.write_text("#!/bin/sh\necho 'Node emqx@x not responding to pings.' >&2\nexit 1\n")
    else:
        line = STATUS_LINE.format(node="emqx@emqx-1.dev.mqtt.internal", status=status)
        fake.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(line.rstrip())}\n")
    fake.chmod(0o755)
    assert "/opt/emqx/bin/emqx" in command
    return subprocess.run(["/bin/sh", "-c", command.replace("/opt/emqx/bin/emqx", str(fake))], timeout=20).returncode


@pytest.mark.parametrize("source", ["dockerfile", "local"])
@pytest.mark.parametrize(("status", "healthy"), [("started", True), ("starting", False), ("stopping", False), (None, False)])
def test_health_checks_require_a_started_node(source, status, healthy, tmp_path):
    command = _dockerfile_health() if source == "dockerfile" else _local_health()
    assert (_run_health(command, tmp_path, status) == 0) is healthy
