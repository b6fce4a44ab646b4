"""Load balancers per kind, as the engine would receive them, and their rendered configs under real tools."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from pyhocon import ConfigFactory

from components.renderers import cloud_init
from tests.conftest import STACKS, group_id, plan_of, rules_into, stack_config
from tests.harness import NGINX_STREAM_MODULE, make_certs

AWS_STACKS = [s for s in STACKS if s not in ("local",) and "global" not in s]


def kind_of(stack):
    return json.loads(stack_config(stack).get("mqtt-cluster:load_balancer", "{}")).get("kind", "nlb")


def test_every_kind_is_shipped_in_a_stack_file():
    assert {kind_of(s) for s in AWS_STACKS} >= {"nlb", "elb", "nginx", "haproxy"}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_brokers_accept_mqtt_only_from_the_front_group(stack):
    plan = plan_of(stack)
    front = group_id(plan, "front")
    client_rules = [r for r in rules_into(plan, "broker") if r["fromPort"] in (1883, 8083)]
    assert client_rules and all(r.get("referencedSecurityGroupId") == front for r in client_rules)


def test_nlb_terminates_tls_with_a_tls12_policy_and_forwards_plain_tcp():
    plan = plan_of("dev")
    nlb = plan.of_type("aws:lb/loadBalancer:LoadBalancer")[0].inputs
    assert nlb["loadBalancerType"] == "network" and nlb["internal"] is False and nlb["enableCrossZoneLoadBalancing"] is True
    listeners = {lst.inputs["port"]: lst.inputs for lst in plan.of_type("aws:lb/listener:Listener")}
    assert set(listeners) == {8883, 8084}, "no plain 1883 unless asked"
    tgs = {t.id: t.inputs for t in plan.of_type("aws:lb/targetGroup:TargetGroup")}
    for front, backend in ((8883, 1883), (8084, 8083)):
        lst = listeners[front]
        assert lst["protocol"] == "TLS" and lst["sslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-2")
        tg = next(t for t in tgs.values() if t["port"] == backend)
        assert tg["protocol"] == "TCP"
        assert tg["healthCheck"]["path"] == "/api/v5/status" and tg["healthCheck"]["port"] == "18083"
        assert tg["proxyProtocolV2"] is False
    assert len(plan.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")) == 3 * 2
    assert plan.outputs["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----"), "self-signed: clients get the CA"
    cert = plan.of_type("aws:acm/certificate:Certificate")[0].inputs
    assert cert["privateKey"] == "[secret]"


def test_nlb_plain_listener_only_when_asked(program):
    plan = program("dev", load_balancer={"kind": "nlb", "plain_mqtt": True})
    assert 1883 in {lst.inputs["port"] for lst in plan.of_type("aws:lb/listener:Listener")}
    front = group_id(plan, "front")
    assert any(r["fromPort"] == 1883 for r in rules_into(plan, "front")), front


def test_proxy_protocol_is_one_setting_for_both_ends(program):
    plan = program("dev", load_balancer={"kind": "nlb", "proxy_protocol": True})
    assert all(t.inputs["proxyProtocolV2"] for t in plan.of_type("aws:lb/targetGroup:TargetGroup"))
    conf = ConfigFactory.parse_string(plan.files[("emqx-1", "emqx.conf")])
    assert conf["listeners"]["tcp"]["default"]["proxy_protocol"] is True
    assert conf["listeners"]["ws"]["default"]["proxy_protocol"] is True
    off = plan_of("dev")
    assert ConfigFactory.parse_string(off.files[("emqx-1", "emqx.conf")])["listeners"]["tcp"]["default"]["proxy_protocol"] is False


def test_nlb_with_a_domain_gets_a_dns_validated_certificate_and_alias(program):
    plan = program("dev", load_balancer={"kind": "nlb", "domain": "mqtt.example.com", "hosted_zone_id": "Z123EXAMPLE"})
    cert = plan.of_type("aws:acm/certificate:Certificate")[0].inputs
    assert cert["domainName"] == "mqtt.example.com" and cert["validationMethod"] == "DNS"
    assert plan.of_type("aws:acm/certificateValidation:CertificateValidation")
    assert plan.outputs["mqtt_host"] == "mqtt.example.com"
    assert "ca_certificate" not in plan.outputs


def test_classic_elb_pins_tls12_and_outlives_the_keepalive():
    plan = plan_of("staging")
    elb = plan.of_type("aws:elb/loadBalancer:LoadBalancer")[0].inputs
    ssl = [lst for lst in elb["listeners"] if lst["lbProtocol"] == "ssl"]
    assert {(lst["lbPort"], lst["instancePort"], lst["instanceProtocol"]) for lst in ssl} == {(8883, 1883, "tcp"), (8084, 8083, "tcp")}
    assert elb["crossZoneLoadBalancing"] is True
    assert elb["idleTimeout"] > 60
    assert elb["healthCheck"]["target"] == "HTTP:18083/api/v5/status"
    assert len(elb["instances"]) == 3  # every staging node (3 cores)
    policy = plan.of_type("aws:elb/loadBalancerPolicy:LoadBalancerPolicy")[0].inputs
    assert policy["policyAttributes"] == [{"name": "Reference-Security-Policy", "value": "ELBSecurityPolicy-TLS-1-2-2017-01"}]
    assert sorted(p.inputs["loadBalancerPort"] for p in plan.of_type("aws:elb/listenerPolicy:ListenerPolicy")) == [8083 + 1, 8883]


@pytest.mark.parametrize("stack,kind", [("vernemq", "haproxy"), ("edge", "nginx")])
def test_proxy_hosts_are_two_with_elastic_ips_in_public_subnets(stack, kind):
    plan = plan_of(stack)
    hosts = [i for i in plan.of_type("aws:ec2/instance:Instance") if i.inputs["tags"].get("Role") == "proxy"]
    assert len(hosts) == 2
    public = {s.id for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["Tier"] == "public"}
    assert all(h.inputs["subnetId"] in public for h in hosts)
    assert len({h.inputs["subnetId"] for h in hosts}) == 2, "spread over zones"
    assert len(plan.of_type("aws:ec2/eipAssociation:EipAssociation")) == 2
    assert all(h.inputs["metadataOptions"]["httpTokens"] == "required" for h in hosts)
    for h in hosts:
        assert "BEGIN" not in cloud_init.unpacked(h.inputs["userDataBase64"]), "keys come from SSM, not user-data"


def test_nginx_stack_uses_health_checked_multivalue_dns():
    plan = plan_of("edge")
    records = [r.inputs for r in plan.of_type("aws:route53/record:Record") if r.inputs.get("multivalueAnswerRoutingPolicy")]
    assert len(records) == 2 and all(r["healthCheckId"] for r in records)
    checks = plan.of_type("aws:route53/healthCheck:HealthCheck")
    assert all(c.inputs["type"] == "TCP" and c.inputs["port"] == 8883 for c in checks)


def test_nginx_ws_listener_does_not_expect_proxy_protocol_but_tcp_does():
    plan = plan_of("edge")
    conf = ConfigFactory.parse_string(plan.files[("emqx-1", "emqx.conf")])
    assert conf["listeners"]["tcp"]["default"]["proxy_protocol"] is True
    assert conf["listeners"]["ws"]["default"]["proxy_protocol"] is False
    nginx = plan.files[("nginx-1", "nginx.conf")]
    assert "proxy_protocol on;" in nginx and "X-Forwarded-For" in nginx
    assert "proxy_timeout 270s;" in nginx, "keepalive 120 -> 2x + 30"


def test_haproxy_sizes_maxconn_for_the_host_and_sends_proxy_v2():
    cfg = plan_of("vernemq").files[("haproxy-1", "haproxy.cfg")]
    maxconn = int(re.search(r"^\s+maxconn (\d+)", cfg, re.M).group(1))
    assert maxconn >= 30000, "not the 2049 that turned devices away"
    assert "send-proxy-v2" in cfg and "ssl-min-ver TLSv1.2" in cfg
    assert "tcp-check connect default" in cfg and "tcp-check expect rbinary ^2002" in cfg, "checks carry the header; any CONNACK"
    assert 'stats auth admin:"${HAPROXY_STATS_PASSWORD}"' in cfg


def _localise(text: str, kind: str, tmp, certs) -> str:
    """Point a host's config at this machine: module path, certificates, pid/log files, and the
    brokers' private DNS names at loopback addresses (nginx resolves upstreams at load)."""
    names = sorted(set(re.findall(r"\b([a-z]+-(?:replicant-)?\d+\.[a-z0-9-]+\.mqtt\.internal)\b", text)))
    for i, name in enumerate(names):
        text = text.replace(name, f"127.0.0.{i + 2}")
    text = text.replace("/usr/lib64/nginx/modules/ngx_stream_module.so", NGINX_STREAM_MODULE)
    text = text.replace("/etc/mqtt-cluster/tls/server.crt", str(certs["crt"])).replace(
        "/etc/mqtt-cluster/tls/server.key", str(certs["key"])
    )
    text = text.replace("/etc/mqtt-cluster/tls/server.pem", str(certs["pem"]))
    text = text.replace("/var/log/nginx/", f"{tmp}/").replace("/run/", f"{tmp}/")
    return re.sub(r"^user nginx;$", "", text, flags=re.M)


@pytest.mark.parametrize("stack", AWS_STACKS + ["__all_kinds__"])
def test_every_rendered_proxy_config_passes_the_real_tool(stack, tmp_path, program):
    certs = make_certs(tmp_path / "certs")
    if stack == "__all_kinds__":
        plans = [
            program("dev", load_balancer={"kind": k, "proxy_protocol": pp, "plain_mqtt": pp})
            for k in ("nginx", "haproxy")
            for pp in (False, True)
        ]
    else:
        plans = [plan_of(stack)]
    checked = 0
    for plan in plans:
        for (host, name), text in plan.files.items():
            if name not in ("nginx.conf", "haproxy.cfg"):
                continue
            path = tmp_path / f"{host}-{name}"
            path.write_text(_localise(text, name, tmp_path, certs))
            if name == "nginx.conf":
                proc = subprocess.run(
                    ["nginx", "-t", "-c", str(path), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")], capture_output=True, text=True
                )
            else:
                proc = subprocess.run(
                    ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, env={**os.environ, "HAPROXY_STATS_PASSWORD": "x"}
                )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            checked += 1
    if stack == "__all_kinds__" or kind_of(stack) in ("nginx", "haproxy"):
        assert checked >= 2
