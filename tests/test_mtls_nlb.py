"""password+mtls behind an NLB: TLS passthrough to the brokers' own SSL listeners.

An NLB TLS listener cannot ask for a client certificate, so the NLB listens TCP on 8883 (and 8084)
and forwards to the brokers' ssl/wss listeners, which present a server certificate from the stack's
own CA (SSM SecureString, fetched at boot) and verify the device certificate against the device CA.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from pyhocon import ConfigFactory

from tests.conftest import group_id, plan_of, rules_into

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdevicesCA\n-----END CERTIFICATE-----\n"
AUTH = {"mechanism": "password+mtls", "mtls": {"ca_bundle": CA_PEM}}
BROKERS = {"engine": "emqx", "count": 3, "instance_type": "t3.medium", "websocket": True}
# emqx/emqx v5.8.6 apps/emqx/src/emqx_schema.erl: mqtt_listener common keys (enable, bind,
# max_connections, proxy_protocol, proxy_protocol_timeout, ...), ssl_options (:587-600, :615-632)
# with cacertfile/certfile/keyfile/verify (:2225-2262) and fail_if_no_peer_cert (:2343-2349).
SSL_LISTENER_KEYS = {
    "enable",
    "bind",
    "max_connections",
    "proxy_protocol",
    "proxy_protocol_timeout",
    "ssl_options",
    "websocket",
    "tcp_options",
}
SSL_OPTIONS_KEYS = {"certfile", "keyfile", "cacertfile", "verify", "fail_if_no_peer_cert"}


def _plan(program):
    return program("dev", auth=AUTH, brokers=BROKERS)


def test_the_nlb_passes_tls_through_on_tcp_listeners_to_the_brokers_ssl_ports(program):
    plan = _plan(program)
    listeners = {r.inputs["port"]: r.inputs for r in plan.of_type("aws:lb/listener:Listener")}
    assert set(listeners) == {8883, 8084}
    for port, lst in listeners.items():
        assert lst["protocol"] == "TCP", port
        assert not lst.get("certificateArn") and not lst.get("sslPolicy")
    groups = {r.inputs["port"]: r.inputs for r in plan.of_type("aws:lb/targetGroup:TargetGroup")}
    assert set(groups) == {8883, 8084} and all(g["protocol"] == "TCP" for g in groups.values())
    assert all(g["healthCheck"]["protocol"] == "HTTP" and g["healthCheck"]["port"] == "18083" for g in groups.values())
    assert not plan.of_type("aws:acm/certificate:Certificate"), "the server key lives on the brokers, not in ACM"
    assert "BEGIN CERTIFICATE" in plan.outputs["ca_certificate"], "clients trust the stack's CA"
    before = {r.inputs["port"]: r.inputs["protocol"] for r in plan_of("dev").of_type("aws:lb/listener:Listener")}
    assert set(before.values()) == {"TLS"}, "TLS terminates at the NLB without device certificates"


def test_the_brokers_admit_8883_and_8084_from_the_front_only(program):
    plan = _plan(program)
    front = group_id(plan, "front")
    into = [(r["fromPort"], r.get("referencedSecurityGroupId")) for r in rules_into(plan, "broker")]
    assert (8883, front) in into and (8084, front) in into
    assert not [p for p, _ in into if p in (1883, 8083)], "plain MQTT/WebSocket is not forwarded any more"
    assert [r for r in rules_into(plan, "broker") if r["fromPort"] == 8883] == [
        r for r in rules_into(plan, "broker") if r["fromPort"] == 8883 and r.get("referencedSecurityGroupId") == front
    ]


def test_the_server_certificate_reaches_the_brokers_through_ssm_only(program, tmp_path):
    plan = _plan(program)
    params = {r.inputs["name"]: r.inputs for r in plan.of_type("aws:ssm/parameter:Parameter")}
    for leaf in ("broker-tls-cert", "broker-tls-key"):
        assert params[f"/mqtt-cluster/dev/{leaf}"]["type"] == "SecureString"
    policy = next(r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "brokers-read-own-params")
    allowed = json.loads(policy.inputs["policy"])["Statement"][0]["Resource"]
    assert any(a.endswith("/mqtt-cluster/dev/broker-tls-key") for a in allowed)
    start = plan.files[("emqx-1", "mqtt-broker-start")]
    assert '--name "$PARAMS/broker-tls-key"' in start and ">'/run/mqtt-cluster/tls/server.key'" in start
    assert "-v /run/mqtt-cluster/tls:/opt/emqx/etc/server-tls:ro" in start
    assert "-v /etc/mqtt-cluster/devices-ca.pem:/opt/emqx/etc/devices-ca.pem:ro" in start
    f = tmp_path / "start.sh"
    f.write_text(start)
    assert subprocess.run(["shellcheck", str(f)], capture_output=True, text=True).returncode == 0
    # The key (the mock's pulumi-tls key is "-----BEGIN PRIVATE KEY-----...") is in no host file, no
    # user-data and nowhere in the plan's JSON; its SSM parameter shows only as a secret.
    texts = list(plan.files.values()) + [str(r.inputs.get("userData", "")) for r in plan.of_type("aws:ec2/instance:Instance")]
    assert len(texts) > 10 and not [t for t in texts if "PRIVATE KEY" in t]
    assert "PRIVATE KEY" not in json.dumps(plan.as_json())
    assert params["/mqtt-cluster/dev/broker-tls-key"]["value"] == "[secret]"
    assert "MIIBdevicesCA" in plan.files[("emqx-1", "devices-ca.pem")], "the device CA is public: user-data"


def test_emqx_verifies_device_certificates_on_its_ssl_and_wss_listeners(program):
    plan = _plan(program)
    conf = ConfigFactory.parse_string(plan.files[("emqx-1", "emqx.conf")])
    for name, port in (("ssl", 8883), ("wss", 8084)):
        lst = conf["listeners"][name]["default"]
        assert set(lst) <= SSL_LISTENER_KEYS and set(lst["ssl_options"]) <= SSL_OPTIONS_KEYS
        assert lst["enable"] is True and lst["bind"] == f"0.0.0.0:{port}"
        o = lst["ssl_options"]
        # fail_if_no_peer_cert = true requires verify_peer (emqx_schema.erl:2415-2425).
        assert o["verify"] == "verify_peer" and o["fail_if_no_peer_cert"] is True
        assert o["cacertfile"] == "/opt/emqx/etc/devices-ca.pem"
        assert (o["certfile"], o["keyfile"]) == ("/opt/emqx/etc/server-tls/server.crt", "/opt/emqx/etc/server-tls/server.key")
    assert conf["authentication"][0]["backend"] == "built_in_database", "the password is still checked"
    default = ConfigFactory.parse_string(plan_of("dev").files[("emqx-1", "emqx.conf")])
    assert default["listeners"]["ssl"]["default"]["enable"] is False


@pytest.mark.parametrize("stack", ["dev", "vernemq"])
def test_the_brokers_may_read_every_parameter_their_scripts_fetch(stack):
    plan = plan_of(stack)
    policy = json.loads(
        next(r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "brokers-read-own-params").inputs["policy"]
    )
    allowed = {a.rsplit(":parameter", 1)[1] for a in policy["Statement"][0]["Resource"]}
    denied_elsewhere = policy["Statement"][2]
    assert denied_elsewhere["Effect"] == "Deny" and "NotResource" in denied_elsewhere, "anything not listed is denied"
    host = next(h for h, f in plan.files if f == "mqtt-cluster-users")
    users = plan.files[(host, "mqtt-cluster-users")]
    start = plan.files[(host, "mqtt-broker-start")]
    fetched = set(re.findall(r"^PARAM='([^']+)'", users, flags=re.M)) | {
        f"/mqtt-cluster/{stack}/{leaf}" for leaf in re.findall(r'--name "\$PARAMS/([^"]+)"', start)
    }
    assert f"/mqtt-cluster/{stack}/auth-users" in fetched
    assert fetched <= allowed, fetched - allowed
