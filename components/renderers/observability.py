"""Observability, rendered: CloudWatch agent config, Prometheus scrape configs, Grafana provisioning,
the CloudWatch dashboard body and the alarm table. Pure: no Pulumi imports (tests run these directly).

Metric names are the ones the brokers export, taken from the upstream sources:

- EMQX: ``GET /api/v5/prometheus/stats`` on the dashboard listener (18083), no authentication unless
  ``prometheus.enable_basic_auth`` is set (default false), metrics of the local node by default.
  # emqx/emqx v5.8.6 apps/emqx_prometheus/src/emqx_prometheus_api.erl:71 ("/prometheus/stats")
  # emqx/emqx v5.8.6 apps/emqx_prometheus/src/emqx_prometheus_api.erl:173-177 (security() -> [] unless enable_basic_auth)
  # emqx/emqx v5.8.6 apps/emqx_prometheus/src/emqx_prometheus_schema.erl:47-52 (enable_basic_auth, default false)
  # emqx/emqx v5.8.6 apps/emqx_prometheus/src/emqx_prometheus_api.erl:191 (mode `node` is the default)
- VerneMQ: ``GET /metrics`` on the HTTP listener (8888), every line labelled ``node``.
  # vernemq/vernemq 2.1.1 apps/vmq_server/src/vmq_metrics_http.erl:146 (labels([{<<"node">>, Node} | Labels]))
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from components import config as c
from components.config import StackConfig
from components.renderers import broker as br
from components.renderers.nodes import NodeSpec, node_specs
from components.renderers.proxy import ProxySettings

NAMESPACE = "MQTTCluster"
"""CloudWatch namespace of the broker metrics (embedded metric format, written through the logs)."""
HOST_NAMESPACE = "CWAgent"
"""The agent's default namespace for host metrics (memory, disk)."""
AGENT_DIR = "/opt/aws/amazon-cloudwatch-agent/etc"
AGENT_CONFIG = f"{AGENT_DIR}/amazon-cloudwatch-agent.json"
AGENT_PROMETHEUS = f"{AGENT_DIR}/prometheus.yaml"
AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
AGENT_PACKAGE = "amazon-cloudwatch-agent"
DATA_PATH = "/var/lib/mqtt-broker"
"""Mount point of the broker's data volume (broker-start.sh.j2, formatted xfs)."""
DATA_FSTYPE = "xfs"
DOCKER_LOGS = "/var/lib/docker/containers/*/*-json.log"
"""Docker's json-file logs; the agent ships them, so a broker container never waits on CloudWatch."""
HAPROXY_LOG = "/var/log/haproxy.log"
SCRAPE_INTERVAL = 60
PERIOD = 60
JOB = "mqtt-broker"


@dataclass(frozen=True)
class EngineMetrics:
    port: int
    path: str
    connections: str
    received: str
    sent: str
    dropped: str
    members: str
    """The metric the cluster-members alarm watches."""
    members_statistic: str
    running: str | None = None


METRICS = {
    # emqx/emqx v5.8.6 apps/emqx_prometheus/src/emqx_prometheus.erl:579 (emqx_live_connections_count),
    # :822-823 (emqx_messages_received / _sent), :831 (emqx_messages_dropped), :675-676 (emqx_cluster_nodes_running / _stopped)
    "emqx": EngineMetrics(
        port=c.DASHBOARD_PORT,
        path="/api/v5/prometheus/stats",
        connections="emqx_live_connections_count",
        received="emqx_messages_received",
        sent="emqx_messages_sent",
        dropped="emqx_messages_dropped",
        members="emqx_cluster_nodes_stopped",
        members_statistic="Maximum",
        running="emqx_cluster_nodes_running",
    ),
    # vernemq/vernemq 2.1.1 apps/vmq_server/src/vmq_metrics.erl:1721 (total_active_connections), :805 (mqtt_publish_received),
    # :944 (mqtt_publish_sent), :1197 (queue_message_drop), :1664 (netsplit_detected). VerneMQ has no gauge of stopped
    # members; a detected netsplit is how a node sees a member go.
    "vernemq": EngineMetrics(
        port=c.VERNEMQ_HTTP_PORT,
        path="/metrics",
        connections="total_active_connections",
        received="mqtt_publish_received",
        sent="mqtt_publish_sent",
        dropped="queue_message_drop",
        members="netsplit_detected",
        members_statistic="Sum",
    ),
}


def engine_metrics(cfg: StackConfig) -> EngineMetrics:
    return METRICS[cfg.brokers.engine]


def exported_names(cfg: StackConfig) -> list[str]:
    m = engine_metrics(cfg)
    return sorted({m.connections, m.received, m.sent, m.dropped, m.members, *([m.running] if m.running else [])})


# --- names --------------------------------------------------------------------------------------
def log_groups(cfg: StackConfig) -> dict[str, str]:
    """One log group per stack and role; ``metrics`` carries the agent's embedded-metric events."""
    base = f"/mqtt-cluster/{cfg.stack}"
    groups = {"brokers": f"{base}/brokers", "metrics": f"{base}/metrics"}
    if cfg.load_balancer.kind in ("nginx", "haproxy"):
        groups["proxies"] = f"{base}/proxies"
    return groups


def dashboard_name(cfg: StackConfig) -> str:
    return f"mqtt-cluster-{cfg.stack}"


def dashboard_url(region: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards/dashboard/{name}"


# --- thresholds from the stack's own numbers ----------------------------------------------------
def broker_max_connections(cfg: StackConfig) -> int:
    """The smallest listener limit the brokers are rendered with (EMQX max_connections, VerneMQ
    listener.max_connections): read from the rendered configuration, so the alarm follows it."""
    nodes = node_specs(cfg)
    if cfg.is_emqx:
        text = br.emqx_hocon(cfg, nodes[0], [n.node_name for n in nodes if n.role == "core"])
        limits = [int(v) for v in re.findall(r"^\s*max_connections\s*=\s*(\d+)", text, re.M)]
    else:
        env = br.vernemq_env(cfg, nodes[0], nodes[0])
        limits = [int(v) for k, v in env.items() if k.endswith("MAX_CONNECTIONS")]
    if not limits:
        raise ValueError("the rendered broker configuration sets no connection limit")
    return min(limits)


def quorum(targets: int) -> int:
    """A majority of the load balancer's targets."""
    return targets // 2 + 1


# EC2 recovery (the `arn:aws:automate:REGION:ec2:recover` alarm action) needs EBS-only storage and
# a Nitro/Xen host that supports it; families with local instance storage ("d") and bare metal do not.
RECOVERABLE_FAMILIES = frozenset(
    "a1 c4 c5 c5a c5n c6a c6g c6gn c6i c6in c7a c7g c7gn c7i m4 m5 m5a m5n m5zn m6a m6g m6i m6in m7a m7g m7i "
    "r4 r5 r5a r5b r5n r6a r6g r6i r6in r7a r7g r7i t2 t3 t3a t4g x1 x1e".split()
)


def broker_instance_type(cfg: StackConfig, node: NodeSpec) -> str:
    b = cfg.brokers
    return b.instance_type if node.role == "core" else (b.replicant_instance_type or b.instance_type)


def supports_recovery(instance_type: str) -> bool:
    family, _, size = instance_type.partition(".")
    return family in RECOVERABLE_FAMILIES and "metal" not in size


# --- Prometheus configuration (CloudWatch agent on AWS, Prometheus container locally) -----------
@dataclass(frozen=True)
class Target:
    address: str
    labels: dict[str, str]


def prometheus_config(cfg: StackConfig, targets: list[Target], interval: int = SCRAPE_INTERVAL) -> str:
    m = engine_metrics(cfg)
    doc = {
        "global": {"scrape_interval": f"{interval}s", "scrape_timeout": "10s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": m.path,
                "scheme": "http",
                "static_configs": [{"targets": [t.address], "labels": dict(t.labels)} for t in targets],
            }
        ],
    }
    return "# mqtt-cluster: broker metrics, rendered; do not edit on the host.\n" + yaml.safe_dump(doc, sort_keys=False)


def broker_prometheus_config(cfg: StackConfig, node: NodeSpec) -> str:
    """What the agent on a broker host scrapes: its own broker on loopback (host networking), so
    no metrics port is opened in any security group."""
    m = engine_metrics(cfg)
    return prometheus_config(cfg, [Target(f"127.0.0.1:{m.port}", {"Stack": cfg.stack, "Host": node.host})])


def local_prometheus_config(cfg: StackConfig, nodes: list[NodeSpec]) -> str:
    """The local Prometheus container scrapes every broker container over the Docker network."""
    m = engine_metrics(cfg)
    return prometheus_config(cfg, [Target(f"{n.fqdn}:{m.port}", {"Stack": cfg.stack, "Host": n.host}) for n in nodes], interval=15)


# --- CloudWatch agent ---------------------------------------------------------------------------
def agent_config(cfg: StackConfig, role: str, host: str) -> dict[str, Any]:
    """The agent's JSON for a broker (role ``brokers``) or proxy (``proxies``) host."""
    obs, groups = cfg.observability, log_groups(cfg)
    doc: dict[str, Any] = {"agent": {"region": cfg.region or "", "metrics_collection_interval": SCRAPE_INTERVAL, "logfile": ""}}
    if obs.metrics:
        disk_paths = [DATA_PATH] if role == "brokers" else ["/"]
        doc["metrics"] = {
            "namespace": HOST_NAMESPACE,
            "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
            "metrics_collected": {
                "mem": {"measurement": ["used_percent"]},
                "disk": {"measurement": ["used_percent"], "resources": disk_paths, "drop_device": True},
            },
        }
    logs: dict[str, Any] = {}
    if obs.logs:
        if role == "brokers":
            files = [{"file_path": DOCKER_LOGS, "log_group_name": groups["brokers"], "log_stream_name": host}]
        else:
            kind = cfg.load_balancer.kind
            aws_proxy = ProxySettings(backends=[])  # the AWS proxy hosts keep the default log paths
            paths = [aws_proxy.error_log, aws_proxy.access_log] if kind == "nginx" else [HAPROXY_LOG]
            files = [
                {"file_path": p, "log_group_name": groups["proxies"], "log_stream_name": f"{host}/{p.rsplit('/', 1)[1]}"} for p in paths
            ]
        logs["logs_collected"] = {"files": {"collect_list": files}}
    if obs.metrics and role == "brokers":
        logs["metrics_collected"] = {
            "prometheus": {
                "cluster_name": cfg.stack,
                "log_group_name": groups["metrics"],
                "prometheus_config_path": AGENT_PROMETHEUS,
                "emf_processor": {
                    "metric_declaration_dedup": True,
                    "metric_namespace": NAMESPACE,
                    "metric_declaration": [
                        {
                            "source_labels": ["job"],
                            "label_matcher": f"^{JOB}$",
                            "dimensions": [["Stack", "Host"], ["Stack"]],
                            "metric_selectors": [f"^{name}$" for name in exported_names(cfg)],
                        }
                    ],
                },
            }
        }
    if logs:
        doc["logs"] = logs
    return doc


def rsyslog_haproxy_conf() -> str:
    """haproxy logs to /dev/log (facility local0); rsyslog writes them to a file the agent ships."""
    return f"# mqtt-cluster: haproxy to a file for the CloudWatch agent\nlocal0.* {HAPROXY_LOG}\n& stop\n"


@dataclass(frozen=True)
class HostTelemetry:
    """What a host's user-data gains: files, packages, commands run before the service starts."""

    files: dict[str, str] = field(default_factory=dict)
    packages: list[str] = field(default_factory=list)
    runcmd: list[list[str]] = field(default_factory=list)


def host_telemetry(cfg: StackConfig, role: str, node_or_host: NodeSpec | str) -> HostTelemetry:
    obs = cfg.observability
    if not (obs.logs or obs.metrics):
        return HostTelemetry()
    host = node_or_host.host if isinstance(node_or_host, NodeSpec) else node_or_host
    files = {AGENT_CONFIG: json.dumps(agent_config(cfg, role, host), indent=2) + "\n"}
    packages = [AGENT_PACKAGE]
    runcmd: list[list[str]] = []
    if role == "brokers" and obs.metrics:
        assert isinstance(node_or_host, NodeSpec)
        files[AGENT_PROMETHEUS] = broker_prometheus_config(cfg, node_or_host)
    if role == "proxies" and cfg.load_balancer.kind == "haproxy" and obs.logs:
        files["/etc/rsyslog.d/49-mqtt-haproxy.conf"] = rsyslog_haproxy_conf()
        packages.append("rsyslog")
        runcmd.append(["systemctl", "enable", "--now", "rsyslog"])
    runcmd.append([AGENT_CTL, "-a", "fetch-config", "-m", "ec2", "-s", "-c", f"file:{AGENT_CONFIG}"])
    return HostTelemetry(files=files, packages=packages, runcmd=runcmd)


def telemetry_policy(cfg: StackConfig, role: str, account_id: str) -> dict[str, Any]:
    """The instance role may write to its own log groups and to the agent's namespace, nothing else."""
    region = cfg.region or ""
    groups = log_groups(cfg)
    own = [groups[role]] + ([groups["metrics"]] if role == "brokers" and cfg.observability.metrics else [])
    arns = []
    for g in own:
        arn = f"arn:aws:logs:{region}:{account_id}:log-group:{g}"
        arns += [arn, f"{arn}:log-stream:*"]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnLogGroups",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": arns,
        }
    ]
    if cfg.observability.metrics:
        statements.append(
            {
                "Sid": "AgentNamespace",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",  # PutMetricData has no resource; the namespace condition scopes it
                "Condition": {"StringEquals": {"cloudwatch:namespace": HOST_NAMESPACE}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


# --- alarms -------------------------------------------------------------------------------------
@dataclass
class Alarm:
    """One CloudWatch alarm, provider-neutral. Dimension values may be deploy-time values."""

    key: str
    """Short unique name within the stack (the resource name)."""
    description: str
    comparison: str
    threshold: float
    namespace: str | None = None
    metric: str | None = None
    dimensions: dict[str, Any] = field(default_factory=dict)
    statistic: str | None = None
    period: int = PERIOD
    evaluation_periods: int = 2
    datapoints_to_alarm: int | None = None
    treat_missing_data: str = "missing"
    queries: list[dict[str, Any]] | None = None
    """Metric math instead of one metric: [{id, expression|metric, return_data}]."""
    recover: bool = False
    """Also recover the instance (EC2 automate action)."""
    region: str | None = None
    """Set where the metric lives elsewhere (Route53 health checks: us-east-1)."""


@dataclass
class Watched:
    """Deploy-time handles of what the alarms and the dashboard watch."""

    brokers: list[tuple[NodeSpec, Any, str]]
    """(node, instance id, instance type)."""
    proxies: list[tuple[str, Any, str]] = field(default_factory=list)
    """(host, instance id, instance type)."""
    nlb: Any = None
    """NLB ARN suffix."""
    target_groups: dict[int, Any] = field(default_factory=dict)
    """Backend port -> target group ARN suffix."""
    elb: Any = None
    """Classic ELB name."""
    health_checks: list[tuple[str, Any]] = field(default_factory=list)
    """(proxy host, Route53 health check id)."""


ROUTE53_METRICS_REGION = "us-east-1"
"""Route53 publishes health-check metrics only in us-east-1; their alarms live there."""


def alarms(cfg: StackConfig, w: Watched) -> list[Alarm]:
    obs, m = cfg.observability, engine_metrics(cfg)
    out: list[Alarm] = []
    targets = len(w.brokers)
    need = quorum(targets)

    # Load balancer: healthy targets below a majority, any unhealthy target.
    for port, tg in sorted(w.target_groups.items()):
        dims = {"LoadBalancer": w.nlb, "TargetGroup": tg}
        out.append(
            Alarm(
                f"nlb-{port}-healthy-below-quorum",
                f"NLB target group {port}: fewer than {need} of {targets} brokers healthy",
                "LessThanThreshold",
                need,
                "AWS/NetworkELB",
                "HealthyHostCount",
                dims,
                "Minimum",
                treat_missing_data="breaching",
            )
        )
        out.append(
            Alarm(
                f"nlb-{port}-unhealthy",
                f"NLB target group {port}: a broker fails its health check",
                "GreaterThanOrEqualToThreshold",
                1,
                "AWS/NetworkELB",
                "UnHealthyHostCount",
                dims,
                "Maximum",
                treat_missing_data="notBreaching",
            )
        )
    if w.elb is not None:
        dims = {"LoadBalancerName": w.elb}
        out.append(
            Alarm(
                "elb-healthy-below-quorum",
                f"ELB: fewer than {need} of {targets} brokers healthy",
                "LessThanThreshold",
                need,
                "AWS/ELB",
                "HealthyHostCount",
                dims,
                "Minimum",
                treat_missing_data="breaching",
            )
        )
        out.append(
            Alarm(
                "elb-unhealthy",
                "ELB: a broker fails its health check",
                "GreaterThanOrEqualToThreshold",
                1,
                "AWS/ELB",
                "UnHealthyHostCount",
                dims,
                "Maximum",
                treat_missing_data="notBreaching",
            )
        )
    for host, check in w.health_checks:
        out.append(
            Alarm(
                f"{host}-dns-health",
                f"{host}: Route53 health check of MQTT over TLS fails (the host leaves the DNS answer)",
                "LessThanThreshold",
                1,
                "AWS/Route53",
                "HealthCheckStatus",
                {"HealthCheckId": check},
                "Minimum",
                treat_missing_data="breaching",
                region=ROUTE53_METRICS_REGION,
            )
        )

    # Every host: status checks (system failures recover the instance where the type allows).
    hosts = [(n.host, iid, itype) for n, iid, itype in w.brokers] + list(w.proxies)
    for host, iid, itype in hosts:
        out.append(
            Alarm(
                f"{host}-system-check",
                f"{host}: EC2 system status check failed"
                + (" (recovering the instance)" if obs.auto_recovery and supports_recovery(itype) else ""),
                "GreaterThanOrEqualToThreshold",
                1,
                "AWS/EC2",
                "StatusCheckFailed_System",
                {"InstanceId": iid},
                "Maximum",
                recover=obs.auto_recovery and supports_recovery(itype),
            )
        )
        out.append(
            Alarm(
                f"{host}-instance-check",
                f"{host}: EC2 instance status check failed",
                "GreaterThanOrEqualToThreshold",
                1,
                "AWS/EC2",
                "StatusCheckFailed_Instance",
                {"InstanceId": iid},
                "Maximum",
            )
        )

    if not obs.metrics:
        return out
    # Broker data volumes.
    for node, iid, _ in w.brokers:
        out.append(
            Alarm(
                f"{node.host}-data-disk",
                f"{node.host}: data volume {DATA_PATH} over {obs.disk_alarm_percent}% full",
                "GreaterThanOrEqualToThreshold",
                obs.disk_alarm_percent,
                HOST_NAMESPACE,
                "disk_used_percent",
                {"InstanceId": iid, "path": DATA_PATH, "fstype": DATA_FSTYPE},
                "Maximum",
                period=300,
            )
        )
    # Connections approaching the configured maximum: each broker's listener limit ...
    limit = broker_max_connections(cfg)
    per_broker = limit * obs.connections_alarm_percent // 100
    for node, _, _ in w.brokers:
        out.append(
            Alarm(
                f"{node.host}-connections",
                f"{node.host}: {per_broker} connections ({obs.connections_alarm_percent}% of the listener limit {limit})",
                "GreaterThanOrEqualToThreshold",
                per_broker,
                NAMESPACE,
                m.connections,
                {"Stack": cfg.stack, "Host": node.host},
                "Maximum",
            )
        )
    # ... and, behind self-hosted proxies, what the proxies together accept.
    if w.proxies:
        from components.renderers.proxy import maxconn_for  # pure

        capacity = maxconn_for(cfg.load_balancer.proxy_instance_type) * len(w.proxies)
        at = capacity * obs.connections_alarm_percent // 100
        queries = [
            {
                "id": f"m{i}",
                "metric": {
                    "namespace": NAMESPACE,
                    "metric_name": m.connections,
                    "dimensions": {"Stack": cfg.stack, "Host": node.host},
                    "period": PERIOD,
                    "stat": "Maximum",
                },
                "return_data": False,
            }
            for i, (node, _, _) in enumerate(w.brokers)
        ]
        queries.append(
            {"id": "total", "expression": "SUM([" + ",".join(q["id"] for q in queries) + "])", "label": "connections", "return_data": True}
        )
        out.append(
            Alarm(
                "proxy-capacity",
                f"{at} connections through {len(w.proxies)} proxies ({obs.connections_alarm_percent}% of {capacity} they accept)",
                "GreaterThanOrEqualToThreshold",
                at,
                queries=queries,
            )
        )
    # Cluster members stopped, as the brokers themselves see it.
    if cfg.is_emqx:
        out.append(
            Alarm(
                "cluster-members-stopped",
                "EMQX: a cluster member is stopped (emqx_cluster_nodes_stopped > 0), or no broker reports metrics",
                "GreaterThanOrEqualToThreshold",
                1,
                NAMESPACE,
                m.members,
                {"Stack": cfg.stack},
                m.members_statistic,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                treat_missing_data="breaching",
            )
        )
    else:
        out.append(
            Alarm(
                "cluster-netsplit",
                "VerneMQ: a node lost a cluster member (netsplit_detected)",
                "GreaterThanOrEqualToThreshold",
                1,
                NAMESPACE,
                m.members,
                {"Stack": cfg.stack},
                m.members_statistic,
                period=300,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
            )
        )
    return out


# --- CloudWatch dashboard -----------------------------------------------------------------------
def _widget(title: str, metrics: list[list[Any]], x: int, y: int, stat: str, region: str, period: int = PERIOD) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {"title": title, "view": "timeSeries", "region": region, "stat": stat, "period": period, "metrics": metrics},
    }


def dashboard_body(cfg: StackConfig, w: Watched) -> dict[str, Any]:
    """Connections, messages in/out/dropped, cluster members, LB healthy hosts, CPU/memory/disk per host."""
    region, m, s = cfg.region or "", engine_metrics(cfg), cfg.stack
    widgets = [
        _widget(
            "Connections per broker",
            [[NAMESPACE, m.connections, "Stack", s, "Host", n.host] for n, _, _ in w.brokers],
            0,
            0,
            "Maximum",
            region,
        ),
        _widget(
            "Messages per minute (in / out / dropped)",
            [
                [NAMESPACE, m.received, "Stack", s, {"label": "in"}],
                [NAMESPACE, m.sent, "Stack", s, {"label": "out"}],
                [NAMESPACE, m.dropped, "Stack", s, {"label": "dropped"}],
            ],
            12,
            0,
            "Sum",
            region,
        ),
    ]
    members = [[NAMESPACE, m.members, "Stack", s]] + ([[NAMESPACE, m.running, "Stack", s]] if m.running else [])
    widgets.append(_widget("Cluster members", members, 0, 6, m.members_statistic if not m.running else "Maximum", region))
    lb: list[list[Any]] = []
    for port, tg in sorted(w.target_groups.items()):
        lb.append(["AWS/NetworkELB", "HealthyHostCount", "LoadBalancer", w.nlb, "TargetGroup", tg, {"label": f"healthy {port}"}])
        lb.append(["AWS/NetworkELB", "UnHealthyHostCount", "LoadBalancer", w.nlb, "TargetGroup", tg, {"label": f"unhealthy {port}"}])
    if w.elb is not None:
        lb += [["AWS/ELB", "HealthyHostCount", "LoadBalancerName", w.elb], ["AWS/ELB", "UnHealthyHostCount", "LoadBalancerName", w.elb]]
    for host, check in w.health_checks:
        lb.append(["AWS/Route53", "HealthCheckStatus", "HealthCheckId", check, {"label": host, "region": ROUTE53_METRICS_REGION}])
    if lb:
        widgets.append(_widget("Load balancer: healthy hosts", lb, 12, 6, "Minimum", region))
    elif w.proxies:
        # Proxies without DNS health checks: their hosts' status checks are the front's health.
        checks = [["AWS/EC2", "StatusCheckFailed", "InstanceId", iid, {"label": h}] for h, iid, _ in w.proxies]
        widgets.append(_widget("Load balancer: proxy hosts failing status checks", checks, 12, 6, "Maximum", region))
    hosts = [(n.host, iid) for n, iid, _ in w.brokers] + [(h, iid) for h, iid, _ in w.proxies]
    widgets.append(
        _widget(
            "CPU % per host", [["AWS/EC2", "CPUUtilization", "InstanceId", iid, {"label": h}] for h, iid in hosts], 0, 12, "Average", region
        )
    )
    if cfg.observability.metrics:
        widgets.append(
            _widget(
                "Memory % per host",
                [[HOST_NAMESPACE, "mem_used_percent", "InstanceId", iid, {"label": h}] for h, iid in hosts],
                12,
                12,
                "Average",
                region,
            )
        )
        disks = [
            [HOST_NAMESPACE, "disk_used_percent", "InstanceId", iid, "path", DATA_PATH, "fstype", DATA_FSTYPE, {"label": n.host}]
            for n, iid, _ in w.brokers
        ]
        widgets.append(_widget("Data volume % used per broker", disks, 0, 18, "Maximum", region, period=300))
    return {"widgets": widgets}


# --- Grafana (local stack) ----------------------------------------------------------------------
GRAFANA_DATASOURCE_UID = "mqtt-prometheus"


def grafana_datasources(prometheus_url: str) -> str:
    doc = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "type": "prometheus",
                "uid": GRAFANA_DATASOURCE_UID,
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


GRAFANA_DASHBOARDS_DIR = "/etc/grafana/dashboards"
"""Outside /var/lib/grafana (a volume in the image), so the provisioned file is the one uploaded."""


def grafana_dashboard_provider() -> str:
    doc = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "mqtt-cluster",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "options": {"path": GRAFANA_DASHBOARDS_DIR},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def grafana_queries(cfg: StackConfig) -> dict[str, list[str]]:
    """PromQL per panel; every metric name is one the brokers export (see METRICS)."""
    m = engine_metrics(cfg)
    sel = f'{{job="{JOB}"}}'
    nodes = [f"sum(up{sel})"] + (
        [f"max({m.running}{sel})", f"max({m.members}{sel})"] if m.running else [f"sum(increase({m.members}{sel}[5m]))"]
    )
    return {
        "Connections": [f"sum by (Host) ({m.connections}{sel})"],
        "Messages per second": [f"sum(rate({m.received}{sel}[1m]))", f"sum(rate({m.sent}{sel}[1m]))", f"sum(rate({m.dropped}{sel}[1m]))"],
        "Nodes up": nodes,
    }


def grafana_dashboard(cfg: StackConfig) -> dict[str, Any]:
    panels = []
    for i, (title, exprs) in enumerate(grafana_queries(cfg).items()):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
                "datasource": {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": e, "datasource": {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID}}
                    for j, e in enumerate(exprs)
                ],
            }
        )
    return {
        "uid": f"mqtt-{cfg.stack}",
        "title": f"mqtt-cluster {cfg.stack} ({cfg.brokers.engine})",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "panels": panels,
    }
