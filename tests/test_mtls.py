"""auth.mechanism mtls: device certificates as the only credential (haproxy in front of EMQX).

The model refuses every front that cannot hand the certificate's CN to the brokers; the rendered
EMQX config takes the CN as username (schema facts cited), and the rendered haproxy verifies the
certificate and sends the CN in the PROXY v2 header (haproxy -c on the shipped file)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pyhocon import ConfigFactory

from components.config import ConfigError, parse
from components.renderers import broker as br
from components.renderers.nodes import node_specs
from tests.harness import make_certs

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdevicesCA\n-----END CERTIFICATE-----\n"
MTLS = {"mechanism": "mtls", "mtls": {"ca_bundle": CA_PEM}}
HAPROXY_PP = {"kind": "haproxy", "proxy_protocol": True}
# emqx/emqx v5.8.6 apps/emqx/src/emqx_schema.erl:3761-3767: mqtt.peer_cert_as_username enum.
PEER_CERT_AS_USERNAME = {"disabled", "cn", "dn", "crt", "pem", "md5"}


def _cfg(raw: dict):
    return parse(raw, stack="dev", source="stacks/Pulumi.dev.yaml", region="eu-central-1")


def _refusal(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        _cfg(raw)
    return str(e.value)


def test_mtls_alone_is_accepted_with_haproxy_proxy_protocol_and_emqx():
    cfg = _cfg({"load_balancer": HAPROXY_PP, "auth": MTLS})
    assert cfg.auth.mechanism == "mtls" and not cfg.auth.uses_password


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"load_balancer": {"kind": "nginx", "proxy_protocol": True}, "auth": MTLS}, "auth.mechanism", "nginx cannot pass it on"),
        ({"load_balancer": {"kind": "haproxy"}, "auth": MTLS}, "load_balancer.proxy_protocol", "set load_balancer.proxy_protocol: true"),
        ({"brokers": {"engine": "vernemq", "accept_eula": True}, "load_balancer": HAPROXY_PP, "auth": MTLS}, "auth.mechanism", "emqx only"),
        ({"load_balancer": {"kind": "nlb"}, "auth": MTLS}, "auth.mechanism", "mtls alone behind nlb"),
        (
            {"brokers": {"engine": "vernemq", "accept_eula": True}, "auth": {**MTLS, "mechanism": "password+mtls"}},
            "auth.mechanism",
            "behind nlb is implemented for emqx only",
        ),
        ({"load_balancer": {"kind": "elb"}, "auth": MTLS}, "auth.mechanism", "cannot verify client certificates"),
        ({"load_balancer": {**HAPROXY_PP, "plain_mqtt": True}, "auth": MTLS}, "load_balancer.plain_mqtt", "auth.mechanism mtls"),
        ({"role": "local", "auth": MTLS}, "auth.mechanism", "local proxy does not send"),
    ],
)
def test_mtls_alone_is_refused_where_the_cn_cannot_reach_the_brokers(raw, key, words):
    line = _refusal(raw)
    assert f"mqtt-cluster:{key}" in line and words in line, line
    assert "\n" not in line


def _emqx(raw: dict):
    cfg = _cfg(raw)
    nodes = node_specs(cfg)
    return ConfigFactory.parse_string(br.emqx_hocon(cfg, nodes[0], [n.node_name for n in nodes]))


def test_emqx_takes_the_certificate_cn_as_username_on_the_proxy_protocol_listener():
    conf = _emqx({"load_balancer": HAPROXY_PP, "auth": MTLS})
    assert conf["mqtt"]["peer_cert_as_username"] == "cn" and conf["mqtt"]["peer_cert_as_username"] in PEER_CERT_AS_USERNAME
    assert conf["mqtt"]["idle_timeout"] == "15s", "merged with the base mqtt block, not replacing it"
    assert conf["listeners"]["tcp"]["default"]["proxy_protocol"] is True
    assert conf["authentication"] == [], "the certificate is the credential: no password authenticator"
    assert conf["authorization"]["no_match"] == "deny" and conf["authorization"]["sources"][0]["type"] == "file"
    for other in ({}, {"load_balancer": HAPROXY_PP, "auth": {**MTLS, "mechanism": "password+mtls"}}):
        assert "peer_cert_as_username" not in _emqx(other).get("mqtt", {}), "the CONNECT username otherwise"


def test_the_shipped_haproxy_verifies_and_sends_the_cn_and_passes_haproxy_check(program, tmp_path):
    plan = program("dev", load_balancer={**HAPROXY_PP}, auth=MTLS)
    text = plan.files[("haproxy-1", "haproxy.cfg")]
    assert "verify required ca-file /etc/mqtt-cluster/tls/devices-ca.pem" in text
    defaults = [line for line in text.splitlines() if line.strip().startswith("default-server")]
    assert len(defaults) == 2 and all("send-proxy-v2-ssl-cn" in line for line in defaults)
    assert text.count("tcp-request session reject unless device_cn") == 2  # mqtts and wss
    certs = make_certs(tmp_path / "certs")
    local = text.replace("/etc/mqtt-cluster/tls/server.pem", str(certs["pem"]))
    local = local.replace("/etc/mqtt-cluster/tls/devices-ca.pem", str(certs["ca"]))
    local = local.replace("    user haproxy\n", "").replace("    group haproxy\n", "")
    f = tmp_path / "haproxy.cfg"
    f.write_text(local)
    out = subprocess.run(["haproxy", "-c", "-f", str(f)], capture_output=True, text=True, env={**os.environ, "HAPROXY_STATS_PASSWORD": "x"})
    assert out.returncode == 0, out.stdout + out.stderr
    default = program("dev", load_balancer={"kind": "haproxy", "proxy_protocol": True}).files[("haproxy-1", "haproxy.cfg")]
    assert "ssl-cn" not in default and "device_cn" not in default


def test_readme_tells_how_certificate_only_devices_work_and_what_is_left():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "mtls` alone is refused for now" not in readme
    for words in (
        "`auth.mechanism: mtls`",
        "send-proxy-v2-ssl-cn",
        "peer_cert_as_username = cn",
        "devices/device-1/#",
        "Not done yet — certificates elsewhere",
    ):
        assert words in readme, words
