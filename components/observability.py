"""Observability: where an operator sees the cluster and who gets paged.

One SNS topic per stack (e-mail subscriptions from ``observability.alert_emails``), one CloudWatch
log group per stack and role with the configured retention, the CloudWatch agent on every broker
and proxy host (logs, broker Prometheus metrics, memory and disk), alarms whose thresholds come from
the stack's own numbers, and a dashboard. The host side enters the other components through
``HostHooks`` (files, packages and commands for the user-data, and the instance role's policy); the
local stack gets Prometheus and Grafana containers through :func:`local_monitoring`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.config import StackConfig
from components.renderers import observability as ro
from components.renderers.nodes import NodeSpec
from components.secrets import generated


@dataclass
class HostHooks:
    """Handed to BrokerCluster / LoadBalancer: what each host of one role gains."""

    cfg: StackConfig
    role: str
    """brokers | proxies"""
    policy: str
    """Instance-role policy (JSON): write to this role's log groups and the agent's namespace only."""

    def extras(self, node_or_host: NodeSpec | str) -> ro.HostTelemetry:
        return ro.host_telemetry(self.cfg, self.role, node_or_host)


@dataclass
class ObservabilityArgs:
    cfg: StackConfig
    account_id: str
    tags: dict[str, str]


class Observability(pulumi.ComponentResource):
    """The topic, the log groups, and (after :meth:`watch`) the alarms and the dashboard."""

    topic: aws.sns.Topic
    dashboard_url: pulumi.Output[str] | None

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:Observability", name, None, opts)
        self._name, self._cfg, self._args = name, args.cfg, args
        self._child = pulumi.ResourceOptions(parent=self)
        cfg, obs, tags = args.cfg, args.cfg.observability, args.tags
        self.topic = self._topic(f"{name}-alerts", None)
        self._topics: dict[str | None, aws.sns.Topic] = {None: self.topic}
        self.log_groups: dict[str, aws.cloudwatch.LogGroup] = {}
        if obs.logs or obs.metrics:
            for role, group in ro.log_groups(cfg).items():
                if role == "metrics" and not obs.metrics:
                    continue
                self.log_groups[role] = aws.cloudwatch.LogGroup(
                    f"{name}-{role}-logs",
                    name=group,
                    retention_in_days=obs.log_retention_days,
                    tags={**tags, "Role": role},
                    opts=self._child,
                )
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        self.dashboard_url = None

    def _topic(self, name: str, region: str | None) -> aws.sns.Topic:
        cfg, tags = self._cfg, self._args.tags
        topic = aws.sns.Topic(
            name,
            display_name=f"mqtt-cluster {cfg.stack} alarms",
            # The AWS-managed SNS key: messages at rest encrypted, CloudWatch may still publish.
            kms_master_key_id="alias/aws/sns",
            region=region,
            tags=tags,
            opts=self._child,
        )
        for i, address in enumerate(cfg.observability.alert_emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{i + 1}", topic=topic.arn, protocol="email", endpoint=address, region=region, opts=self._child
            )
        return topic

    def topic_in(self, region: str | None) -> aws.sns.Topic:
        """Alarm actions must be a topic in the alarm's region: a second topic, same subscribers."""
        if region is None or region == self._cfg.region:
            return self.topic
        if region not in self._topics:
            self._topics[region] = self._topic(f"{self._name}-alerts-{region}", region)
        return self._topics[region]

    def hooks(self, role: str) -> HostHooks | None:
        obs = self._cfg.observability
        if not (obs.logs or obs.metrics) or role not in self.log_groups:
            return None
        policy = ro.telemetry_policy(self._cfg, role, self._args.account_id)
        return HostHooks(cfg=self._cfg, role=role, policy=json.dumps(policy))

    def watch(self, w: ro.Watched) -> None:
        """Alarms and the dashboard over the hosts and load balancer the stack created."""
        cfg, obs, n = self._cfg, self._cfg.observability, self._name
        region = cfg.region or ""
        if obs.alarms:
            for spec in ro.alarms(cfg, w):
                self.alarms.append(self._alarm(spec, region))
        if obs.dashboard:
            name = ro.dashboard_name(cfg)
            body = pulumi.Output.all(
                brokers=[pulumi.Output.from_input(iid) for _, iid, _ in w.brokers],
                proxies=[pulumi.Output.from_input(iid) for _, iid, _ in w.proxies],
                nlb=pulumi.Output.from_input(w.nlb),
                tgs=[pulumi.Output.from_input(v) for _, v in sorted(w.target_groups.items())],
                elb=pulumi.Output.from_input(w.elb),
                checks=[pulumi.Output.from_input(v) for _, v in w.health_checks],
            ).apply(
                lambda v: json.dumps(
                    ro.dashboard_body(
                        cfg,
                        ro.Watched(
                            brokers=[(node, iid, t) for (node, _, t), iid in zip(w.brokers, v["brokers"], strict=True)],
                            proxies=[(h, iid, t) for (h, _, t), iid in zip(w.proxies, v["proxies"], strict=True)],
                            nlb=v["nlb"],
                            target_groups=dict(zip(sorted(w.target_groups), v["tgs"], strict=True)),
                            elb=v["elb"],
                            health_checks=[(h, c) for (h, _), c in zip(w.health_checks, v["checks"], strict=True)],
                        ),
                    ),
                    sort_keys=True,
                )
            )
            board = aws.cloudwatch.Dashboard(f"{n}-dashboard", dashboard_name=name, dashboard_body=body, opts=self._child)
            self.dashboard_url = board.dashboard_name.apply(lambda d: ro.dashboard_url(region, d))
        self.register_outputs(
            {
                "topic_arn": self.topic.arn,
                "log_groups": {k: g.name for k, g in self.log_groups.items()},
                "dashboard_url": self.dashboard_url,
            }
        )

    def _alarm(self, spec: ro.Alarm, region: str) -> aws.cloudwatch.MetricAlarm:
        topic = self.topic_in(spec.region)
        actions: list[Any] = [topic.arn]
        if spec.recover:
            actions.append(f"arn:aws:automate:{region}:ec2:recover")
        queries = None
        if spec.queries:
            queries = [
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id=q["id"],
                    expression=q.get("expression"),
                    label=q.get("label"),
                    return_data=q.get("return_data"),
                    metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(**q["metric"]) if "metric" in q else None,
                )
                for q in spec.queries
            ]
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-{spec.key}",
            name=f"mqtt-cluster-{self._cfg.stack}-{spec.key}",
            alarm_description=spec.description,
            comparison_operator=spec.comparison,
            threshold=spec.threshold,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            treat_missing_data=spec.treat_missing_data,
            namespace=spec.namespace,
            metric_name=spec.metric,
            dimensions=spec.dimensions or None,
            statistic=spec.statistic,
            period=spec.period if spec.metric else None,
            metric_queries=queries,
            alarm_actions=actions,
            ok_actions=[topic.arn],
            region=spec.region,
            tags={**self._args.tags, "Stack": self._cfg.stack},
            opts=self._child,
        )


# --- local stack: Prometheus and Grafana containers ---------------------------------------------
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.3"
GRAFANA_IMAGE = "grafana/grafana:11.3.0"
"""Official images, pinned."""
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
"""The path the prom/prometheus image's default command reads (--config.file)."""
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_USER = "admin"


@dataclass
class LocalMonitoring:
    prometheus: Any
    grafana: Any
    grafana_url: str
    prometheus_url: str
    grafana_password: pulumi.Output[str]


def local_monitoring(
    parent: pulumi.Resource,
    name: str,
    cfg: StackConfig,
    network_name: pulumi.Input[str],
    nodes: list[NodeSpec],
    brokers: list[Any],
    labels: list[Any],
) -> LocalMonitoring | None:
    """Prometheus scraping every broker container, Grafana with the datasource and dashboard
    provisioned; both published on local.bind only. The Grafana admin password is generated."""
    import pulumi_docker as docker

    from components import hostfiles
    from components.local_cluster import ROLE_LABEL, container_name

    obs, local = cfg.observability, cfg.local_settings
    if not obs.dashboard:
        return None
    child = pulumi.ResourceOptions(parent=parent)
    labels = [*labels, docker.ContainerLabelArgs(label=ROLE_LABEL, value="monitoring")]
    prom_conf = ro.local_prometheus_config(cfg, nodes)
    datasources = ro.grafana_datasources("http://prometheus:9090")
    provider = ro.grafana_dashboard_provider()
    board = json.dumps(ro.grafana_dashboard(cfg), indent=2) + "\n"
    for file, text in {"prometheus.yml": prom_conf, "grafana-datasources.yaml": datasources, "grafana-dashboards.yaml": provider}.items():
        hostfiles.put("monitoring", file, text)
    hostfiles.put("monitoring", "mqtt-cluster-dashboard.json", board)
    prom_image = docker.RemoteImage(f"{name}-prometheus-image", name=PROMETHEUS_IMAGE, keep_locally=True, opts=child)
    prometheus = docker.Container(
        f"{name}-prometheus",
        name=container_name(cfg, "prometheus"),
        image=prom_image.image_id,
        restart="always",
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network_name, aliases=["prometheus"])],
        ports=[docker.ContainerPortArgs(internal=9090, external=obs.prometheus_port, ip=local.bind)],
        uploads=[docker.ContainerUploadArgs(file=PROMETHEUS_CONFIG, content=prom_conf, permissions="0644")],
        labels=labels,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=brokers),
    )
    secret = generated(f"{name}-grafana-password", 24, False, parent)
    graf_image = docker.RemoteImage(f"{name}-grafana-image", name=GRAFANA_IMAGE, keep_locally=True, opts=child)
    grafana = docker.Container(
        f"{name}-grafana",
        name=container_name(cfg, "grafana"),
        image=graf_image.image_id,
        restart="always",
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network_name, aliases=["grafana"])],
        ports=[docker.ContainerPortArgs(internal=3000, external=obs.grafana_port, ip=local.bind)],
        envs=[
            f"GF_SECURITY_ADMIN_USER={GRAFANA_USER}",
            pulumi.Output.concat("GF_SECURITY_ADMIN_PASSWORD=", secret),
            "GF_USERS_ALLOW_SIGN_UP=false",
            "GF_AUTH_ANONYMOUS_ENABLED=false",
            "GF_ANALYTICS_REPORTING_ENABLED=false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES=false",
        ],
        uploads=[
            docker.ContainerUploadArgs(
                file=f"{GRAFANA_PROVISIONING}/datasources/mqtt-cluster.yaml", content=datasources, permissions="0644"
            ),
            docker.ContainerUploadArgs(file=f"{GRAFANA_PROVISIONING}/dashboards/mqtt-cluster.yaml", content=provider, permissions="0644"),
            docker.ContainerUploadArgs(file=f"{ro.GRAFANA_DASHBOARDS_DIR}/mqtt-cluster.json", content=board, permissions="0644"),
        ],
        labels=labels,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[prometheus]),
    )
    host = "localhost" if local.bind in ("127.0.0.1", "0.0.0.0") else local.bind  # noqa: S104 - a comparison
    return LocalMonitoring(
        prometheus=prometheus,
        grafana=grafana,
        grafana_url=f"http://{host}:{obs.grafana_port}",
        prometheus_url=f"http://{host}:{obs.prometheus_port}",
        grafana_password=secret,
    )
