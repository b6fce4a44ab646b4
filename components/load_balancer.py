"""LoadBalancer: TLS termination in front of the brokers — NLB, classic ELB, or nginx/haproxy hosts.

Devices speak TLS to the load balancer on 8883 (WSS on 8084); it forwards plain TCP to the
brokers' 1883/8083 inside the VPC, as EMQX's deployment guide recommends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import config as c
from components import firewall, hostfiles
from components.broker_cluster import IMDSV2, amazon_linux_ami, ami_changes, instance_arch, instance_profile, root_volume
from components.config import StackConfig, tls_passthrough
from components.renderers import cloud_init
from components.renderers.nodes import NodeSpec
from components.renderers.proxy import (
    ADMIN_SOCKET,
    CHECKER_PATH,
    CHECKER_UNIT,
    Backend,
    ProxySettings,
    haproxy_cfg,
    idle_timeout,
    maxconn_for,
    nginx_conf,
    proxy_start_script,
    upstream_checker,
    upstream_checker_unit,
)
from components.rollout import HostAccess, proxy_gate
from components.secrets import generated, secure_parameters
from components.tls_certs import TlsMaterial, TlsMaterialArgs

# Classic ELB's default negotiation policy still allows TLS 1.0; this predefined one does not.
ELB_TLS12_POLICY = "ELBSecurityPolicy-TLS-1-2-2017-01"
VPC_RESOLVER = "169.254.169.253"
CLIENT_CA_PATH = "/etc/mqtt-cluster/tls/devices-ca.pem"
"""The device CA bundle on proxy hosts (auth.mechanism password+mtls); public, so in user-data."""


def device_ca_files(cfg: StackConfig) -> dict[str, str]:
    return {CLIENT_CA_PATH: cfg.auth.mtls.ca_bundle} if cfg.auth.uses_mtls and cfg.auth.mtls and cfg.auth.mtls.ca_bundle else {}


AL2023_STREAM_MODULE = "/usr/lib64/nginx/modules/ngx_stream_module.so"

# Broker health checks of the AWS load balancers, at the fastest each kind accepts. NLB: interval
# 5-300 s, timeout 2-120 s, thresholds 2-10 (pulumi_aws 7.51.1 lb/_inputs.py:3493-3516); classic
# ELB: interval 5-300 s, timeout 2-60 s, thresholds 2-10 (AWS CloudFormation
# AWS::ElasticLoadBalancing::LoadBalancer HealthCheck). A broker that stops answering is out after
# UNHEALTHY_THRESHOLD failed checks: at most interval x threshold + timeout = 12 s.
LB_CHECK_INTERVAL_S = 5
LB_CHECK_TIMEOUT_S = 2
LB_HEALTHY_THRESHOLD = 2
LB_UNHEALTHY_THRESHOLD = 2
# Route 53 checks every 10 s (the fast interval; 10 or 30) and fails a proxy after 2 misses; a
# resolver may then serve the old answer for the record's TTL: 20 s + propagation + 10 s.
ROUTE53_CHECK_INTERVAL_S = 10
ROUTE53_FAILURE_THRESHOLD = 2
PROXY_RECORD_TTL_S = 10


@dataclass
class LoadBalancerArgs:
    cfg: StackConfig
    vpc_id: pulumi.Input[str]
    public_subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    """The "front" group: client ports from the client networks."""
    nodes: list[NodeSpec]
    instance_ids: list[pulumi.Input[str]]
    """Broker instances, index-aligned with nodes."""
    key_name: pulumi.Input[str]
    param_prefix: str
    account_id: str
    tags: dict[str, str]
    access: HostAccess
    """How the deploying machine reaches a proxy host for its gate (access.transport)."""
    telemetry: Any = None
    """components.observability.HostHooks for proxy hosts: the monitoring agent and the role's policy."""
    passthrough_ca: pulumi.Input[str] | None = None
    """CA of the brokers' own server certificate (TLS passthrough, components.broker_tls)."""


class LoadBalancer(pulumi.ComponentResource):
    """Exports the client endpoint: hostname, ports, and the CA for self-signed setups."""

    hostname: pulumi.Output[str]
    ca_cert_pem: pulumi.Output[str] | None

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:LoadBalancer", name, None, opts)
        self._name, self._args, self._cfg = name, args, args.cfg
        self._child = pulumi.ResourceOptions(parent=self)
        self.ca_cert_pem = None
        # Where a rollout step drains a broker: NLB target groups (arn, port) or the classic ELB.
        self.drain_target_groups: list[tuple[pulumi.Output[str], int]] = []
        self.drain_elb_name: pulumi.Output[str] | None = None
        self.drain_proxy_kind: str | None = None
        """nginx|haproxy: the rollout drains a broker on every proxy host (proxy_instances)."""
        self.drain_resources: dict[str, list[pulumi.Resource]] = {n.host: [] for n in args.nodes}
        """Per node host: what registers it with the load balancer."""
        self.addresses: list[pulumi.Output[str]] = []
        # What the alarms and the dashboard watch (set by whichever front the stack uses).
        self.nlb: aws.lb.LoadBalancer | None = None
        self.target_groups: dict[int, aws.lb.TargetGroup] = {}
        self.elb: aws.elb.LoadBalancer | None = None
        self.proxy_instances: list[tuple[str, aws.ec2.Instance]] = []
        self.health_checks: list[tuple[str, aws.route53.HealthCheck]] = []
        kind = self._cfg.load_balancer.kind
        if kind == "nlb":
            self._nlb()
        elif kind == "elb":
            self._elb()
        else:
            self._proxies(kind)
        self.register_outputs({"hostname": self.hostname})

    # --- certificates ---------------------------------------------------------------------------
    def _acm_certificate(self) -> pulumi.Input[str]:
        lb, n, tags = self._cfg.load_balancer, self._name, self._args.tags
        if lb.certificate_arn:
            return lb.certificate_arn
        if lb.domain and lb.hosted_zone_id:
            names = [lb.domain, *lb.alternative_names]
            cert = aws.acm.Certificate(
                f"{n}-cert",
                domain_name=lb.domain,
                subject_alternative_names=lb.alternative_names or None,
                validation_method="DNS",
                tags=tags,
                opts=self._child,
            )
            fqdns: list[pulumi.Input[str]] = []
            for i, dn in enumerate(names):
                # One validation record per name; the provider lists them in no fixed order.
                opt = cert.domain_validation_options.apply(lambda opts, dn=dn: next(o for o in opts if o.domain_name == dn))
                if i > 0 and lb.validated_by:
                    # ACM asks every certificate of one account for the same CNAME per name, so a
                    # name several stacks share (the global hostname) has ONE record, declared by
                    # the stack that owns it (validated_by); destroying this stack leaves it alone.
                    # This certificate waits until that record validates it.
                    fqdns.append(opt.resource_record_name.apply(lambda fqdn: fqdn.rstrip(".")))
                    continue
                record = aws.route53.Record(
                    f"{n}-cert-validation" if i == 0 else f"{n}-cert-validation-{i}",
                    zone_id=lb.hosted_zone_id,
                    name=opt.resource_record_name,
                    type=opt.resource_record_type,
                    records=[opt.resource_record_value],
                    ttl=60,
                    allow_overwrite=True,
                    opts=self._child,
                )
                fqdns.append(record.fqdn)
            valid = aws.acm.CertificateValidation(
                f"{n}-cert-valid", certificate_arn=cert.arn, validation_record_fqdns=fqdns, opts=self._child
            )
            return valid.certificate_arn
        # No hosted zone: a self-signed CA (pulumi-tls) imported into ACM; clients trust the exported
        # CA. The name clients use is the load balancer's own DNS name (or a domain the operator
        # points at it), and the certificate must be issued before the load balancer exists, so it
        # names the wildcard of that DNS name's form (a "*" stands for exactly one label):
        #   classic ELB  <name>-<digits>.<region>.elb.amazonaws.com   (Classic Load Balancers guide,
        #                "Public DNS names for your load balancer": name-1234567890.region.elb.amazonaws.com)
        #   NLB          <name>-<16 hex>.elb.<region>.amazonaws.com
        region = self._cfg.region
        lb_names = [f"*.{region}.elb.amazonaws.com"] if lb.kind == "elb" else [f"*.elb.{region}.amazonaws.com"]
        material = TlsMaterial(
            f"{n}-tls",
            TlsMaterialArgs(
                common_name=lb.domain or f"mqtt.{self._cfg.stack}",
                dns_names=[*([lb.domain] if lb.domain else []), *lb_names, *lb.alternative_names],
                ip_addresses=[],
            ),
            opts=self._child,
        )
        self.ca_cert_pem = material.ca_cert_pem
        cert = aws.acm.Certificate(
            f"{n}-cert",
            private_key=material.private_key_pem,
            certificate_body=material.cert_pem,
            certificate_chain=material.ca_cert_pem,
            tags=tags,
            opts=self._child,
        )
        return cert.arn

    def _alias(self, dns_name: pulumi.Input[str], zone_id: pulumi.Input[str]) -> None:
        lb = self._cfg.load_balancer
        if lb.domain and lb.hosted_zone_id:
            aws.route53.Record(
                f"{self._name}-alias",
                zone_id=lb.hosted_zone_id,
                name=lb.domain,
                type="A",
                aliases=[aws.route53.RecordAliasArgs(name=dns_name, zone_id=zone_id, evaluate_target_health=True)],
                opts=self._child,
            )
            self.hostname = pulumi.Output.from_input(lb.domain)
        else:
            self.hostname = pulumi.Output.from_input(dns_name)

    # --- NLB ------------------------------------------------------------------------------------
    def _nlb(self) -> None:
        cfg, a, n, lb = self._cfg, self._args, self._name, self._cfg.load_balancer
        nlb = aws.lb.LoadBalancer(
            f"{n}-nlb",
            load_balancer_type="network",
            internal=False,
            subnets=a.public_subnet_ids,
            security_groups=[a.security_group_id],
            enable_cross_zone_load_balancing=True,
            tags=a.tags,
            opts=self._child,
        )
        # Device certificates: a TCP listener passes TLS through to the brokers' SSL listeners, which
        # verify them (an NLB TLS listener cannot ask for a client certificate).
        passthrough = tls_passthrough(cfg)
        cert_arn = None if passthrough else self._acm_certificate()
        if passthrough:
            self.ca_cert_pem = a.passthrough_ca
        hp, path = firewall.health_check(cfg)
        routes = [(c.MQTTS_PORT, c.MQTTS_PORT if passthrough else c.MQTT_PORT, "mqtt")]
        if cfg.brokers.websocket:
            routes.append((c.WSS_PORT, c.WSS_PORT if passthrough else c.WS_PORT, "ws"))
        groups: dict[int, aws.lb.TargetGroup] = {}
        for _, backend, label in routes:
            tg = aws.lb.TargetGroup(
                f"{n}-{label}",
                port=backend,
                protocol="TCP",
                vpc_id=a.vpc_id,
                target_type="instance",
                deregistration_delay=lb.deregistration_delay,
                # Must match the brokers' listeners (components.renderers.broker.listener_proxy_protocol).
                proxy_protocol_v2=lb.proxy_protocol,
                stickiness=aws.lb.TargetGroupStickinessArgs(type="source_ip", enabled=lb.stickiness),
                health_check=aws.lb.TargetGroupHealthCheckArgs(
                    enabled=True,
                    protocol="HTTP",
                    port=str(hp),
                    path=path,
                    matcher="200",
                    interval=LB_CHECK_INTERVAL_S,
                    timeout=LB_CHECK_TIMEOUT_S,
                    healthy_threshold=LB_HEALTHY_THRESHOLD,
                    unhealthy_threshold=LB_UNHEALTHY_THRESHOLD,
                ),
                # An unhealthy target's connections get a TCP RST, so its devices reconnect to a live
                # broker (lb/target_group.py:77; the AWS default, set so it stays on).
                target_health_states=[aws.lb.TargetGroupTargetHealthStateArgs(enable_unhealthy_connection_termination=True)],
                tags=a.tags,
                opts=self._child,
            )
            groups[backend] = tg
            self.drain_target_groups.append((tg.arn, backend))
            for node, iid in zip(a.nodes, a.instance_ids, strict=True):
                self.drain_resources[node.host].append(
                    aws.lb.TargetGroupAttachment(
                        f"{n}-{label}-{node.host}", target_group_arn=tg.arn, target_id=iid, port=backend, opts=self._child
                    )
                )
        for front, backend, label in routes:
            aws.lb.Listener(
                f"{n}-{label}-tls",
                load_balancer_arn=nlb.arn,
                port=front,
                protocol="TCP" if passthrough else "TLS",
                certificate_arn=cert_arn,
                ssl_policy=None if passthrough else lb.tls_policy,
                default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=groups[backend].arn)],
                tags=a.tags,
                opts=self._child,
            )
        if lb.plain_mqtt:
            aws.lb.Listener(
                f"{n}-mqtt-plain",
                load_balancer_arn=nlb.arn,
                port=c.MQTT_PORT,
                protocol="TCP",
                default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=groups[c.MQTT_PORT].arn)],
                tags=a.tags,
                opts=self._child,
            )
        self.nlb, self.target_groups = nlb, groups
        self._alias(nlb.dns_name, nlb.zone_id)

    # --- classic ELB ----------------------------------------------------------------------------
    def _elb(self) -> None:
        cfg, a, n, lb = self._cfg, self._args, self._name, self._cfg.load_balancer
        cert_arn = self._acm_certificate()
        listeners = [
            aws.elb.LoadBalancerListenerArgs(
                lb_port=c.MQTTS_PORT, lb_protocol="ssl", instance_port=c.MQTT_PORT, instance_protocol="tcp", ssl_certificate_id=cert_arn
            )
        ]
        if cfg.brokers.websocket:
            listeners.append(
                aws.elb.LoadBalancerListenerArgs(
                    lb_port=c.WSS_PORT, lb_protocol="ssl", instance_port=c.WS_PORT, instance_protocol="tcp", ssl_certificate_id=cert_arn
                )
            )
        if lb.plain_mqtt:
            listeners.append(
                aws.elb.LoadBalancerListenerArgs(lb_port=c.MQTT_PORT, lb_protocol="tcp", instance_port=c.MQTT_PORT, instance_protocol="tcp")
            )
        hp, path = firewall.health_check(cfg)
        elb = aws.elb.LoadBalancer(
            f"{n}-elb",
            subnets=a.public_subnet_ids,
            security_groups=[a.security_group_id],
            listeners=listeners,
            instances=a.instance_ids,
            cross_zone_load_balancing=True,
            # Above the MQTT keepalive; the classic default (60 s) equals it and cuts idle sessions.
            idle_timeout=idle_timeout(cfg.brokers.keepalive),
            connection_draining=True,
            connection_draining_timeout=lb.deregistration_delay,
            health_check=aws.elb.LoadBalancerHealthCheckArgs(
                # A classic ELB stops routing to an OutOfService instance but keeps its open connections.
                target=f"HTTP:{hp}{path}",
                interval=LB_CHECK_INTERVAL_S,
                timeout=LB_CHECK_TIMEOUT_S,
                healthy_threshold=LB_HEALTHY_THRESHOLD,
                unhealthy_threshold=LB_UNHEALTHY_THRESHOLD,
            ),
            tags=a.tags,
            opts=self._child,
        )
        self.drain_elb_name = elb.name
        for attached in self.drain_resources.values():
            attached.append(elb)
        policy = aws.elb.LoadBalancerPolicy(
            f"{n}-tls12",
            load_balancer_name=elb.name,
            policy_name=f"{n}-tls12",
            policy_type_name="SSLNegotiationPolicyType",
            policy_attributes=[aws.elb.LoadBalancerPolicyPolicyAttributeArgs(name="Reference-Security-Policy", value=ELB_TLS12_POLICY)],
            opts=self._child,
        )
        for port in [x.lb_port for x in listeners if x.lb_protocol == "ssl"]:
            aws.elb.ListenerPolicy(
                f"{n}-tls12-{port}",
                load_balancer_name=elb.name,
                load_balancer_port=port,
                policy_names=[policy.policy_name],
                opts=self._child,
            )
        if lb.proxy_protocol:
            pp = aws.elb.LoadBalancerPolicy(
                f"{n}-proxy-protocol",
                load_balancer_name=elb.name,
                policy_name=f"{n}-proxy-protocol",
                policy_type_name="ProxyProtocolPolicyType",
                policy_attributes=[aws.elb.LoadBalancerPolicyPolicyAttributeArgs(name="ProxyProtocol", value="true")],
                opts=self._child,
            )
            # One policy per instance port: with plain_mqtt, 1883 and 8883 both forward to 1883.
            for port in sorted({x.instance_port for x in listeners}):
                aws.elb.LoadBalancerBackendServerPolicy(
                    f"{n}-proxy-protocol-{port}",
                    load_balancer_name=elb.name,
                    instance_port=port,
                    policy_names=[pp.policy_name],
                    opts=self._child,
                )
        self.elb = elb
        self._alias(elb.dns_name, elb.zone_id)

    # --- nginx / haproxy hosts ------------------------------------------------------------------
    def _proxies(self, kind: str) -> None:
        """Two or more proxy hosts, each with an Elastic IP. keepalived's VRRP needs multicast and
        gratuitous ARP, which a VPC does not carry, so failover is DNS: health-checked multivalue
        records over the EIPs when the stack has a domain, else clients get the list of EIPs.

        A change of the proxies' user-data (instance type -> maxconn, the broker list, keepalive,
        TLS ...) replaces them, one host at a time, each in service before the next is touched:

          instance i -> gate i (proxy-ready: cloud-init done, proxy active, 8883 open)
                     -> EIP association i -> instance i+1 -> ...

        Pulumi replaces create-before-delete: it creates the new instance, moves on to what depends
        on it, and deletes every replaced resource only after all creates and updates
        (pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:2157-2163; deletes are
        generated in GenerateDeletes, :2418, after the program's last registration,
        deployment_executor.go:328-332, :486). A dependent is registered only once its dependencies'
        steps have finished (source_eval.go:2945-2950 answers RegisterResource when the step is done;
        the SDK awaits depends_on URNs first), so instance i+1 is created only after EIP i sits on a
        serving proxy i. The old hosts are deleted at the end; a failed gate stops the update before
        any delete, leaving the EIP on the old host. The chain is as long as the proxy count (2-3):
        the only depth it adds to the deploy graph."""
        cfg, a, n, lb = self._cfg, self._args, self._name, self._cfg.load_balancer
        region = cfg.region or ""
        eips = [
            aws.ec2.Eip(f"{n}-{kind}-{i + 1}-eip", domain="vpc", tags={**a.tags, "Name": f"{n}-{kind}-{i + 1}"}, opts=self._child)
            for i in range(lb.proxies)
        ]
        material = TlsMaterial(
            f"{n}-tls",
            TlsMaterialArgs(
                common_name=lb.domain or f"mqtt.{cfg.stack}",
                dns_names=([lb.domain] if lb.domain else [f"mqtt.{cfg.stack}"]) + lb.alternative_names,
                ip_addresses=[e.public_ip for e in eips],
            ),
            opts=self._child,
        )
        self.ca_cert_pem = material.ca_cert_pem
        stats_pw = generated(f"{n}-stats-password", 24, False, self)
        secure_parameters(
            n,
            a.param_prefix,
            {"tls-certificate": material.cert_pem, "tls-private-key": material.private_key_pem, "proxy-stats-password": stats_pw},
            a.tags,
            self._child,
            describe=False,
        )

        # Exactly what proxy-start.sh fetches: the TLS pair, and the stats password for haproxy.
        fetched = ["tls-certificate", "tls-private-key"] + (["proxy-stats-password"] if kind == "haproxy" else [])
        profile = instance_profile(f"{n}-{kind}", [f"{a.param_prefix}/{leaf}" for leaf in fetched], region, a.account_id, a.tags, self)
        if a.telemetry is not None:
            aws.iam.RolePolicy(f"{n}-{kind}-telemetry", role=profile.role, policy=a.telemetry.policy, opts=self._child)
        settings = self.proxy_settings(cfg, kind, a.nodes)
        conf_path = "/etc/nginx/nginx.conf" if kind == "nginx" else "/etc/haproxy/haproxy.cfg"
        conf = nginx_conf(settings) if kind == "nginx" else haproxy_cfg(settings)
        start = proxy_start_script(kind=kind, region=region, param_prefix=a.param_prefix, checker_unit=CHECKER_UNIT)
        extra = {conf_path: conf, "/usr/local/sbin/mqtt-proxy-start": start}
        if kind == "nginx":
            extra[CHECKER_PATH] = upstream_checker()
            extra[f"/etc/systemd/system/{CHECKER_UNIT}"] = upstream_checker_unit(settings, conf_path)
        packages = ["nginx", "nginx-mod-stream"] if kind == "nginx" else ["haproxy"]
        azs = len(a.public_subnet_ids)
        previous: list[pulumi.Resource] = []
        for i in range(lb.proxies):
            host = f"{kind}-{i + 1}"
            user_data = cloud_init.plain_host_user_data(
                host,
                extra_files={**extra, **device_ca_files(cfg)},
                packages=packages,
                runcmd=[["chmod", "0755", path] for path in extra if path.startswith("/usr/local/sbin/")]
                + [["/usr/local/sbin/mqtt-proxy-start"]],
                extra=a.telemetry.extras(host) if a.telemetry is not None else None,
                gzipped=(CHECKER_PATH,),
            )
            hostfiles.put(host, "cloud-init.yaml", user_data)
            hostfiles.put(host, conf_path.rsplit("/", 1)[1], conf)
            hostfiles.put(host, "mqtt-proxy-start", start)
            if a.telemetry is not None:
                for path, text in a.telemetry.extras(host).files.items():
                    hostfiles.put(host, path.rsplit("/", 1)[1], text)
            if kind == "nginx":
                hostfiles.put(host, CHECKER_UNIT, extra[f"/etc/systemd/system/{CHECKER_UNIT}"])
                hostfiles.put(host, "mqtt-upstream-check", extra[CHECKER_PATH])
            inst = aws.ec2.Instance(
                f"{n}-{host}",
                ami=amazon_linux_ami(instance_arch(lb.proxy_instance_type), cfg.region),
                instance_type=lb.proxy_instance_type,
                subnet_id=a.public_subnet_ids[i % azs],
                vpc_security_group_ids=[a.security_group_id],
                iam_instance_profile=profile.name,
                key_name=a.key_name,
                # A public IPv4 of its own while it boots: a public subnet reaches the internet only
                # with one (packages, SSM Run Command for its gate, the TLS pair from SSM), and the
                # Elastic IP moves to it only once it serves. Associating the EIP releases this
                # address ("When you associate an Elastic IP address with an instance ..., the
                # instance's public IPv4 address (if it had one) is released": EC2 User Guide,
                # elastic-ip-addresses-eip.html, "Elastic IP address basics"). The provider reads the
                # attribute back as "the primary interface has a public address" and forces a new
                # instance on a change of it (hashicorp/terraform-provider-aws 5c58e0c2
                # internal/service/ec2/ec2_instance.go:82-87, ForceNew): with an EIP attached that is
                # true, so true is also the value that a refresh leaves unchanged.
                associate_public_ip_address=True,
                metadata_options=IMDSV2,
                root_block_device=root_volume(16),
                user_data_base64=cloud_init.packed(user_data),
                user_data_replace_on_change=True,
                tags={**a.tags, "Name": host, "Role": "proxy"},
                # The previous proxy host serves on its Elastic IP before this one is created or replaced.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=ami_changes(cfg, host), depends_on=previous),
            )
            self.proxy_instances.append((host, inst))
            gate = proxy_gate(
                f"{n}-{host}-ready",
                host=host,
                kind=kind,
                instance_id=inst.id,
                address=inst.private_ip,
                access=a.access,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[inst]),
            )
            # A new instance id forces a new association (instance_id ForceNew: hashicorp/
            # terraform-provider-aws 01c08000 internal/service/ec2/ec2_eip_association.go:40-45),
            # created before the old one is deleted. AssociateAddress moves an EIP that is associated
            # elsewhere ("it is disassociated from that instance and associated with the specified
            # instance"; AllowReassociation: "Reassociation is automatic": boto/botocore 1.43.11
            # botocore/data/ec2/2016-11-15/service-2.json AssociateAddress), so clients of this EIP
            # reach the new host at once, and EC2 gives the move a new association id. Deleting the
            # old association at the end of the update then disassociates nothing: DisassociateAddress
            # of the stale id answers InvalidAssociationID.NotFound, which the provider takes as done
            # (ec2_eip_association.go:188-192). So no delete_before_replace (that would take the
            # address off the old host before the new one has it), and no allow_reassociation: it is
            # ForceNew (:35-39) and setting it would re-create every association of a running stack.
            assoc = aws.ec2.EipAssociation(
                f"{n}-{host}-eip-assoc",
                allocation_id=eips[i].allocation_id,
                instance_id=inst.id,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gate]),
            )
            previous = [assoc]
            # A broker's rollout step drains it on every proxy host: only on hosts that serve.
            for waits in self.drain_resources.values():
                waits.append(gate)
            if lb.domain and lb.hosted_zone_id:
                check = aws.route53.HealthCheck(
                    f"{n}-{host}-health",
                    type="TCP",
                    ip_address=eips[i].public_ip,
                    port=c.MQTTS_PORT,
                    request_interval=ROUTE53_CHECK_INTERVAL_S,
                    failure_threshold=ROUTE53_FAILURE_THRESHOLD,
                    tags={**a.tags, "Name": host},
                    opts=self._child,
                )
                self.health_checks.append((host, check))
                aws.route53.Record(
                    f"{n}-{host}-record",
                    zone_id=lb.hosted_zone_id,
                    name=lb.domain,
                    type="A",
                    ttl=PROXY_RECORD_TTL_S,
                    records=[eips[i].public_ip],
                    set_identifier=host,
                    multivalue_answer_routing_policy=True,
                    health_check_id=check.id,
                    opts=self._child,
                )
        self.addresses = [e.public_ip for e in eips]
        self.hostname = pulumi.Output.from_input(lb.domain) if lb.domain else eips[0].public_ip
        self.drain_proxy_kind = kind

    @staticmethod
    def proxy_settings(cfg: StackConfig, kind: str, nodes: list[NodeSpec]) -> ProxySettings:
        lb = cfg.load_balancer
        return ProxySettings(
            backends=[Backend(n.host, n.fqdn) for n in nodes],
            wss_port=c.WSS_PORT if cfg.brokers.websocket else None,
            plain_port=c.MQTT_PORT if lb.plain_mqtt else None,
            proxy_protocol=lb.proxy_protocol,
            keepalive=cfg.brokers.keepalive,
            maxconn=maxconn_for(lb.proxy_instance_type),
            user="nginx" if kind == "nginx" else "haproxy",
            modules=[AL2023_STREAM_MODULE] if kind == "nginx" else [],
            stats_bind=f"0.0.0.0:{c.HAPROXY_STATS_PORT}" if (kind == "haproxy" and cfg.access.admin_cidrs) else None,
            admin_socket=ADMIN_SOCKET if kind == "haproxy" else None,
            resolver=f"{VPC_RESOLVER}:53" if kind == "haproxy" else None,
            pid="/run/nginx.pid" if kind == "nginx" else "/run/haproxy.pid",
            client_ca=CLIENT_CA_PATH if cfg.auth.uses_mtls else None,
            send_cn=kind == "haproxy" and cfg.auth.mechanism == "mtls",
        )
