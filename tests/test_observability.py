"""Observability: the alarm topic, log groups, the CloudWatch agent, alarms, dashboards, and the local
Prometheus + Grafana — through the offline plan, real tools (promtool, the agent's own JSON schema)
and the brokers' upstream metric names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import LOG_RETENTION_DAYS, ConfigError, parse
from components.renderers import observability as ro
from components.renderers.nodes import node_specs
from components.renderers.proxy import maxconn_for
from tests.conftest import ROOT, STACKS, plan_of
from tests.schema_check import errors as schema_errors

AWS_STACKS = [s for s in STACKS if s != "local" and "global" not in s]
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = "aws:sns/topic:Topic"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
INSTANCE = "aws:ec2/instance:Instance"
CONTAINER = "docker:index/container:Container"
SCHEMA = json.loads((ROOT / "tests" / "facts" / "cloudwatch-agent-schema.json").read_text())
EMQX_GIT = Path("/work/.mirror/emqx+emqx/repo")
VERNEMQ_GIT = Path("/work/.mirror/vernemq+vernemq/repo")


def cfg_of(stack: str):
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    from components.config import stack_file_config

    raw, region = stack_file_config(doc)
    return parse(raw, stack=stack, source="x", region=region)


def alarms_of(plan) -> dict[str, dict]:
    return {r.inputs["name"].split(f"mqtt-cluster-{plan.stack}-", 1)[1]: r.inputs for r in plan.of_type(ALARM)}


def hosts_of(plan) -> dict[str, str]:
    """host -> instance id, for broker and proxy hosts."""
    out = {}
    for r in plan.of_type(INSTANCE):
        tags = r.inputs["tags"]
        if "Node" in tags:
            out[tags["Name"].split(".")[0]] = r.id
        elif tags.get("Role") == "proxy":
            out[tags["Name"]] = r.id
    return out


# --- the model ------------------------------------------------------------------------------------
def test_defaults_are_on_with_thirty_days_of_logs():
    obs = parse({}, stack="dev", source="x", region="eu-central-1").observability
    assert (obs.logs, obs.metrics, obs.alarms, obs.dashboard, obs.auto_recovery) == (True, True, True, True, True)
    assert obs.log_retention_days == 30 and obs.alert_emails == []
    assert obs.log_retention_days in LOG_RETENTION_DAYS


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"log_retention_days": 31}, "observability.log_retention_days", "CloudWatch Logs accepts one of"),
        ({"log_retention_days": "30"}, "observability.log_retention_days", "whole number"),
        ({"alert_emails": ["ops@example"]}, "observability.alert_emails", "not an e-mail address"),
        ({"alert_emails": ["ops example.com"]}, "observability.alert_emails", "not an e-mail address"),
        ({"alert_emails": ["ops@example.com", "OPS@example.com"]}, "observability.alert_emails", "listed twice"),
        ({"connections_alarm_percent": 5}, "observability.connections_alarm_percent", "at least 10"),
        ({"alarms": "yes"}, "observability.alarms", "true or false"),
        ({"pager": True}, "observability.pager", "unknown key"),
    ],
)
def test_bad_observability_input_is_one_line_naming_the_key(section, key, problem):
    with pytest.raises(ConfigError) as exc:
        parse({"observability": section}, stack="dev", source="stacks/Pulumi.dev.yaml", region="eu-central-1")
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"stacks/Pulumi.dev.yaml: mqtt-cluster:{key}: ") and problem in line


def test_local_monitoring_ports_may_not_collide_and_global_stacks_refuse_the_section():
    with pytest.raises(
        ConfigError, match=r"mqtt-cluster:observability\.grafana_port: port 18083 is already taken by local\.dashboard_port"
    ):
        parse({"role": "local", "observability": {"grafana_port": 18083}}, stack="local", source="x")
    with pytest.raises(ConfigError, match=r"mqtt-cluster:observability: not used by a global stack"):
        parse({"role": "global", "links": {"stacks": ["a", "b"]}, "observability": {}}, stack="g", source="x", region="eu-central-1")


def test_the_offline_plan_exits_2_on_a_bad_retention(tmp_path):
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    doc["config"]["mqtt-cluster:observability"] = {"log_retention_days": 10}
    bad = tmp_path / "Pulumi.dev.yaml"
    bad.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "tools.plan", "dev", "--config-file", str(bad)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"{bad}: mqtt-cluster:observability.log_retention_days: ")


# --- every AWS stack: topic, log groups, alarms, dashboard, scoped IAM ------------------------------
@pytest.mark.parametrize("stack", AWS_STACKS)
def test_one_topic_per_stack_and_log_groups_per_role_with_retention(stack):
    plan, cfg = plan_of(stack), cfg_of(stack)
    home = [t for t in plan.of_type(TOPIC) if not t.inputs.get("region")]
    assert len(home) == 1 and home[0].inputs["kmsMasterKeyId"] == "alias/aws/sns"
    groups = {g.inputs["name"]: g.inputs for g in plan.of_type(LOG_GROUP)}
    expected = {f"/mqtt-cluster/{stack}/brokers", f"/mqtt-cluster/{stack}/metrics"}
    if cfg.load_balancer.kind in ("nginx", "haproxy"):
        expected.add(f"/mqtt-cluster/{stack}/proxies")
    assert set(groups) == expected
    assert all(g["retentionInDays"] == cfg.observability.log_retention_days for g in groups.values())
    assert plan.outputs["log_groups"] == {k: v for k, v in ro.log_groups(cfg).items()}


def test_alert_emails_subscribe_to_every_topic_and_retention_follows_config(program):
    emails = ["ops@example.com", "oncall@example.org"]
    plan = program("edge", observability={"alert_emails": emails, "log_retention_days": 90})
    topics = {t.urn: t for t in plan.of_type(TOPIC)}
    assert len(topics) == 2, "edge's Route53 alarms need a topic in us-east-1"
    subs = plan.of_type("aws:sns/topicSubscription:TopicSubscription")
    for t in topics.values():
        mine = [s.inputs for s in subs if t.urn in s.dependencies]
        assert sorted(s["endpoint"] for s in mine) == sorted(emails) and {s["protocol"] for s in mine} == {"email"}
        assert all(s.get("region") == t.inputs.get("region") for s in mine)
    assert {g.inputs["retentionInDays"] for g in plan.of_type(LOG_GROUP)} == {90}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_alarm_notifies_a_topic_in_its_own_region(stack):
    plan = plan_of(stack)
    topic_arn = {
        t.inputs.get("region"): f"arn:aws:sns:{t.inputs.get('region') or plan_region(plan)}:123456789012:{t.name}"
        for t in plan.of_type(TOPIC)
    }
    alarms = plan.of_type(ALARM)
    assert alarms
    for a in alarms:
        i = a.inputs
        topic = topic_arn[i.get("region")]
        assert topic in i["alarmActions"] and i["okActions"] == [topic], a.name
        assert i.get("dimensions") or i.get("metricQueries"), a.name


def plan_region(plan) -> str:
    return plan.outputs["region"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_per_host_alarms_one_per_host_on_that_hosts_instance(stack):
    plan, cfg = plan_of(stack), cfg_of(stack)
    alarms, hosts = alarms_of(plan), hosts_of(plan)
    nodes = node_specs(cfg)
    proxies = cfg.load_balancer.proxies if cfg.load_balancer.kind in ("nginx", "haproxy") else 0
    assert len(hosts) == len(nodes) + proxies
    for host, iid in hosts.items():
        system, instance = alarms[f"{host}-system-check"], alarms[f"{host}-instance-check"]
        assert system["metricName"] == "StatusCheckFailed_System" and system["dimensions"] == {"InstanceId": iid}
        assert instance["metricName"] == "StatusCheckFailed_Instance" and instance["dimensions"] == {"InstanceId": iid}
        itype = cfg.load_balancer.proxy_instance_type if host in {h for h in hosts if h.startswith(("nginx", "haproxy"))} else None
        itype = itype or ro.broker_instance_type(cfg, next(n for n in nodes if n.host == host))
        recover = f"arn:aws:automate:{cfg.region}:ec2:recover"
        assert (recover in system["alarmActions"]) == ro.supports_recovery(itype), host
    for node in nodes:
        disk = alarms[f"{node.host}-data-disk"]
        assert disk["namespace"] == "CWAgent" and disk["metricName"] == "disk_used_percent"
        assert disk["dimensions"] == {"InstanceId": hosts[node.host], "path": ro.DATA_PATH, "fstype": "xfs"}
        assert disk["threshold"] == cfg.observability.disk_alarm_percent
        conn = alarms[f"{node.host}-connections"]
        assert conn["dimensions"] == {"Stack": stack, "Host": node.host}
        assert conn["metricName"] == ro.engine_metrics(cfg).connections
    assert sum(1 for k in alarms if k.endswith("-system-check")) == len(hosts)


def test_shipped_stacks_recover_their_hosts_and_a_type_with_instance_storage_does_not(program):
    assert all(ro.supports_recovery(t) for t in ("t3.medium", "t3.large", "m6i.large", "c6i.large", "t3.small"))
    plan = program("dev", brokers={"count": 3, "instance_type": "c5d.large"})
    systems = [a.inputs for a in plan.of_type(ALARM) if a.inputs["metricName"] == "StatusCheckFailed_System"]
    assert len(systems) == 3 and not any("ec2:recover" in str(s["alarmActions"]) for s in systems)
    plan = program("dev", observability={"auto_recovery": False})
    assert not any("ec2:recover" in str(a.inputs["alarmActions"]) for a in plan.of_type(ALARM))


def test_load_balancer_alarms_watch_the_stacks_own_nlb_target_groups_with_a_quorum_threshold(program):
    plan = program("dev", brokers={"count": 5})
    nlb = plan.of_type("aws:lb/loadBalancer:LoadBalancer")[0]
    groups = {tg.inputs["port"]: tg for tg in plan.of_type("aws:lb/targetGroup:TargetGroup")}
    alarms = alarms_of(plan)
    assert set(groups) == {1883, 8083}
    for port in groups:
        healthy, unhealthy = alarms[f"nlb-{port}-healthy-below-quorum"], alarms[f"nlb-{port}-unhealthy"]
        for a in (healthy, unhealthy):
            assert a["namespace"] == "AWS/NetworkELB"
            assert a["dimensions"]["TargetGroup"].startswith("targetgroup/") and a["dimensions"]["LoadBalancer"].startswith("net/")
        assert healthy["comparisonOperator"] == "LessThanThreshold" and healthy["threshold"] == 3, "a majority of 5"
        assert unhealthy["threshold"] == 1 and unhealthy["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    # The dimensions are the provider's ARN suffixes of this stack's own resources.
    tg_ids = {tg.urn for tg in groups.values()}
    for port in groups:
        alarm = next(r for r in plan.of_type(ALARM) if r.inputs["name"].endswith(f"nlb-{port}-healthy-below-quorum"))
        assert nlb.urn in alarm.dependencies and tg_ids & set(alarm.dependencies)


def test_classic_elb_alarms_use_the_elb_name():
    plan = plan_of("staging")
    elb = plan.of_type("aws:elb/loadBalancer:LoadBalancer")[0]
    alarms = alarms_of(plan)
    healthy = alarms["elb-healthy-below-quorum"]
    assert healthy["namespace"] == "AWS/ELB" and set(healthy["dimensions"]) == {"LoadBalancerName"}
    assert healthy["threshold"] == ro.quorum(len(node_specs(cfg_of("staging")))) == 2, "a majority of the 3 nodes"
    alarm = next(r for r in plan.of_type(ALARM) if r.inputs["name"].endswith("elb-healthy-below-quorum"))
    assert elb.urn in alarm.dependencies


def test_route53_health_checks_of_proxy_hosts_alarm_from_us_east_1():
    plan = plan_of("edge")
    checks = {c.inputs["tags"]["Name"]: c.id for c in plan.of_type("aws:route53/healthCheck:HealthCheck")}
    assert sorted(checks) == ["nginx-1", "nginx-2"]
    alarms = alarms_of(plan)
    us_topic = next(t for t in plan.of_type(TOPIC) if t.inputs.get("region") == "us-east-1")
    for host, cid in checks.items():
        a = alarms[f"{host}-dns-health"]
        assert a["region"] == "us-east-1" and a["namespace"] == "AWS/Route53" and a["dimensions"] == {"HealthCheckId": cid}
        assert a["alarmActions"] == [f"arn:aws:sns:us-east-1:123456789012:{us_topic.name}"]
    # Without a domain there are no health checks and no second topic.
    assert not plan_of("vernemq").of_type("aws:route53/healthCheck:HealthCheck")
    assert len(plan_of("vernemq").of_type(TOPIC)) == 1


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_connection_thresholds_come_from_the_rendered_limits(stack):
    cfg, alarms = cfg_of(stack), alarms_of(plan_of(stack))
    limit = 1024000 if cfg.is_emqx else 1000000  # emqx.conf.j2 listeners max_connections; vernemq env
    assert ro.broker_max_connections(cfg) == limit
    pct = cfg.observability.connections_alarm_percent
    for node in node_specs(cfg):
        assert alarms[f"{node.host}-connections"]["threshold"] == limit * pct // 100
    if cfg.load_balancer.kind in ("nginx", "haproxy"):
        cap = alarms["proxy-capacity"]
        assert cap["threshold"] == maxconn_for(cfg.load_balancer.proxy_instance_type) * cfg.load_balancer.proxies * pct // 100
        queries = {q["id"]: q for q in cap["metricQueries"]}
        assert queries["total"]["expression"] == "SUM([" + ",".join(f"m{i}" for i in range(len(node_specs(cfg)))) + "])"
        assert [q["returnData"] for q in cap["metricQueries"]].count(True) == 1
    else:
        assert "proxy-capacity" not in alarms


def test_connection_threshold_follows_the_configured_percentage(program):
    plan = program("dev", observability={"connections_alarm_percent": 50, "disk_alarm_percent": 70})
    alarms = alarms_of(plan)
    assert alarms["emqx-1-connections"]["threshold"] == 512000
    assert alarms["emqx-1-data-disk"]["threshold"] == 70


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_cluster_members_stopped_alarm_reads_the_brokers_own_metric(stack):
    cfg, alarms = cfg_of(stack), alarms_of(plan_of(stack))
    if cfg.is_emqx:
        a = alarms["cluster-members-stopped"]
        assert a["metricName"] == "emqx_cluster_nodes_stopped" and a["statistic"] == "Maximum" and a["threshold"] == 1
    else:
        a = alarms["cluster-netsplit"]
        assert a["metricName"] == "netsplit_detected" and a["statistic"] == "Sum"
    assert a["namespace"] == ro.NAMESPACE and a["dimensions"] == {"Stack": stack}


def test_switching_alarms_and_dashboard_off_removes_them(program):
    plan = program("dev", observability={"alarms": False, "dashboard": False})
    assert not plan.of_type(ALARM) and not plan.of_type("aws:cloudwatch/dashboard:Dashboard")
    assert "dashboard_url" not in plan.outputs and len(plan.of_type(TOPIC)) == 1


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_instance_roles_write_only_to_their_own_log_groups_and_the_agent_namespace(stack):
    plan, cfg = plan_of(stack), cfg_of(stack)
    region, groups = cfg.region, ro.log_groups(cfg)
    policies = {r.name: r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-telemetry")}
    expected = {"brokers-telemetry"} | ({f"lb-{cfg.load_balancer.kind}-telemetry"} if "proxies" in groups else set())
    assert set(policies) == expected
    for name, r in policies.items():
        role = "brokers" if name == "brokers-telemetry" else "proxies"
        own = [groups[role]] + ([groups["metrics"]] if role == "brokers" else [])
        doc = json.loads(r.inputs["policy"])
        allowed = set()
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert not any(a.endswith("*") for a in actions), st
            if any(a.startswith("logs:") for a in actions):
                assert set(actions) == {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}
                allowed |= set(st["Resource"])
            else:
                assert actions == ["cloudwatch:PutMetricData"]
                assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "CWAgent"}}
        arn = f"arn:aws:logs:{region}:123456789012:log-group:"
        assert allowed == {f"{arn}{g}" for g in own} | {f"{arn}{g}:log-stream:*" for g in own}
        # Attached to that role's instance role (the one its hosts' instance profile carries).
        profile = plan.named(name.replace("-telemetry", "-profile"))
        assert r.inputs["role"] == profile.inputs["role"]
        others = [p for p in plan.of_type("aws:iam/instanceProfile:InstanceProfile") if p.name != profile.name]
        assert all(p.inputs["role"] != r.inputs["role"] for p in others)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_metrics_ports_stay_closed_the_agent_scrapes_loopback(stack):
    plan, cfg = plan_of(stack), cfg_of(stack)
    m = ro.engine_metrics(cfg)
    for node in node_specs(cfg):
        doc = yaml.safe_load(plan.files[(node.host, "prometheus.yaml")])
        (job,) = doc["scrape_configs"]
        assert job["metrics_path"] == m.path
        assert [t["targets"] for t in job["static_configs"]] == [[f"127.0.0.1:{m.port}"]]
        assert job["static_configs"][0]["labels"] == {"Stack": stack, "Host": node.host}
    if not cfg.is_emqx:
        from tests.conftest import rules_into

        assert not [r for r in rules_into(plan, "broker") if r["fromPort"] <= 8888 <= r["toPort"]], "8888 stays closed"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_hosts_install_and_start_the_agent_before_their_service(stack):
    plan, cfg = plan_of(stack), cfg_of(stack)
    hosts = [n.host for n in node_specs(cfg)]
    if cfg.load_balancer.kind in ("nginx", "haproxy"):
        hosts += [f"{cfg.load_balancer.kind}-{i + 1}" for i in range(cfg.load_balancer.proxies)]
    for host in hosts:
        doc = yaml.safe_load(plan.files[(host, "cloud-init.yaml")])
        files = {f["path"]: f["content"] for f in doc["write_files"]}
        assert json.loads(files[ro.AGENT_CONFIG]) == json.loads(plan.files[(host, "amazon-cloudwatch-agent.json")])
        assert "amazon-cloudwatch-agent" in doc["packages"]
        cmds = [" ".join(c) for c in doc["runcmd"]]
        start = next(i for i, c in enumerate(cmds) if "amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s" in c)
        service = next(
            i
            for i, c in enumerate(cmds)
            if c.startswith(("/usr/local/sbin/mqtt-broker-bootstrap", "/usr/local/sbin/mqtt-proxy-start"))  # brokers: tests/test_day2.py
        )
        assert start < service
        if host.startswith("haproxy"):
            assert "rsyslog" in doc["packages"] and "local0.* /var/log/haproxy.log" in files["/etc/rsyslog.d/49-mqtt-haproxy.conf"]


def test_proxy_log_files_the_agent_ships_are_the_ones_the_proxies_write():
    for stack in ("edge", "vernemq"):
        plan, cfg = plan_of(stack), cfg_of(stack)
        kind = cfg.load_balancer.kind
        host = f"{kind}-1"
        doc = json.loads(plan.files[(host, "amazon-cloudwatch-agent.json")])
        paths = [e["file_path"] for e in doc["logs"]["logs_collected"]["files"]["collect_list"]]
        conf = plan.files[(host, "nginx.conf" if kind == "nginx" else "haproxy.cfg")]
        if kind == "nginx":
            error, access = paths
            assert f"error_log {error} " in conf and f"access_log {access} " in conf
        else:
            assert paths == [ro.HAPROXY_LOG] and "log /dev/log local0" in conf
            assert ro.rsyslog_haproxy_conf().splitlines()[1] == f"local0.* {ro.HAPROXY_LOG}"


# --- real tools ---------------------------------------------------------------------------------
def _agent_configs() -> list[tuple[str, str, dict]]:
    out = []
    for stack in AWS_STACKS:
        for (host, name), text in plan_of(stack).files.items():
            if name == "amazon-cloudwatch-agent.json":
                out.append((stack, host, json.loads(text)))
    return out


def test_every_agent_config_validates_against_the_agents_own_schema():
    configs = _agent_configs()
    assert len(configs) >= 20
    for stack, host, doc in configs:
        assert schema_errors(doc, SCHEMA) == [], (stack, host)


def test_the_schema_check_catches_what_the_agent_would_refuse():
    _, _, doc = _agent_configs()[0]
    bad = json.loads(json.dumps(doc))
    bad["logs"]["metrics_collected"]["prometheus"]["scrape_interval"] = "60s"  # not a key the agent knows
    bad["metrics"]["metrics_collected"]["mem"] = {}  # measurement is required
    bad["agent"]["metrics_collection_interval"] = 0  # below the minimum
    problems = schema_errors(bad, SCHEMA)
    assert any("scrape_interval" in p for p in problems)
    assert any("measurement" in p for p in problems)
    assert any("metrics_collection_interval" in p for p in problems)


def test_agent_ships_broker_and_proxy_logs_to_their_groups():
    for stack, host, doc in _agent_configs():
        cfg = cfg_of(stack)
        (entry, *rest) = doc["logs"]["logs_collected"]["files"]["collect_list"]
        if "metrics_collected" in doc["logs"]:  # a broker host
            assert entry == {"file_path": ro.DOCKER_LOGS, "log_group_name": f"/mqtt-cluster/{stack}/brokers", "log_stream_name": host}
            prom = doc["logs"]["metrics_collected"]["prometheus"]
            assert prom["log_group_name"] == f"/mqtt-cluster/{stack}/metrics"
            assert prom["emf_processor"]["metric_namespace"] == ro.NAMESPACE
            selectors = prom["emf_processor"]["metric_declaration"][0]["metric_selectors"]
            assert sorted(s.strip("^$") for s in selectors) == ro.exported_names(cfg)
            assert doc["metrics"]["metrics_collected"]["disk"]["resources"] == [ro.DATA_PATH]
        else:
            assert {e["log_group_name"] for e in [entry, *rest]} == {f"/mqtt-cluster/{stack}/proxies"}
        assert doc["agent"]["region"] == cfg.region


def _prometheus_configs(tmp_path: Path) -> list[Path]:
    paths = []
    for stack in [*AWS_STACKS, "local"]:
        for (host, name), text in plan_of(stack).files.items():
            if name in ("prometheus.yaml", "prometheus.yml"):
                p = tmp_path / stack / host / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                paths.append(p)
    return paths


def test_promtool_accepts_every_rendered_prometheus_config(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make sysdeps installs the Debian package prometheus"
    paths = _prometheus_configs(tmp_path)
    assert len(paths) >= len(AWS_STACKS) * 3 + 1
    for p in paths:
        proc = subprocess.run([promtool, "check", "config", str(p)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (p, proc.stdout, proc.stderr)
    # And it refuses a broken one, so the check can fail.
    broken = tmp_path / "broken.yml"
    broken.write_text(paths[0].read_text().replace("scrape_interval: 60s", "scrape_interval: sixty"))
    assert subprocess.run([promtool, "check", "config", str(broken)], capture_output=True, timeout=60).returncode != 0


# --- the dashboard ------------------------------------------------------------------------------
def _dashboard(plan) -> dict:
    (board,) = plan.of_type("aws:cloudwatch/dashboard:Dashboard")
    assert board.inputs["dashboardName"] == f"mqtt-cluster-{plan.stack}"
    return json.loads(board.inputs["dashboardBody"])


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_dashboard_parses_and_shows_what_an_operator_needs(stack):
    plan, cfg = plan_of(stack), cfg_of(stack)
    body = _dashboard(plan)
    titles = [w["properties"]["title"] for w in body["widgets"]]
    for needed in ("Connections", "Messages", "Cluster members", "Load balancer", "CPU", "Memory", "Data volume"):
        assert any(t.startswith(needed) for t in titles), (needed, titles)
    metrics = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    broker_metrics = {m[1] for m in metrics if m[0] == ro.NAMESPACE}
    assert broker_metrics <= set(ro.exported_names(cfg))
    hosts = hosts_of(plan)
    cpu = next(w for w in body["widgets"] if w["properties"]["title"].startswith("CPU"))
    assert sorted(m[3] for m in cpu["properties"]["metrics"]) == sorted(hosts.values()), "one line per host"
    m = ro.engine_metrics(cfg)
    messages = next(w for w in body["widgets"] if w["properties"]["title"].startswith("Messages"))
    assert [x[1] for x in messages["properties"]["metrics"]] == [m.received, m.sent, m.dropped]
    assert plan.outputs["dashboard_url"] == ro.dashboard_url(cfg.region, f"mqtt-cluster-{stack}")


def _upstream(git: Path, tag: str, path: str) -> str:
    proc = subprocess.run(["git", f"--git-dir={git}", "show", f"{tag}:{path}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(not (EMQX_GIT.exists() and VERNEMQ_GIT.exists()), reason="upstream mirrors not on this machine")
def test_every_metric_queried_is_exported_by_the_broker_upstream():
    emqx = _upstream(EMQX_GIT, "v5.8.6", "apps/emqx_prometheus/src/emqx_prometheus.erl")
    vmq = _upstream(VERNEMQ_GIT, "2.1.1", "apps/vmq_server/src/vmq_metrics.erl")
    for engine, source in (("emqx", emqx), ("vernemq", vmq)):
        cfg = parse({"brokers": {"engine": engine, "accept_eula": engine == "vernemq"}}, stack="t", source="x", region="eu-central-1")
        for name in ro.exported_names(cfg):
            assert f"{name}," in source or f"{name} " in source, (engine, name)
    api = _upstream(EMQX_GIT, "v5.8.6", "apps/emqx_prometheus/src/emqx_prometheus_api.erl")
    assert '"/prometheus/stats"' in api and "enable_basic_auth], false)" in api


def test_the_metric_table_names_only_documented_metrics():
    # The names as cited in components/renderers/observability.py (EMQX v5.8.6, VerneMQ 2.1.1).
    assert ro.METRICS["emqx"].path == "/api/v5/prometheus/stats" and ro.METRICS["emqx"].port == 18083
    assert ro.METRICS["vernemq"].path == "/metrics" and ro.METRICS["vernemq"].port == 8888
    emqx = {"emqx_live_connections_count", "emqx_messages_received", "emqx_messages_sent", "emqx_messages_dropped"}
    assert emqx | {"emqx_cluster_nodes_stopped", "emqx_cluster_nodes_running"} == set(ro.exported_names(cfg_of("dev")))
    vmq = {"total_active_connections", "mqtt_publish_received", "mqtt_publish_sent", "queue_message_drop", "netsplit_detected"}
    assert vmq == set(ro.exported_names(cfg_of("vernemq")))


# --- the local stack: Prometheus and Grafana ----------------------------------------------------
def _local(plan, suffix):
    return next(r for r in plan.of_type(CONTAINER) if r.name == f"local-{suffix}")


def _uploads(container) -> dict[str, str]:
    return {u["file"]: u["content"] for u in container.inputs["uploads"]}


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_local_prometheus_scrapes_every_broker_container(program, engine):
    plan = plan_of("local") if engine == "emqx" else program("local", brokers={"engine": "vernemq", "accept_eula": True, "count": 3})
    brokers = [r for r in plan.of_type(CONTAINER) if r.name.startswith(f"local-{engine}-")]
    prom = _local(plan, "prometheus")
    doc = yaml.safe_load(_uploads(prom)["/etc/prometheus/prometheus.yml"])
    (job,) = doc["scrape_configs"]
    m = ro.METRICS[engine]
    assert job["metrics_path"] == m.path
    targets = sorted(t for sc in job["static_configs"] for t in sc["targets"])
    assert targets == sorted(f"{b.inputs['hostname']}:{m.port}" for b in brokers)
    for b in brokers:
        assert b.inputs["hostname"] in b.inputs["networksAdvanced"][0]["aliases"], "the target name resolves on the network"
    assert prom.inputs["networksAdvanced"][0]["name"] == brokers[0].inputs["networksAdvanced"][0]["name"]
    assert {b.urn for b in brokers} <= set(prom.dependencies), "Prometheus starts after the brokers"


def test_grafana_is_provisioned_with_the_datasource_its_dashboard_uses():
    plan = plan_of("local")
    grafana = _local(plan, "grafana")
    files = _uploads(grafana)
    ds = yaml.safe_load(files["/etc/grafana/provisioning/datasources/mqtt-cluster.yaml"])
    provider = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/mqtt-cluster.yaml"])
    board = json.loads(files[f"{ro.GRAFANA_DASHBOARDS_DIR}/mqtt-cluster.json"])
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in _local(plan, "prometheus").inputs["networksAdvanced"][0]["aliases"]
    assert provider["providers"][0]["options"]["path"] == ro.GRAFANA_DASHBOARDS_DIR
    uids = {p["datasource"]["uid"] for p in board["panels"]} | {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
    assert {p["title"] for p in board["panels"]} == {"Connections", "Messages per second", "Nodes up"}


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_grafana_queries_name_only_metrics_the_broker_exports(engine):
    import re

    cfg = parse({"role": "local", "brokers": {"engine": engine, "accept_eula": engine == "vernemq"}}, stack="local", source="x")
    exprs = [e for q in ro.grafana_queries(cfg).values() for e in q]
    names = {n for e in exprs for n in re.findall(r"([a-z_][a-z0-9_]*)\{", e)}
    assert names - {"up"} <= set(ro.exported_names(cfg)) and names - {"up"}
    assert any(ro.engine_metrics(cfg).connections in e for e in exprs)


def test_grafana_password_is_generated_secret_and_published_only_on_loopback():
    plan = plan_of("local")
    grafana, prom = _local(plan, "grafana"), _local(plan, "prometheus")
    assert "[secret]" in grafana.inputs["envs"]
    assert "GF_AUTH_ANONYMOUS_ENABLED=false" in grafana.inputs["envs"] and "GF_SECURITY_ADMIN_USER=admin" in grafana.inputs["envs"]
    assert not any(e.startswith("GF_SECURITY_ADMIN_PASSWORD=") for e in grafana.inputs["envs"])
    assert [(p["ip"], p["internal"]) for p in grafana.inputs["ports"]] == [("127.0.0.1", 3000)]
    assert [(p["ip"], p["internal"]) for p in prom.inputs["ports"]] == [("127.0.0.1", 9090)]
    out = plan.outputs
    assert out["grafana_url"] == "http://localhost:3000" and out["grafana_password"] == "[secret]" and out["grafana_user"] == "admin"
    assert out["prometheus_url"] == "http://localhost:9090"
    images = {r.inputs["name"] for r in plan.of_type("docker:index/remoteImage:RemoteImage")}
    assert {"prom/prometheus:v2.53.3", "grafana/grafana:11.3.0"} <= images


def test_local_monitoring_follows_bind_and_ports(program):
    plan = program("local", local={"bind": "127.0.0.5"}, observability={"grafana_port": 3300, "prometheus_port": 9300})
    assert [(p["ip"], p["external"]) for p in _local(plan, "grafana").inputs["ports"]] == [("127.0.0.5", 3300)]
    assert plan.outputs["grafana_url"] == "http://127.0.0.5:3300"
    plan = program("local", observability={"dashboard": False})
    assert not [r for r in plan.of_type(CONTAINER) if r.name in ("local-grafana", "local-prometheus")]
    assert "grafana_url" not in plan.outputs


def test_makefile_installs_promtool_and_up_prints_the_grafana_url():
    text = (ROOT / "Makefile").read_text()
    packages = next(line for line in text.splitlines() if line.startswith("APT_PACKAGES"))
    assert " prometheus" in packages
    assert "stack output grafana_url" in text and "NAME=grafana_password SHOW_SECRETS=1" in text
