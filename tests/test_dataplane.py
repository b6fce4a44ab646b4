"""Layer 3: the rendered nginx / haproxy configs terminate TLS in front of real mosquitto brokers."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import warnings

import pytest

from components.renderers.proxy import Backend
from tests.harness import HeaderCapturingBroker, Lab, connect_once, free_port, make_certs, mqtt_client, raw_mqtt_connect

KINDS = ["nginx", "haproxy"]
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=KINDS)
def lab(request, tmp_path, certs):
    kind = request.param
    port = free_port("127.0.0.2")
    with Lab(tmp_path) as lab:
        brokers = lab.start_brokers(HOSTS, port)
        s = lab.settings(
            certs,
            [Backend(f"b{i}", b.host, b.port, b.ws_port) for i, b in enumerate(brokers)],
            mqtts_port=free_port(),
            wss_port=free_port(),
        )
        lab.start_proxy(kind, s)
        lab.kind, lab.s, lab.certs = kind, s, certs
        yield lab


def test_tls_client_subscribes_and_receives_a_message_that_crossed_brokers(lab):
    got, subscribed = threading.Event(), threading.Event()
    received: list[bytes] = []
    sub = mqtt_client("subscriber", lab.certs["ca"])
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("plant/+/temp", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: (received.append(m.payload), got.set())
    sub.connect("127.0.0.1", lab.s.mqtts_port, keepalive=30)
    sub.loop_start()
    try:
        assert subscribed.wait(5), "SUBACK through the proxy"
        time.sleep(0.5)  # bridges propagate the subscription
        import paho.mqtt.client as mqtt

        # Publish straight to the last broker: the message must cross the bridge to reach us.
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher")
        pub.connect(HOSTS[-1], lab.brokers[-1].port)
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
    assert all(connect_once("127.0.0.1", lab.s.mqtts_port, lab.certs["ca"], f"before-{i}") for i in range(10))
    lab.brokers[1].proc.stop()  # a non-hub broker dies
    failures = sum(not connect_once("127.0.0.1", lab.s.mqtts_port, lab.certs["ca"], f"after-{i}") for i in range(60))
    assert failures == 0, f"{failures} of 60 connections failed after a broker died"


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_are_refused(lab, version, tmp_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")  # the client is willing; only the proxy may say no
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        v = getattr(ssl.TLSVersion, version)
        ctx.minimum_version = ctx.maximum_version = v
    with socket.create_connection(("127.0.0.1", lab.s.mqtts_port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_modern_tls_is_accepted(lab, version):
    ctx = ssl.create_default_context(cafile=str(lab.certs["ca"]))
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with (
        socket.create_connection(("127.0.0.1", lab.s.mqtts_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == version.replace("_", ".")
        assert raw_mqtt_connect(tls, "tls-probe") == b"\x20\x02\x00\x00"


def test_secure_websocket_reaches_the_brokers(lab):
    ok = threading.Event()
    c = mqtt_client("ws-client", lab.certs["ca"], transport="websockets")
    c.on_connect = lambda cl, u, f, rc, p=None: ok.set() if not rc.is_failure else None
    c.connect("127.0.0.1", lab.s.wss_port, keepalive=30)
    c.loop_start()
    try:
        assert ok.wait(5), "CONNACK over WSS /mqtt"
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.mark.parametrize("kind", KINDS)
def test_proxy_protocol_reaches_the_backend(kind, tmp_path, certs):
    port = free_port("127.0.0.5")
    backends = [HeaderCapturingBroker(h, port) for h in ("127.0.0.5", "127.0.0.6")]
    try:
        with Lab(tmp_path) as lab:
            s = lab.settings(
                certs,
                [Backend(f"b{i}", b.host, port, port) for i, b in enumerate(backends)],
                mqtts_port=free_port(),
                wss_port=None,
                proxy_protocol=True,
            )
            lab.start_proxy(kind, s)
            ctx = ssl.create_default_context(cafile=str(certs["ca"]))
            with (
                socket.create_connection(("127.0.0.1", s.mqtts_port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert raw_mqtt_connect(tls, "pp-probe") == b"\x20\x02\x00\x00"
            headers = [h for b in backends for h in b.headers]
            assert headers, "the backend saw the connection"
            if kind == "nginx":
                assert any(h.startswith(b"PROXY TCP4 127.0.0.1 ") for h in headers), headers
            else:
                assert any(h.startswith(HeaderCapturingBroker.V2_SIGNATURE) for h in headers), headers
    finally:
        for b in backends:
            b.close()
