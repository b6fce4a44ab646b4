"""auth.mechanism mtls through the rendered haproxy: the device certificate is the only credential.

haproxy (the config the program renders for a stack with mtls) verifies the certificate and sends
its CN in the PROXY v2 SSL TLV. In front of mosquitto a shim does what EMQX does with that header:
esockd reads the CN out of the PP2_TYPE_SSL / PP2_SUBTYPE_SSL_CN TLV (emqx/esockd 5.13.0
src/esockd_proxy_protocol.erl:50-52,177-178,211-212; src/esockd_transport.erl:323-324) and, with
mqtt.peer_cert_as_username = cn, the CN becomes the client's username whatever CONNECT says
(emqx/emqx v5.8.6 apps/emqx/src/emqx_channel.erl:341-355, 1970-1976). No authenticator: EMQX admits
the connection (apps/emqx/src/emqx_access_control.erl:62-65), like mosquitto's allow_anonymous here;
the ACL (rendered from the same model) limits it by username.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from components.config import parse
from components.load_balancer import LoadBalancer
from components.renderers import auth as ra
from components.renderers.nodes import node_specs
from components.renderers.proxy import Backend
from tests.harness import PP_V2_SIGNATURE, Lab, connack_code, free_port, make_certs, tls_context, wait_port

HOST = "127.0.0.7"
ATTEMPTS = 10
RESULTS: dict[str, int] = {}


def _ca(d, name: str) -> tuple:
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    key, crt = d / f"{name}-ca.key", d / f"{name}-ca.crt"
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", f"/CN={name} CA")  # fmt: skip
    return key, crt


def _device(d, ca: tuple, name: str, subject: str) -> dict:
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    key, csr, crt, ext = (d / f"{name}.{x}" for x in ("key", "csr", "crt", "cnf"))
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", subject)  # fmt: skip
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return {"crt": crt, "key": key}


# --- the broker's side of the PROXY v2 header -----------------------------------------------------
def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def pp2_ssl_cn(tlvs: bytes) -> str | None:
    """The CN in a PROXY v2 header's TLVs: type 0x20 (PP2_TYPE_SSL) holds client(1) verify(4) and
    sub-TLVs, 0x22 (PP2_SUBTYPE_SSL_CN) the CN (esockd_proxy_protocol.erl:183-185,211-212)."""
    i = 0
    while i + 3 <= len(tlvs):
        kind, length = tlvs[i], int.from_bytes(tlvs[i + 1 : i + 3], "big")
        value = tlvs[i + 3 : i + 3 + length]
        i += 3 + length
        if kind == 0x20:
            j, sub = 5, value
            while j + 3 <= len(sub):
                skind, slen = sub[j], int.from_bytes(sub[j + 1 : j + 3], "big")
                if skind == 0x22:
                    return sub[j + 3 : j + 3 + slen].decode()
                j += 3 + slen
    return None


def _field(b: bytes, i: int) -> tuple[bytes, int]:
    n = int.from_bytes(b[i : i + 2], "big")
    return b[i + 2 : i + 2 + n], i + 2 + n


def connect_with_username(packet_body: bytes, username: str) -> bytes:
    """An MQTT 3.1.1 CONNECT body with the username replaced (or added); everything else kept."""
    i = 2 + int.from_bytes(packet_body[0:2], "big") + 1  # protocol name, level
    flags = packet_body[i]
    head, i = packet_body[: i + 3], i + 3  # flags, keepalive
    fields = []
    cid, i = _field(packet_body, i)
    if flags & 0x04:
        wt, i = _field(packet_body, i)
        wm, i = _field(packet_body, i)
        fields += [wt, wm]
    if flags & 0x80:
        _, i = _field(packet_body, i)
    rest = packet_body[i:]  # the password, if any
    body = bytearray(head)
    body[len(head) - 3] = flags | 0x80
    out = bytes(body) + b"".join(len(f).to_bytes(2, "big") + f for f in [cid, *fields, username.encode()]) + rest
    return out


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n % 128, n // 128
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


class CnListener:
    """A broker listener with proxy_protocol on and peer_cert_as_username = cn, in front of mosquitto."""

    def __init__(self, host: str, port: int, upstream: tuple[str, int]):
        self.upstream, self.cns, self.headers = upstream, [], 0
        self._stop = threading.Event()
        self._srv = socket.create_server((host, port))
        self._srv.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._srv.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(20)
        try:
            head = _recv(conn, 16)
            if head[:12] != PP_V2_SIGNATURE:
                return  # no PROXY v2 header: closed before the broker sees a byte
            body = _recv(conn, int.from_bytes(head[14:16], "big"))
            self.headers += 1
            addr_len = {0x11: 12, 0x21: 36}.get(head[13], 0) if head[12] & 0x0F == 1 else len(body)
            cn = pp2_ssl_cn(body[addr_len:])
            self.cns.append(cn)
            first = _recv(conn, 1)
            length, mult = 0, 1
            for _ in range(4):
                b = _recv(conn, 1)[0]
                length += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            packet = _recv(conn, length)
            if first[0] >> 4 == 1 and cn is not None:
                packet = connect_with_username(packet, cn)
            up = socket.create_connection(self.upstream, timeout=5)
            up.settimeout(20)
            up.sendall(first + _varint(len(packet)) + packet)
            threading.Thread(target=self._pipe, args=(up, conn), daemon=True).start()
            self._pipe(conn, up)
        except (OSError, ConnectionError):
            pass
        finally:
            conn.close()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("mtls-cn")
    pki = work / "pki"
    pki.mkdir()
    devices_ca, foreign_ca = _ca(pki, "devices"), _ca(pki, "foreign")
    certs = {
        "device-1": _device(pki, devices_ca, "device-1", "/O=acme/CN=device-1"),
        "device-2": _device(pki, devices_ca, "device-2", "/O=acme/CN=device-2"),
        "foreign": _device(pki, foreign_ca, "foreign", "/CN=device-1"),
        "no-cn": _device(pki, devices_ca, "no-cn", "/O=acme/OU=device-3"),
        "bad-cn": _device(pki, devices_ca, "bad-cn", "/CN=device\\+1"),
        "two-cn": _device(pki, devices_ca, "two-cn", "/CN=device-1/CN=device-2"),
    }
    cfg = parse(
        {
            "brokers": {"engine": "emqx"},
            "load_balancer": {"kind": "haproxy", "proxy_protocol": True},
            "auth": {"mechanism": "mtls", "mtls": {"ca_bundle": devices_ca[1].read_text()}},
        },
        stack="lab",
        source="lab",
        region="eu-central-1",
    )
    shipped = LoadBalancer.proxy_settings(cfg, "haproxy", node_specs(cfg))
    assert shipped.send_cn and shipped.proxy_protocol and shipped.client_ca
    ca_path = work / "devices-ca.pem"
    ca_path.write_text(cfg.auth.mtls.ca_bundle)
    acl = work / "acl"
    acl.write_text(ra.mosquitto_acl(cfg.auth))
    direct, port = free_port(HOST), free_port(HOST)
    conf = work / "mosquitto.conf"
    lines = ["persistence false", "log_dest stdout", f"user {getpass.getuser()}", "allow_anonymous true", f"acl_file {acl}"]
    conf.write_text("\n".join([*lines, f"listener {direct} {HOST}"]) + "\n")
    server = make_certs(work / "server")
    with Lab(work) as lab:
        lab._spawn("mosquitto-mtls", ["mosquitto", "-c", str(conf)])
        wait_port(HOST, direct)
        shim = CnListener(HOST, port, (HOST, direct))
        try:
            s = dataclasses.replace(
                lab.settings(server, [Backend("b0", HOST, port)], mqtts_port=free_port(), wss_port=None),
                proxy_protocol=shipped.proxy_protocol,
                send_cn=shipped.send_cn,
                client_ca=str(ca_path),
            )
            lab.start_proxy("haproxy", s)
            lab.s, lab.server, lab.certs, lab.shim = s, server, certs, shim
            time.sleep(1.0)  # first health checks
            yield lab
        finally:
            shim.stop()
    print(json.dumps(RESULTS, indent=1))


def connack(lab, cert: str | None, client_id: str, username: str | None = None) -> int | None:
    pair = (lab.certs[cert]["crt"], lab.certs[cert]["key"]) if cert else None
    return connack_code(lab.s.mqtts_port, lab.server["ca"], client_id, username=username, cert=pair)


@pytest.mark.parametrize("case", [None, "foreign", "no-cn", "bad-cn", "two-cn"])
def test_without_a_usable_device_certificate_there_is_no_mqtt_session(lab, case):
    before = len(lab.shim.cns)
    codes = [connack(lab, case, f"c-{i}", username="device-1") for i in range(ATTEMPTS)]
    RESULTS[f"{case or 'no-certificate'}_refused"] = sum(c is None for c in codes)
    assert codes == [None] * ATTEMPTS
    assert not [cn for cn in lab.shim.cns[before:] if cn is not None], "nothing with a CN reached the broker"


def test_a_valid_certificate_connects_without_a_password(lab):
    codes = [connack(lab, "device-1", f"d1-{i}") for i in range(ATTEMPTS)]
    RESULTS["valid_certificate_accepted"] = sum(c == 0 for c in codes)
    assert codes == [0] * ATTEMPTS
    assert "device-1" in lab.shim.cns, "the CN arrived in the PROXY v2 SSL TLV"


def _client(lab, cert: str, client_id: str, claimed: str):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    ctx = tls_context(lab.server["ca"])
    ctx.load_cert_chain(str(lab.certs[cert]["crt"]), str(lab.certs[cert]["key"]))
    c.tls_set_context(ctx)
    c.username_pw_set(claimed)  # what the device claims; the certificate's CN wins
    c.received = []
    c.on_message = lambda cl, u, m: cl.received.append((m.topic, m.payload))
    subscribed, connected = threading.Event(), threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda cl, u, f, rc, p=None: connected.set() if not rc.is_failure else None
    c.connect("127.0.0.1", lab.s.mqtts_port, keepalive=30)
    c.loop_start()
    assert connected.wait(5), f"{cert} connects"
    c.subscribed = subscribed
    return c


def test_the_certificate_cn_is_the_username_for_the_acl(lab):
    # device-1's certificate, claiming to be device-2 in CONNECT
    d1 = _client(lab, "device-1", "d1", claimed="device-2")
    d2 = _client(lab, "device-2", "d2", claimed="device-2")
    try:
        for c, topic in ((d1, "devices/#"), (d2, "devices/device-2/#")):
            c.subscribed.clear()
            c.subscribe(topic, qos=1)
            assert c.subscribed.wait(5)
        time.sleep(0.3)
        for i in range(10):
            d1.publish(f"devices/device-1/t{i}", b"own", qos=1).wait_for_publish(3)
            d1.publish(f"devices/device-2/t{i}", b"forged", qos=1).wait_for_publish(3)
            d2.publish(f"devices/device-2/t{i}", b"d2", qos=1).wait_for_publish(3)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (len(d1.received) < 10 or len(d2.received) < 10):
            time.sleep(0.1)
        time.sleep(1.0)  # anything that should not arrive has had its chance
        own = sum(t.startswith("devices/device-1/") for t, _ in d1.received)
        read_other = sum(t.startswith("devices/device-2/") for t, _ in d1.received)
        forged = sum(p == b"forged" for _, p in d2.received)
        d2_own = sum(p == b"d2" for _, p in d2.received)
        RESULTS.update(own_subtree_delivered=own, other_subtree_read=read_other, forged_into_other_subtree=forged, other_own=d2_own)
        assert own == 10 and d2_own == 10
        assert read_other == 0 and forged == 0
    finally:
        for c in (d1, d2):
            c.loop_stop()
            c.disconnect()
