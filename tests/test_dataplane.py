"""Layer 3: the proxy configs exactly as the stacks ship them terminate TLS in front of real mosquitto
brokers, each behind a listener shim that handles the PROXY header as EMQX / VerneMQ do.

Only addresses and paths are localised (tests.harness.localise); PROXY protocol stays on where the
stack turns it on, and the shims require it exactly where the shipped broker config does.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
import warnings

import paho.mqtt.client as mqtt
import pytest

from components import config as c
from components.links import load_region
from tests.conftest import plan_of
from tests.harness import (
    BROKER_HOSTS,
    PP_V2_SIGNATURE,
    PROXY_PROTOCOL_TIMEOUT,
    Lab,
    broker_listeners,
    checked_servers,
    connect_once,
    free_port,
    make_certs,
    mqtt_client,
    raw_mqtt_connect,
    recv_upto,
)

KINDS = ["nginx", "haproxy"]
HOSTS = BROKER_HOSTS
CLIENT = "127.0.0.9"
"""Clients connect from this address, so the proxy's own (127.0.0.1) cannot pass for theirs."""
# The shipped stack whose proxy config each kind runs, and the host file it ships.
SHIPPED = {"nginx": ("edge", ("nginx-1", "nginx.conf")), "haproxy": ("vernemq", ("haproxy-1", "haproxy.cfg"))}
CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
CONNACK_NOT_AUTHORIZED = b"\x20\x02\x00\x05"


def first_broker(files: dict[tuple[str, str], str]) -> str:
    return min(h for h, name in files if name in ("emqx.conf", "broker.env"))


def shipped(kind: str) -> tuple[str, tuple[bool, bool]]:
    """The proxy config as shipped, and the (MQTT, WebSocket) listeners' proxy_protocol as the same
    stack's broker host files set them."""
    stack, key = SHIPPED[kind]
    files = plan_of(stack).files
    return files[key], broker_listeners(files, first_broker(files))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def start_lab(lab: Lab, kind: str, certs, anonymous: bool = True) -> Lab:
    text, listeners = shipped(kind)
    lab.start_brokers(HOSTS, free_port(HOSTS[0]), listeners=listeners, anonymous=anonymous)
    proxy = lab.start_shipped_proxy(kind, text, certs)
    lab.kind, lab.certs, lab.proxy = kind, certs, proxy
    lab.mqtts, lab.wss = proxy.ports[c.MQTTS_PORT], proxy.ports[c.WSS_PORT]
    return lab


@pytest.fixture(params=KINDS)
def lab(request, tmp_path, certs):
    with Lab(tmp_path) as lab:
        yield start_lab(lab, request.param, certs)


def client_arrivals(lab: Lab, listener: str = "mqtt_shim"):
    """Connections the brokers relayed for clients (not the proxy's own health checks)."""
    return [a for b in lab.brokers for a in getattr(b, listener).arrivals if a.relayed and a.header != "v2-local"]


def test_the_shipped_configs_run_here_with_proxy_protocol_on():
    nginx, nginx_listeners = shipped("nginx")
    haproxy, haproxy_listeners = shipped("haproxy")
    # nginx proxies WSS in its http module, which cannot send the header: only MQTT expects it.
    assert nginx_listeners == (True, False) and haproxy_listeners == (True, True)
    assert re.findall(r"proxy_protocol (\w+);", nginx) == ["on"]
    assert len(re.findall(r"^\s*default-server .*\bsend-proxy-v2\b", haproxy, flags=re.M)) == 2


def test_tls_client_subscribes_and_receives_a_message_that_crossed_brokers(lab):
    got, subscribed = threading.Event(), threading.Event()
    received: list[bytes] = []
    sub = mqtt_client("subscriber", lab.certs["ca"])
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("plant/+/temp", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: (received.append(m.payload), got.set())
    sub.connect("127.0.0.1", lab.mqtts, keepalive=30)
    sub.loop_start()
    try:
        assert subscribed.wait(5), "SUBACK through the proxy"
        time.sleep(0.5)  # bridges propagate the subscription
        # Publish straight to the last broker: the message must cross the bridge to reach us.
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher")
        pub.connect(HOSTS[-1], lab.brokers[-1].direct_port)
        pub.loop_start()
        for _ in range(20):
            pub.publish("plant/7/temp", b"21.5", qos=1).wait_for_publish(2)
            if got.wait(0.5):
                break
        pub.loop_stop()
        pub.disconnect()
        assert received and received[0] == b"21.5"
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_new_connections_keep_succeeding_after_a_broker_dies(lab):
    assert all(connect_once("127.0.0.1", lab.mqtts, lab.certs["ca"], f"before-{i}") for i in range(10))
    lab.brokers[1].stop()  # a non-hub broker dies: its listeners close with it
    failures = sum(not connect_once("127.0.0.1", lab.mqtts, lab.certs["ca"], f"after-{i}") for i in range(60))
    assert failures == 0, f"{failures} of 60 connections failed after a broker died"
    assert len(client_arrivals(lab)) >= 70, "every connection went through a PROXY-protocol listener"


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_are_refused(lab, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")  # the client is willing; only the proxy may say no
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        v = getattr(ssl.TLSVersion, version)
        ctx.minimum_version = ctx.maximum_version = v
    # The proxy answers the old ClientHello with a protocol_version alert and closes: the client
    # reads the alert (SSLError) or, when the close overtakes it, a reset. Either way no session.
    with socket.create_connection(("127.0.0.1", lab.mqtts), timeout=5) as raw, pytest.raises((ssl.SSLError, ConnectionResetError)):
        ctx.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_modern_tls_is_accepted(lab, version):
    ctx = ssl.create_default_context(cafile=str(lab.certs["ca"]))
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with (
        socket.create_connection(("127.0.0.1", lab.mqtts), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == version.replace("_", ".")
        assert raw_mqtt_connect(tls, "tls-probe") == CONNACK_ACCEPTED


def _wss_connect(lab: Lab, client_id: str) -> None:
    ok = threading.Event()
    cl = mqtt_client(client_id, lab.certs["ca"], transport="websockets")
    cl.on_connect = lambda c, u, f, rc, p=None: ok.set() if not rc.is_failure else None
    cl.connect("127.0.0.1", lab.wss, keepalive=30, bind_address=CLIENT)
    cl.loop_start()
    try:
        assert ok.wait(5), "CONNACK over WSS /mqtt"
    finally:
        cl.loop_stop()
        cl.disconnect()


def test_secure_websocket_reaches_the_brokers(lab):
    _wss_connect(lab, "ws-client")
    assert client_arrivals(lab, "ws_shim"), "through a broker's WebSocket listener"


def test_the_brokers_see_the_real_client_address_on_tcp_and_wss(lab):
    """MQTT over TLS: the PROXY header (v1 from nginx, v2 from haproxy) names the client. WSS:
    haproxy sends the header too; nginx's http module cannot, and sets X-Forwarded-For."""
    ctx = ssl.create_default_context(cafile=str(lab.certs["ca"]))
    with (
        socket.create_connection(("127.0.0.1", lab.mqtts), timeout=5, source_address=(CLIENT, 0)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        client_port = tls.getsockname()[1]
        assert raw_mqtt_connect(tls, "address-probe") == CONNACK_ACCEPTED
    (tcp,) = client_arrivals(lab)
    assert tcp.header == ("v1" if lab.kind == "nginx" else "v2")
    assert tcp.client == (CLIENT, client_port) and tcp.peer[0] == "127.0.0.1", "the proxy connected; the header names the client"

    _wss_connect(lab, "ws-address-probe")
    (ws,) = client_arrivals(lab, "ws_shim")
    if lab.kind == "nginx":
        assert ws.header is None and ws.forwarded_for == CLIENT
    else:
        assert ws.header == "v2" and ws.client_address == CLIENT


@pytest.mark.parametrize("anonymous", [True, False], ids=["anonymous-allowed", "client-auth-on"])
def test_haproxy_marks_every_shipped_server_up_by_its_own_checks(anonymous, tmp_path, certs):
    """haproxy's own stats: after a first check every server is UP with a passing check — the MQTT
    check through a PROXY-requiring listener, also when the broker refuses the anonymous CONNECT —
    and the servers then carry TLS MQTT."""
    with Lab(tmp_path) as lab:
        start_lab(lab, "haproxy", certs, anonymous=anonymous)
        servers = checked_servers(lab.proxy.ports[c.HAPROXY_STATS_PORT])
        assert len(servers) == 2 * len(HOSTS), servers
        got = {k: (r["status"], r["check_status"]) for k, r in servers.items()}
        for (backend, name), state in got.items():
            expected = ("UP", "L7OK") if backend == "mqtt_brokers" else ("UP", "L4OK")
            assert state == expected, f"{backend}/{name}: {got}"
        checks = [a for b in lab.brokers for a in b.mqtt_shim.arrivals if a.header == "v2-local"]
        # Checks keep arriving: one still opening its relay has neither relayed nor been dropped yet.
        assert {a.peer[0] for a in checks} == {"127.0.0.1"}
        assert not [a.dropped for a in checks if a.dropped] and any(a.relayed for a in checks)
        assert {b.host for b in lab.brokers if any(a.header == "v2-local" for a in b.mqtt_shim.arrivals)} == set(HOSTS)
        expected = CONNACK_ACCEPTED if anonymous else CONNACK_NOT_AUTHORIZED
        for i in range(2 * len(HOSTS)):
            ctx = ssl.create_default_context(cafile=str(certs["ca"]))
            with (
                socket.create_connection(("127.0.0.1", lab.mqtts), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert raw_mqtt_connect(tls, f"after-checks-{i}") == expected
        if anonymous:
            assert {a.header for a in client_arrivals(lab)} == {"v2"}


def _shim_lab(tmp_path, listeners: tuple[bool, bool]) -> Lab:
    lab = Lab(tmp_path)
    lab.start_brokers(HOSTS[:1], free_port(HOSTS[0]), listeners=listeners)
    return lab


def _exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send data, read until the listener answers four bytes or closes; (answer, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection((HOSTS[0], port), timeout=wait) as s:
        s.sendall(data)
        got = recv_upto(s, 4)
    return got, time.monotonic() - t0


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(body)]) + body


def _pp_v2(src: str, sport: int, dst: str, dport: int) -> bytes:
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return PP_V2_SIGNATURE + b"\x21\x11" + len(addrs).to_bytes(2, "big") + addrs


def test_a_proxy_protocol_listener_drops_connections_without_the_header(tmp_path):
    with _shim_lab(tmp_path, (True, True)) as lab:
        b = lab.brokers[0]
        assert _exchange(b.port, _connect_packet("no-header"))[0] == b"", "closed, no CONNACK"
        got, took = _exchange(b.port, b"", wait=PROXY_PROTOCOL_TIMEOUT + 3)
        assert got == b"" and PROXY_PROTOCOL_TIMEOUT - 0.5 <= took <= PROXY_PROTOCOL_TIMEOUT + 1.5, took
        v1 = f"PROXY TCP4 198.51.100.7 {HOSTS[0]} 40001 1883\r\n".encode()
        assert _exchange(b.port, v1 + _connect_packet("v1"))[0] == CONNACK_ACCEPTED
        assert _exchange(b.port, _pp_v2("198.51.100.8", 40002, HOSTS[0], 1883) + _connect_packet("v2"))[0] == CONNACK_ACCEPTED
        seen = [(a.header, a.client, a.dropped, a.relayed) for a in b.mqtt_shim.arrivals]
        assert seen == [
            (None, None, "no PROXY header", False),
            (None, None, "timeout", False),
            ("v1", ("198.51.100.7", 40001), None, True),
            ("v2", ("198.51.100.8", 40002), None, True),
        ]


def test_a_listener_without_proxy_protocol_drops_a_header_and_serves_mqtt(tmp_path):
    with _shim_lab(tmp_path, (False, False)) as lab:
        b = lab.brokers[0]
        v1 = f"PROXY TCP4 198.51.100.7 {HOSTS[0]} 40001 1883\r\n".encode()
        assert _exchange(b.port, v1 + _connect_packet("v1"))[0] == b""
        assert _exchange(b.port, _connect_packet("plain"))[0] == CONNACK_ACCEPTED
        assert [(a.dropped, a.client_address) for a in b.mqtt_shim.arrivals] == [
            ("PROXY header on a listener without proxy_protocol", "127.0.0.1"),
            (None, "127.0.0.1"),
        ]


def _paths(text: str, kind: str) -> dict[str, list[bool]]:
    """Per path to the brokers (MQTT, WebSocket): whether each server line sends the PROXY header."""
    if kind == "haproxy":
        out = {}
        for backend, body in re.findall(r"^backend (\S+)\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S):
            default = re.search(r"^\s*default-server (.*)$", body, flags=re.M).group(1)
            servers = re.findall(r"^\s*server (.*)$", body, flags=re.M)
            out[backend] = [bool(re.search(r"\bsend-proxy(-v2)?\b", f"{default} {s}")) for s in servers]
        return {"mqtt": out["mqtt_brokers"], "ws": out.get("mqtt_ws", [])}
    stream, _, http = text.partition("\nhttp {")
    # The http module has no proxy_protocol directive: WSS always reaches the brokers without it.
    assert "proxy_protocol" not in http
    mqtt_servers = re.findall(r"^\s*server \{(.*?)^\s*\}", stream, flags=re.M | re.S)
    return {
        "mqtt": [re.search(r"proxy_protocol (on|off);", s).group(1) == "on" for s in mqtt_servers],
        "ws": [False] if "proxy_pass http://mqtt_ws;" in http else [],
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["shipped", "proxy_protocol_off", "plain_mqtt"])
def test_every_proxy_path_sends_the_header_exactly_where_the_broker_listener_expects_it(kind, variant, program):
    """nginx OSS has no active health checks (max_fails/fail_timeout only count failed client
    connections), so the header is what it must get right; haproxy likewise on both backends.
    Each path from proxy to broker sends PROXY protocol exactly when the listener it reaches,
    as the brokers' own files configure it, expects it."""
    stack = SHIPPED[kind][0]
    lb = load_region(stack, source="tests", key="stack").cfg.load_balancer
    settings = {
        "kind": kind,
        "proxies": lb.proxies,
        "proxy_protocol": variant != "proxy_protocol_off",
        "plain_mqtt": variant == "plain_mqtt",
    }
    plan = plan_of(stack) if variant == "shipped" else program(stack, load_balancer=settings)
    mqtt_pp, ws_pp = broker_listeners(plan.files, first_broker(plan.files))
    assert mqtt_pp is (variant != "proxy_protocol_off")
    paths = _paths(plan.files[SHIPPED[kind][1]], kind)
    assert paths["mqtt"] and set(paths["mqtt"]) == {mqtt_pp}
    assert paths["ws"] and set(paths["ws"]) == {ws_pp}
    if variant == "plain_mqtt" and kind == "nginx":
        assert len(paths["mqtt"]) == 2, "the plain 1883 server too"
