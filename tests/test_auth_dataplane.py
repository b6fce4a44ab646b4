"""Devices authenticate through the rendered proxies: real mosquitto brokers configured from the SAME
users and ACL model as the clusters (password file from the real mosquitto_passwd, acl_file from
components.renderers.auth), behind the rendered nginx and haproxy terminating TLS.

Counted per proxy: no credentials refused, wrong password refused, right password accepted,
pub/sub in the device's own subtree, nothing read from or written into another device's subtree.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from components.config import parse
from components.renderers import auth as ra
from components.renderers.proxy import Backend
from tests.harness import Lab, connack_code, free_port, make_certs, tls_context, wait_bridged, wait_port

KINDS = ["nginx", "haproxy"]
HOSTS = ["127.0.0.5", "127.0.0.6"]
USERS = {"alice": "alice-Pw-71", "bob": "bob-Pw-38", "bridge": "bridge-Pw-55"}
ATTEMPTS = 20
RESULTS: dict[str, dict[str, int]] = {}

# The stack's auth model: the default rule (each device its own subtree) plus a named user that
# carries traffic between the two brokers, as a cross-region bridge user would.
MODEL = parse(
    {"auth": {"acl": [{"topics": ["devices/${username}/#"]}, {"who": "username:bridge", "topics": ["devices/#"]}]}},
    stack="lab",
    source="lab",
    region="eu-central-1",
).auth


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _start_brokers(lab: Lab, port: int) -> None:
    passwd = lab.workdir / "passwd"
    for user, pw in USERS.items():
        args = ["mosquitto_passwd", "-b", str(passwd), user, pw]
        if not passwd.exists():
            args.insert(1, "-c")
        subprocess.run(args, check=True, capture_output=True)
    acl = lab.workdir / "acl"
    acl.write_text(ra.mosquitto_acl(MODEL))
    for i, host in enumerate(HOSTS):
        lines = [
            "persistence false",
            "log_dest stdout",
            # Started as root, mosquitto would switch to its own user and lose the test's files.
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
            f"listener {port} {host}",
        ]
        if i > 0:
            lines += [
                f"connection bridge-{i}",
                f"address {HOSTS[0]}:{port}",
                "topic devices/# both 0",
                "remote_username bridge",
                f"remote_password {USERS['bridge']}",
                f"remote_clientid bridge-{i}",
                "cleansession true",
                "bridge_protocol_version mqttv311",
            ]
        conf = lab.workdir / f"mosquitto-auth-{i}.conf"
        conf.write_text("\n".join(lines) + "\n")
        lab.spawn_mosquitto(f"mosquitto-auth-{i}", conf)
        wait_port(host, port)  # the first listens before the others' bridges connect to it
    wait_bridged(lab.workdir / "mosquitto-auth-0.log", [f"bridge-{i}" for i in range(1, len(HOSTS))])


@pytest.fixture(params=KINDS, scope="module")
def lab(request, tmp_path_factory, certs):
    kind = request.param
    port = free_port("127.0.0.5")
    with Lab(tmp_path_factory.mktemp(f"auth-{kind}")) as lab:
        _start_brokers(lab, port)
        s = lab.settings(certs, [Backend(f"b{i}", h, port) for i, h in enumerate(HOSTS)], mqtts_port=free_port(), wss_port=None)
        lab.start_proxy(kind, s)
        lab.kind, lab.s, lab.certs = kind, s, certs
        time.sleep(1.0)  # haproxy's first health checks (any CONNACK counts: refusals are alive)
        yield lab
    print(json.dumps(RESULTS, indent=1))


def test_without_credentials_every_connect_is_refused(lab):
    codes = [connack_code(lab.s.mqtts_port, lab.certs["ca"], f"anon-{i}") for i in range(ATTEMPTS)]
    RESULTS.setdefault(lab.kind, {})["anonymous_refused"] = sum(c == 5 for c in codes)
    assert codes == [5] * ATTEMPTS, codes  # 5: not authorised


def test_a_wrong_password_is_refused(lab):
    codes = [connack_code(lab.s.mqtts_port, lab.certs["ca"], f"wrong-{i}", "alice", "not-her-password") for i in range(ATTEMPTS)]
    RESULTS.setdefault(lab.kind, {})["wrong_password_refused"] = sum(c in (4, 5) for c in codes)
    assert all(c in (4, 5) for c in codes), codes


def test_the_right_password_is_accepted(lab):
    codes = [connack_code(lab.s.mqtts_port, lab.certs["ca"], f"right-{i}", "alice", USERS["alice"]) for i in range(ATTEMPTS)]
    RESULTS.setdefault(lab.kind, {})["right_password_accepted"] = sum(c == 0 for c in codes)
    assert codes == [0] * ATTEMPTS, codes


def _client(lab, client_id: str, user: str):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.tls_set_context(tls_context(lab.certs["ca"]))
    c.username_pw_set(user, USERS[user])
    c.received = []
    c.granted = []
    c.suback = threading.Event()
    c.on_message = lambda cl, u, m: cl.received.append((m.topic, m.payload))

    def on_subscribe(cl, u, mid, codes, props=None):
        cl.granted.extend(int(getattr(rc, "value", rc)) for rc in codes)
        cl.suback.set()

    c.on_subscribe = on_subscribe
    connected = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p=None: connected.set() if not rc.is_failure else None
    c.connect("127.0.0.1", lab.s.mqtts_port, keepalive=30)
    c.loop_start()
    assert connected.wait(5), f"{user} connects through {lab.kind}"
    return c


def _subscribe(c, topic: str) -> int:
    c.suback.clear()
    c.subscribe(topic, qos=1)
    assert c.suback.wait(5)
    return c.granted[-1]


def test_a_device_uses_its_own_subtree_and_cannot_touch_anothers(lab):
    alice_sub, alice_pub = _client(lab, "alice-sub", "alice"), _client(lab, "alice-pub", "alice")
    bob_sub, bob_pub = _client(lab, "bob-sub", "bob"), _client(lab, "bob-pub", "bob")
    try:
        assert _subscribe(alice_sub, "devices/alice/#") == 1
        assert _subscribe(bob_sub, "devices/bob/#") == 1
        spy_code = _subscribe(alice_sub, "devices/bob/#")  # alice asks for bob's subtree
        time.sleep(0.5)
        own = 0
        for i in range(10):
            alice_pub.publish(f"devices/alice/t{i}", b"mine", qos=1).wait_for_publish(3)
            bob_pub.publish(f"devices/bob/t{i}", b"bob's", qos=1).wait_for_publish(3)
            alice_pub.publish(f"devices/bob/t{i}", b"forged", qos=1).wait_for_publish(3)  # writing into bob's subtree
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(alice_sub.received) < 10:
            time.sleep(0.1)
        time.sleep(1.0)  # anything that should not arrive has had its chance
        own = sum(t.startswith("devices/alice/") for t, _ in alice_sub.received)
        leaked = sum(t.startswith("devices/bob/") for t, _ in alice_sub.received)
        forged = sum(p == b"forged" for _, p in bob_sub.received)
        bob_own = sum(p == b"bob's" for _, p in bob_sub.received)
        RESULTS.setdefault(lab.kind, {}).update(
            own_subtree_delivered=own, other_subtree_read=leaked, forged_into_other_subtree=forged, other_device_own_delivered=bob_own
        )
        assert own == 10 and bob_own == 10
        assert leaked == 0 and forged == 0
        # mosquitto answers a denied subscription with 0x80 (or grants it and never delivers).
        assert spy_code in (0x80, 1)
    finally:
        for c in (alice_sub, alice_pub, bob_sub, bob_pub):
            c.loop_stop()
            c.disconnect()


# --- device certificates: the rendered proxy verifies them (auth.mechanism password+mtls) --------
def _device_ca(d, name: str) -> dict:
    """A device CA and one client certificate it signed (ECDSA P-256)."""
    d.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca_key, ca_crt, key, csr, crt = (d / f"{name}-{x}" for x in ("ca.key", "ca.crt", "dev.key", "dev.csr", "dev.crt"))
    run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2", "-subj", f"/CN={name} device CA")
    run("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=alice")
    ext = d / f"{name}-ext.cnf"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return {"ca": ca_crt, "crt": crt, "key": key}


@pytest.fixture(params=KINDS, scope="module")
def mtls_lab(request, tmp_path_factory, certs):
    kind = request.param
    work = tmp_path_factory.mktemp(f"mtls-{kind}")
    devices, foreign = _device_ca(work / "pki", "devices"), _device_ca(work / "pki", "foreign")
    cfg = parse(
        {"load_balancer": {"kind": kind}, "auth": {"mechanism": "password+mtls", "mtls": {"ca_bundle": devices["ca"].read_text()}}},
        stack="lab",
        source="lab",
        region="eu-central-1",
    )
    ca_path = work / "devices-ca.pem"
    ca_path.write_text(cfg.auth.mtls.ca_bundle)  # what the proxy hosts get as /etc/mqtt-cluster/tls/devices-ca.pem
    port = free_port("127.0.0.5")
    with Lab(work) as lab:
        _start_brokers(lab, port)
        s = lab.settings(
            certs, [Backend(f"b{i}", h, port) for i, h in enumerate(HOSTS)], mqtts_port=free_port(), wss_port=None, client_ca=str(ca_path)
        )
        lab.start_proxy(kind, s)
        lab.kind, lab.s, lab.certs, lab.devices, lab.foreign = kind, s, certs, devices, foreign
        time.sleep(1.0)
        yield lab


def _connack_with_cert(lab, client_id: str, cert: dict | None, password: str | None) -> int | None:
    return connack_code(
        lab.s.mqtts_port,
        lab.certs["ca"],
        client_id,
        username="alice" if password is not None else None,
        password=password,
        cert=(cert["crt"], cert["key"]) if cert is not None else None,
    )


def test_the_proxy_verifies_device_certificates(mtls_lab):
    lab = mtls_lab
    n = 10
    none = [_connack_with_cert(lab, f"nocert-{i}", None, USERS["alice"]) for i in range(n)]
    foreign = [_connack_with_cert(lab, f"foreign-{i}", lab.foreign, USERS["alice"]) for i in range(n)]
    valid = [_connack_with_cert(lab, f"valid-{i}", lab.devices, USERS["alice"]) for i in range(n)]
    valid_no_pw = [_connack_with_cert(lab, f"validnopw-{i}", lab.devices, None) for i in range(n)]
    RESULTS.setdefault(f"{lab.kind}+mtls", {}).update(
        no_certificate_refused=sum(c is None for c in none),
        foreign_ca_refused=sum(c is None for c in foreign),
        valid_certificate_and_password_accepted=sum(c == 0 for c in valid),
        valid_certificate_without_password_refused=sum(c == 5 for c in valid_no_pw),
    )
    print(json.dumps(RESULTS, indent=1))
    assert none == [None] * n, "no certificate: no MQTT session"
    assert foreign == [None] * n, "a certificate from another CA: no MQTT session"
    assert valid == [0] * n
    assert valid_no_pw == [5] * n, "the broker still checks the password"
