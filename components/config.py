"""The stack configuration model: every check lives here, before any resource exists.

A stack file's ``mqtt-cluster:*`` keys are validated into one :class:`StackConfig`. Each problem
becomes ONE line naming the stack file, the key and the problem::

    stacks/Pulumi.dev.yaml: mqtt-cluster:brokers.count: must be at least 1 (got 0)

This module has no Pulumi imports, so the model is usable by renderers, tools and tests alike;
:func:`load` (in ``components.settings``) reads ``pulumi.Config`` and calls :func:`parse`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT = "mqtt-cluster"

# Availability zones per region, as offered to a typical account. Used to refuse an AZ count a
# region cannot hold before anything is registered, and to give the offline plan realistic answers.
# us-east-1e and us-west-1a are closed to new accounts, so they are not listed.
REGION_AZS: dict[str, tuple[str, ...]] = {
    "us-east-1": ("a", "b", "c", "d", "f"),
    "us-east-2": ("a", "b", "c"),
    "us-west-1": ("b", "c"),
    "us-west-2": ("a", "b", "c", "d"),
    "ca-central-1": ("a", "b", "d"),
    "sa-east-1": ("a", "b", "c"),
    "eu-central-1": ("a", "b", "c"),
    "eu-west-1": ("a", "b", "c"),
    "eu-west-2": ("a", "b", "c"),
    "eu-west-3": ("a", "b", "c"),
    "eu-north-1": ("a", "b", "c"),
    "ap-east-1": ("a", "b", "c"),
    "ap-south-1": ("a", "b", "c"),
    "ap-southeast-1": ("a", "b", "c"),
    "ap-southeast-2": ("a", "b", "c"),
    "ap-northeast-1": ("a", "c", "d"),
    "ap-northeast-2": ("a", "b", "c", "d"),
}

# Ports the design opens; kept here so the model, the firewall table and the renderers agree.
MQTT_PORT = 1883
MQTTS_PORT = 8883
WS_PORT = 8083
WSS_PORT = 8084
DASHBOARD_PORT = 18083
# EMQX's Erlang distribution listens on inet_dist_base_port (default 4370) plus the number ending
# the node name's short part (none in "emqx@<host>", so offset 0):
# emqx/ekka 0.19.8 src/ekka_dist.erl:30 (DEFAULT_PORT 4370), :130-141 (port/1), :144-150 (offset)
# (ekka tag pinned by emqx/emqx v5.8.6 rebar.config:86). EMQX 5.8.6 has no config key for it.
EMQX_DIST_PORT = 4370
# gen_rpc: the official image exports EMQX_RPC__PORT_DISCOVERY=manual
# (emqx/emqx v5.8.6 deploy/docker/docker-entrypoint.sh:52), so every node listens on and dials
# rpc.server_port, whose default is 5369 (apps/emqx_conf/src/emqx_conf_schema.erl:120, :782-790);
# the renderer sets both explicitly to this port.
EMQX_RPC_PORT = 5370
EPMD_PORT = 4369
VERNEMQ_CLUSTER_PORT = 44053
VERNEMQ_HTTP_PORT = 8888
VERNEMQ_DIST_PORTS = (9100, 9109)
SSH_PORT = 22
HAPROXY_STATS_PORT = 8404

# The last EMQX line published under Apache-2.0; later versions need a license key.
EMQX_LICENSE_FREE_BELOW = (5, 9)
# 5.8.0 removed core/replicant from the open-source edition: "Node role 'replicant' is only
# allowed in Enterprise edition since 5.8.0" (emqx/emqx v5.8.6 apps/emqx_conf/src/emqx_conf_schema.erl:1672,
# changes/v5.8.0.en.md:161). The Enterprise edition injects the role
# (apps/emqx_enterprise/src/emqx_enterprise_schema.erl:131); from 5.9 emqx/emqx is that edition.
EMQX_OSS_REPLICANTS_BELOW = (5, 8)
EMQX_ENTERPRISE_REPOSITORY = "emqx-enterprise"

WORLD = ("0.0.0.0/0", "::/0")


def instance_arch(instance_type: str) -> str:
    """Graviton families (t4g, m7g, c7gn …) run arm64; AMIs and images must match."""
    family = instance_type.split(".")[0]
    return "arm64" if "g" in family[2:] or family.startswith("a1") else "x86_64"


class ConfigError(Exception):
    """One line: the stack file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}")


class _Model(BaseModel):
    # strict: a stack file that says `count: "3"` or `websocket: 1` is a typo worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a valid CIDR block ({exc})") from None


def _cidr_list(values: list[str]) -> list[str]:
    for v in values:
        _network(v)
    return values


# EC2 sizes (https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html):
# nano/micro/small exist only in the burstable t families; medium in t, a1 and the Graviton families.
_SIZES_LARGE = re.compile(r"(large|xlarge|(2|3|4|6|8|9|10|12|16|18|24|32|48|56|96|112|224)xlarge|metal(-\d+xl)?)")
_BURSTABLE = ("t2", "t3", "t3a", "t4g")
_FAMILY = re.compile(
    r"(a1|t2|t3a?|t4g|[cmr][1-8][a-z]*(-flex)?|[xzhdi][1-8][a-z]*|im4gn|is4gen|[gp][2-6][a-z]*|inf[12]|trn[12][a-z]*|hpc[67][a-z]*|u\d?-\d+tb1|dl[12][a-z]*|vt1|f[12])"
)


def _instance_type(v: str) -> str:
    """A type AWS would accept: a known family and a size that family has (t3.huge, m6i.nano and
    mac2.metal are refused here, not by RunInstances mid-deploy)."""
    m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)", v)
    if not m or not _FAMILY.fullmatch(m.group(1)):
        raise ValueError(f"not an EC2 instance type (got {v!r})")
    family, size = m.groups()
    if family in _BURSTABLE:
        ok = size in ("nano", "micro", "small", "medium", "large", "xlarge", "2xlarge")
    elif size == "medium":
        ok = family == "a1" or instance_arch(v) == "arm64"
    else:
        ok = bool(_SIZES_LARGE.fullmatch(size))
    if not ok:
        raise ValueError(f"{family} has no size {size!r} (got {v!r})")
    return v


_DNS_NAME = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def _dns_name(v: str, *, wildcard: bool) -> str:
    """A DNS name ACM and Route53 accept: lower-case labels of at most 63 characters, 253 in all."""
    if not _DNS_NAME.fullmatch(v) or len(v) > 253 or (v.startswith("*.") and not wildcard):
        raise ValueError(f"not a DNS name{'' if wildcard else ' (no wildcard)'}: {v!r}")
    return v


class NetworkConfig(_Model):
    """The VPC: one public and one private subnet per availability zone."""

    cidr: str = "10.0.0.0/16"
    """VPC CIDR block; /16 to /24."""
    azs: int = Field(3, ge=2, le=6)
    """Availability zones to spread over (at least 2: one zone is one failure)."""
    nat: Literal["none", "single", "per-az"] = "single"
    """NAT gateways: single (cheap) or per-az (no shared fate). `none` is refused: brokers fetch
    packages, the broker image and their SSM parameters at first boot."""
    subnet_bits: int | None = Field(None, ge=1, le=8)
    """Extra prefix bits per subnet; default: the fewest that fit 2 x azs subnets."""

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = _network(v)
        if net.version != 4:
            raise ValueError("must be an IPv4 CIDR block")
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"prefix must be between /16 and /24 (got /{net.prefixlen})")
        return v

    @field_validator("nat")
    @classmethod
    def _nat(cls, v: str) -> str:
        if v == "none":
            raise ValueError(
                "none leaves the brokers without egress: they install packages, pull the broker image "
                "and read their SSM parameters at first boot and could not start; use single or per-az"
            )
        return v


class BrokersConfig(_Model):
    """The broker hosts."""

    engine: Literal["emqx", "vernemq"] = "emqx"
    """Broker software."""
    version: str | None = None
    """Image tag; default 5.8.6 for emqx, 2.1.1 for vernemq."""
    image: str | None = None
    """Full image reference, overriding engine/version (e.g. an ECR image)."""
    count: int = Field(3, ge=1, le=32)
    """Core nodes (EMQX core / VerneMQ nodes). Odd counts survive a partition better."""
    replicants: int = Field(0, ge=0, le=64)
    """EMQX replicant nodes (stateless readers that join a core). Enterprise edition only from
    5.8 (an emqx/emqx-enterprise image, or emqx/emqx 5.9+), with a license key."""
    instance_type: str = "t3.medium"
    """EC2 type for core nodes."""
    replicant_instance_type: str | None = None
    """EC2 type for replicants; default: instance_type."""
    root_volume_gb: int = Field(16, ge=8, le=1024)
    data_volume_gb: int = Field(20, ge=1, le=16384)
    """Encrypted gp3 volume holding the broker's data directory."""
    websocket: bool = True
    """Serve MQTT over WebSocket (8083, and 8084 with TLS at the load balancer)."""
    keepalive: int = Field(60, ge=10, le=3600)
    """MQTT keepalive (seconds) clients are expected to use; idle timeouts are 2x + 30 s, so at
    most 160 behind an NLB (fixed 350 s on TLS listeners) and 1985 behind a classic ELB (4000 s)."""
    accept_eula: bool = False
    """VerneMQ images refuse to start unless their EULA is accepted; must be true for vernemq.

    The vernemq/vernemq image is VerneMQ's binary package under its EULA: commercial use needs a
    paid VerneMQ subscription (vernemq/docker-vernemq 31299af Dockerfile:20, README.md:23);
    without one, build the image from source."""
    build_image: bool = False
    """Build docker/<engine>/Dockerfile on top of the stock image; on AWS it is pushed to ECR."""
    retain_data_on_scale_in: bool = False
    """Keep the data volume of a node removed by scale-in (Pulumi forgets it, AWS keeps it);
    default: it is deleted after the node has left the cluster. Set it before scaling in."""
    cluster_with: str | None = None
    """Primary stack of a cross-region cluster: this stack takes its Erlang cookie (by stack
    reference) and cluster name, so the linking stack can join the regions into one cluster."""

    @field_validator("instance_type", "replicant_instance_type")
    @classmethod
    def _itype(cls, v: str | None) -> str | None:
        return None if v is None else _instance_type(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        # registry[:port]/path:tag or @sha256:digest, as docker accepts it (lower-case repository).
        ref = r"([a-z0-9.-]+(:\d+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?"
        if v is not None and not re.fullmatch(ref, v):
            raise ValueError(f"not an image reference such as emqx/emqx:5.8.6 (got {v!r})")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+\.\d+(\.\d+)?([.-][A-Za-z0-9.]+)?", v):
            raise ValueError(f"not a version such as 5.8.6 (got {v!r})")
        return v

    @model_validator(mode="after")
    def _engine_rules(self) -> BrokersConfig:
        if self.engine == "vernemq":
            if self.replicants:
                raise _KeyedError("replicants", "replicant nodes exist only for emqx")
            if not self.accept_eula:
                raise _KeyedError(
                    "accept_eula",
                    "the vernemq image needs its EULA accepted (it is the binary package: "
                    "commercial use needs a paid VerneMQ subscription): set accept_eula: true "
                    "after reading https://vernemq.com/end-user-license-agreement",
                )
        elif self.accept_eula:
            raise _KeyedError("accept_eula", "only meaningful for engine vernemq")
        if self.replicants and self.engine == "emqx" and self.edition == "open-source" and self.version_tuple >= EMQX_OSS_REPLICANTS_BELOW:
            raise _KeyedError(
                "replicants",
                f"{self.effective_image} is the open-source edition, which runs every node as core since 5.8.0; "
                "set replicants: 0 (add cores with brokers.count) or use an emqx/emqx-enterprise image with a license",
            )
        if self.build_image and self.image:
            raise _KeyedError("image", "build_image builds its own image; set one or the other")
        if self.build_image and self.replicants and self.replicant_instance_type:
            if instance_arch(self.instance_type) != instance_arch(self.replicant_instance_type):
                raise _KeyedError(
                    "replicant_instance_type",
                    "build_image builds for one CPU architecture; core and replicant types must both be arm64 or both x86_64",
                )
        return self

    @property
    def effective_version(self) -> str:
        return self.version or ("5.8.6" if self.engine == "emqx" else "2.1.1")

    @property
    def stock_image(self) -> str:
        repo = "emqx/emqx" if self.engine == "emqx" else "vernemq/vernemq"
        return f"{repo}:{self.effective_version}"

    @property
    def effective_image(self) -> str:
        """The image hosts run unless build_image replaces it with the built one."""
        return self.image or self.stock_image

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, minor = (int(x) for x in re.findall(r"\d+", self.effective_version)[:2])
        return major, minor

    @property
    def edition(self) -> Literal["open-source", "enterprise"]:
        """EMQX edition of the image: its repository's name (emqx-enterprise), or 5.9+ (one edition)."""
        repository = self.effective_image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
        if repository == EMQX_ENTERPRISE_REPOSITORY or self.version_tuple >= EMQX_LICENSE_FREE_BELOW:
            return "enterprise"
        return "open-source"

    @property
    def needs_license(self) -> bool:
        if self.engine != "emqx":
            return False
        return self.version_tuple >= EMQX_LICENSE_FREE_BELOW


class AccessConfig(_Model):
    """Who may reach what."""

    client_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"])
    """Networks devices connect from (MQTT ports on the load balancer only)."""
    admin_cidrs: list[str] = Field(default_factory=list)
    """Operator networks allowed to SSH and to open the dashboard; never the whole internet."""
    bastion: bool = False
    """A small SSH jump host in a public subnet; the join commands go through it."""
    bastion_instance_type: str = "t3.micro"
    ssh_user: str = "ec2-user"
    """Login user of the hosts' AMI (the ssh transport logs in as it)."""
    transport: Literal["ssm", "ssh"] = "ssm"
    """How joins, leaves and rollout steps reach the broker hosts from the deploying machine:
    ssm (AWS Systems Manager Run Command: only AWS credentials, no inbound port) or ssh (through
    the bastion, from an admin network)."""
    refresh_ami: str | None = None
    """One host (bastion, nginx-1, emqx-2 …) rebuilt on the newest AL2023 image at the next
    `pulumi up`. Every host ignores newer images otherwise; roll them one at a time."""

    @field_validator("bastion_instance_type")
    @classmethod
    def _itype(cls, v: str) -> str:
        return _instance_type(v)

    @field_validator("ssh_user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError(f"not a Linux user name (got {v!r})")
        return v

    @field_validator("admin_cidrs")
    @classmethod
    def _admins(cls, v: list[str]) -> list[str]:
        _cidr_list(v)
        for cidr in v:
            if _network(cidr).prefixlen == 0:
                raise ValueError(f"{cidr} opens SSH and the dashboard to the whole internet")
        return v

    @field_validator("client_cidrs")
    @classmethod
    def _clients_nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one network (devices could not connect)")
        return _cidr_list(v)


class LoadBalancerConfig(_Model):
    """TLS termination in front of the brokers."""

    kind: Literal["nlb", "elb", "nginx", "haproxy"] = "nlb"
    """nlb (default), elb (classic), or self-hosted nginx / haproxy hosts."""
    certificate_arn: str | None = None
    """Existing ACM certificate (nlb / elb)."""
    domain: str | None = None
    """Client hostname; with hosted_zone_id, a DNS-validated ACM certificate and an alias record."""
    hosted_zone_id: str | None = None
    """Public Route53 zone of `domain`."""
    alternative_names: list[str] = Field(default_factory=list)
    """More names the certificate covers, e.g. the global hostname of linked regions."""
    plain_mqtt: bool = False
    """Also expose unencrypted 1883 (off: credentials would cross the internet in clear)."""
    proxy_protocol: bool = False
    """Send PROXY protocol v2 to the brokers so they see client addresses; drives both ends."""
    stickiness: bool = False
    """Source-IP stickiness on the NLB target groups."""
    deregistration_delay: int = Field(30, ge=0, le=3600)
    """Seconds an NLB/ELB keeps draining a removed broker (a classic ELB needs at least 1)."""
    tls_policy: str = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    """NLB TLS policy; must be a TLS 1.2+ policy."""
    proxies: int = Field(2, ge=1, le=16)
    """nginx / haproxy hosts (2+ avoids a single point of failure)."""
    proxy_instance_type: str = "t3.small"
    validated_by: str | None = None
    """Stack that owns the DNS validation records of alternative_names (names several stacks
    share, such as the global hostname): this stack only waits for them. Default: this stack."""

    @field_validator("proxy_instance_type")
    @classmethod
    def _itype(cls, v: str) -> str:
        return _instance_type(v)

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        return None if v is None else _dns_name(v, wildcard=False)

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        # Route53 ids: "Z" and upper-case letters/digits, at most 32 characters, without /hostedzone/.
        if v is not None and not re.fullmatch(r"Z[A-Z0-9]{1,31}", v):
            raise ValueError(f"not a Route53 hosted zone id such as Z0123456789ABCDEFGHIJ (got {v!r})")
        return v

    @field_validator("tls_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if not re.match(r"ELBSecurityPolicy-(TLS13-1-[23]|TLS-1-2|FS-1-2)", v):
            raise ValueError(f"{v} admits TLS below 1.2; use e.g. ELBSecurityPolicy-TLS13-1-2-2021-06")
        return v

    @field_validator("certificate_arn")
    @classmethod
    def _arn(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+", v):
            raise ValueError(f"not an ACM certificate ARN (got {v!r})")
        return v

    @field_validator("alternative_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            _dns_name(name, wildcard=True)
        if len(set(v)) != len(v):
            raise ValueError("lists a name twice")
        return v

    @model_validator(mode="after")
    def _tls_source(self) -> LoadBalancerConfig:
        if self.hosted_zone_id and not self.domain:
            raise _KeyedError("domain", "hosted_zone_id is set but domain is not")
        if self.kind in ("nginx", "haproxy") and self.certificate_arn:
            raise _KeyedError("certificate_arn", f"an ACM certificate cannot be installed on {self.kind} hosts")
        if self.alternative_names and self.certificate_arn:
            raise _KeyedError("alternative_names", "the names of an existing certificate (certificate_arn) are fixed where it was issued")
        if self.domain and self.domain in self.alternative_names:
            raise _KeyedError("alternative_names", f"{self.domain} is already the certificate's domain")
        if self.validated_by is not None:
            if not (self.domain and self.hosted_zone_id and self.alternative_names):
                raise _KeyedError(
                    "validated_by",
                    "only a DNS-validated certificate (domain, hosted_zone_id) with alternative_names shares validation records",
                )
        if self.kind == "elb" and self.deregistration_delay < 1:
            # Classic ELB connection draining takes 1-3600 s ("The maximum timeout value can be set
            # between 1 and 3,600 seconds" - Classic Load Balancers guide, config-conn-drain).
            raise _KeyedError("deregistration_delay", "a classic ELB drains for 1 to 3600 seconds (got 0)")
        return self


def _topic_filter(f: str) -> bool:
    """MQTT rules: '#' alone and last, '+' alone in its level, nothing empty."""
    if not f or "\0" in f:
        return False
    levels = f.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


# Client authentication and topic authorization. Placeholders are the ones EMQX's file source
# renders (emqx/emqx v5.8.6 apps/emqx_auth/etc/acl.conf:130-132: ${username}, ${clientid});
# VerneMQ's vmq_acl and mosquitto spell them %u / %c and need them to fill a whole topic level
# (vernemq/vernemq 2.1.1 apps/vmq_acl/docs/vmq_acl.rst:62), so the model asks the same everywhere.
ACL_PLACEHOLDERS = ("${username}", "${clientid}")
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""Usernames: no ':' (password-file separator), no '/', '+', '#' (they name topic levels)."""


class AclRule(_Model):
    """One authorization rule; the first rule that matches decides, no match means deny."""

    permission: Literal["allow", "deny"] = "allow"
    who: str = "all"
    """all, username:<name> or clientid:<id>."""
    action: Literal["publish", "subscribe", "all"] = "all"
    topics: list[str] = Field(min_length=1)
    """Topic filters; ${username} / ${clientid} stand for the connecting client's own."""

    @field_validator("who")
    @classmethod
    def _who(cls, v: str) -> str:
        if v == "all":
            return v
        kind, _, name = v.partition(":")
        if kind not in ("username", "clientid") or not USERNAME_RE.fullmatch(name):
            raise ValueError(f"must be all, username:<name> or clientid:<id> (got {v!r})")
        return v

    @field_validator("topics")
    @classmethod
    def _topics(cls, v: list[str]) -> list[str]:
        for t in v:
            if not _topic_filter(t):
                raise ValueError(f"not an MQTT topic filter: {t!r}")
            for level in t.split("/"):
                if "${" in level and level not in ACL_PLACEHOLDERS:
                    raise ValueError(f"placeholders ${{username}} / ${{clientid}} must fill a whole topic level: {t!r}")
        return v


BRIDGE_USER = "mqtt-bridge"
"""The username peer regions' bridges log in with (auth.bridge_topics); reserved in `users`."""


def filter_covers(wide: str, narrow: str) -> bool:
    """Whether every topic ``narrow`` matches is matched by ``wide`` (both valid filters)."""
    w, n = wide.split("/"), narrow.split("/")
    for i, level in enumerate(w):
        if level == "#":
            return True
        if i >= len(n) or n[i] == "#":
            return False
        if level != "+" and level != n[i]:
            return False
    return len(w) == len(n)


DEFAULT_ACL = (AclRule(permission="allow", who="all", action="all", topics=["devices/${username}/#"]),)
"""Each device publishes and subscribes in its own subtree only; everything else is denied."""


class JwtConfig(_Model):
    """JWT authentication (EMQX): an HMAC secret from secret config, or a JWKS endpoint."""

    jwks_endpoint: str | None = None
    """HTTPS URL of the issuer's key set; without it the HMAC secret `mqtt-cluster:jwt_secret` is used."""
    match: Literal["username", "clientid", "none"] = "username"
    """Claim that must equal the client's own username / client id (besides `exp`)."""

    @field_validator("jwks_endpoint")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https://[^\s/]+(/\S*)?", v):
            raise ValueError(f"must be an https:// URL (got {v!r})")
        return v


class MtlsConfig(_Model):
    """Device certificates verified against a CA bundle."""

    ca_bundle: str | None = None
    """PEM text of the CA(s) that sign device certificates."""

    @field_validator("ca_bundle")
    @classmethod
    def _pem(cls, v: str | None) -> str | None:
        if v is not None and "-----BEGIN CERTIFICATE-----" not in v:
            raise ValueError("must be PEM text containing at least one CERTIFICATE block")
        return v


class AuthConfig(_Model):
    """Who may connect and what each client may publish and subscribe. Secure by default."""

    mechanism: Literal["password", "jwt", "mtls", "password+mtls"] = "password"
    """password (users from secret config), jwt (EMQX), mtls (device certificates), or both."""
    allow_anonymous: bool = False
    """Clients without credentials; never together with world-open access.client_cidrs."""
    acl: list[AclRule] = Field(default_factory=lambda: list(DEFAULT_ACL))
    """Topic rules (first match decides); default: each device in devices/<username>/#."""
    no_match: Literal["deny", "allow"] = "deny"
    """What happens to a publish/subscribe no rule matches."""
    jwt: JwtConfig | None = None
    mtls: MtlsConfig | None = None
    bridge_topics: list[str] | None = None
    """Topic filters peer regions may bridge in (links.mode bridge): a generated user `mqtt-bridge`
    may publish on these and nothing else. None (default): no bridge user, no bridges in."""

    @field_validator("bridge_topics")
    @classmethod
    def _bridge_topics(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("list the topic filters peers may bridge in, or leave the key out (no bridge user)")
        for t in v:
            if not _topic_filter(t):
                raise ValueError(f"not an MQTT topic filter: {t!r}")
            if "${" in t:
                raise ValueError(f"bridged topics are the same for every peer; no placeholders: {t!r}")
        return v

    @property
    def uses_password(self) -> bool:
        return self.mechanism in ("password", "password+mtls")

    @property
    def uses_mtls(self) -> bool:
        return self.mechanism in ("mtls", "password+mtls")

    @model_validator(mode="after")
    def _mechanism_needs(self) -> AuthConfig:
        if self.uses_mtls and (self.mtls is None or self.mtls.ca_bundle is None):
            raise _KeyedError("mtls.ca_bundle", f"mechanism {self.mechanism} verifies device certificates: it needs a CA bundle (PEM)")
        if self.mechanism != "jwt" and self.jwt is not None:
            raise _KeyedError("jwt", f"only used with mechanism jwt (got {self.mechanism})")
        if not self.uses_mtls and self.mtls is not None:
            raise _KeyedError("mtls", f"only used with mechanism mtls or password+mtls (got {self.mechanism})")
        return self


class LinksConfig(_Model):
    """The global (linking) stack: which regional stacks it ties together and how."""

    stacks: list[str] = Field(min_length=2)
    """Regional stack names, e.g. [prod-us-east-1, prod-eu-central-1]."""
    organization: str | None = None
    """Pulumi organisation of the regional stacks; default: the current one."""
    mode: Literal["cluster", "bridge"] = "bridge"
    """cluster: one cluster across regions; bridge: regional clusters bridged by MQTT over TLS."""
    primary: str | None = None
    """Stack whose seed the other regions join (cluster mode); default: the first."""
    mesh: Literal["full", "hub"] = "full"
    """Peer every pair (full) or every region with the primary only (hub)."""
    bridge_topics: list[str] = Field(default_factory=lambda: ["#"])
    """Topic filters bridged between regions (bridge mode)."""
    global_hostname: str | None = None
    """One client hostname over all regions (latency records); needs hosted_zone_id."""
    hosted_zone_id: str | None = None

    @model_validator(mode="after")
    def _links(self) -> LinksConfig:
        seen: set[str] = set()
        for s in self.stacks:
            if s in seen:
                raise _KeyedError("stacks", f"{s} is linked to itself (listed twice)")
            seen.add(s)
        if self.primary and self.primary not in self.stacks:
            raise _KeyedError("primary", f"{self.primary} is not one of the linked stacks")
        if self.global_hostname and not self.hosted_zone_id:
            raise _KeyedError("hosted_zone_id", "global_hostname needs the public zone it lives in")
        if self.mode == "cluster" and self.mesh != "full":
            raise _KeyedError("mesh", "one cluster connects every node to every node; cluster mode needs mesh full")
        for f in self.bridge_topics:
            if not _topic_filter(f):
                raise _KeyedError("bridge_topics", f"not an MQTT topic filter: {f!r}")
        return self

    @property
    def primary_stack(self) -> str:
        return self.primary or self.stacks[0]


class LocalConfig(_Model):
    """The `local` stack: the cluster on one machine's Docker."""

    proxy: Literal["nginx", "haproxy"] = "nginx"
    """TLS-terminating proxy container (the same renderer as the AWS proxy hosts)."""
    bind: str = "127.0.0.1"
    """Host address the proxy and the dashboard publish on; 0.0.0.0 shows them to the LAN."""
    mqtt_port: int = Field(1883, ge=1024, le=65535)
    """Plain MQTT on the host (local convenience; never exposed on AWS unless asked)."""
    mqtts_port: int = Field(8883, ge=1024, le=65535)
    wss_port: int = Field(8084, ge=1024, le=65535)
    dashboard_port: int = Field(18083, ge=1024, le=65535)
    """EMQX dashboard (or VerneMQ status page) of the seed node."""
    subnet: str = "172.28.0.0/24"
    """Docker network subnet (pick one that clashes with nothing on the host)."""

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        try:
            ipaddress.IPv4Address(v)
        except ValueError:
            raise ValueError(f"not an IPv4 address (got {v!r})") from None
        return v

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        net = _network(v)
        if net.version != 4 or not net.is_private:
            raise ValueError(f"must be a private IPv4 block (got {v})")
        if net.prefixlen > 26:
            raise ValueError(f"too small for the brokers and the proxy; use /26 or larger (got /{net.prefixlen})")
        return v

    @model_validator(mode="after")
    def _ports(self) -> LocalConfig:
        ports = {"mqtt_port": self.mqtt_port, "mqtts_port": self.mqtts_port, "wss_port": self.wss_port}
        ports["dashboard_port"] = self.dashboard_port
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise _KeyedError(key, f"port {port} is already taken by {seen[port]}")
            seen[port] = key
        return self


# CloudWatch Logs accepts only these retention periods (days; 0 keeps events forever).
# pulumi_aws 7.51.1 pulumi_aws/cloudwatch/log_group.py:43 (retention_in_days: "Possible values are: ...").
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653, 0)
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}"
)


class ObservabilityConfig(_Model):
    """Metrics, logs, alarms and dashboards (see components/observability.py)."""

    logs: bool = True
    """Broker and proxy logs in CloudWatch Logs, one log group per stack and role."""
    metrics: bool = True
    """The CloudWatch agent on every host: broker Prometheus metrics, memory and disk."""
    alarms: bool = True
    """CloudWatch alarms to the stack's SNS topic."""
    dashboard: bool = True
    """A CloudWatch dashboard per stack (AWS); Prometheus and Grafana containers (local)."""
    auto_recovery: bool = True
    """EC2 recovery on a failed system status check, where the instance type supports it."""
    log_retention_days: int = 30
    """Days CloudWatch Logs keeps events; one of CloudWatch's allowed values."""
    alert_emails: list[str] = Field(default_factory=list)
    """Addresses subscribed to the stack's alarm topic (each confirms by e-mail)."""
    connections_alarm_percent: int = Field(80, ge=10, le=100)
    """Alarm when connections reach this share of the configured maximum."""
    disk_alarm_percent: int = Field(80, ge=10, le=99)
    """Alarm when a broker's data volume is this full."""
    grafana_port: int = Field(3000, ge=1024, le=65535)
    """Local stack: Grafana on local.bind."""
    prometheus_port: int = Field(9090, ge=1024, le=65535)
    """Local stack: Prometheus on local.bind."""

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs accepts one of {', '.join(map(str, LOG_RETENTION_DAYS))} (got {v})")
        return v

    @field_validator("alert_emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        seen: set[str] = set()
        for addr in v:
            if not _EMAIL.fullmatch(addr) or ".." in addr:
                raise ValueError(f"not an e-mail address: {addr!r}")
            if addr.lower() in seen:
                raise ValueError(f"{addr} is listed twice")
            seen.add(addr.lower())
        return v

    @model_validator(mode="after")
    def _ports(self) -> ObservabilityConfig:
        if self.grafana_port == self.prometheus_port:
            raise _KeyedError("prometheus_port", f"port {self.prometheus_port} is already taken by grafana_port")
        return self


# Fixed addresses on the local Docker network: the gateway is .1, the proxy .2, brokers from .10.
# Fixed addresses keep a restarted container where nginx (which resolves names once) expects it.
LOCAL_PROXY_HOST = 2
LOCAL_FIRST_NODE_HOST = 10

_TOP_LEVEL_SECRETS = ("cookie", "dashboard_password", "license", "jwt_secret")
"""Secrets the model only records as present (their values never enter it)."""

SECRET_KEYS: frozenset[str] = frozenset({*_TOP_LEVEL_SECRETS, "users"})
"""Top-level keys that hold secrets: the stack file must store them encrypted
(`pulumi config set --secret`, or `--secret --path` for each entry of a map). Add every new
secret key here; parse() enforces it against the keys the engine marks secret."""

OFFLINE_SECRET_PREFIX = "offline-secret:"  # noqa: S105 - a marker, not a secret
"""The offline plan cannot decrypt `{secure: …}` values; it stands in ``offline-secret:<key path>``."""


def _check_auth(cfg: StackConfig) -> None:
    """Auth rules that depend on other sections (engine, access, local)."""
    auth = cfg.auth
    if auth.allow_anonymous:
        if cfg.role == "regional" and any(_network(n).prefixlen == 0 for n in cfg.access.client_cidrs):
            raise _KeyedError(
                "auth.allow_anonymous",
                "anonymous clients with world-open access.client_cidrs would let anyone on the internet in; narrow client_cidrs",
            )
        if cfg.role == "local" and not ipaddress.IPv4Address(cfg.local_settings.bind).is_loopback:
            raise _KeyedError(
                "auth.allow_anonymous", f"anonymous clients with local.bind {cfg.local_settings.bind} open the broker to the LAN"
            )
    if auth.mechanism == "jwt":
        if not cfg.is_emqx:
            raise _KeyedError("auth.mechanism", "jwt is implemented for emqx only (vernemq has no JWT plugin in its image)")
        jwks = auth.jwt is not None and auth.jwt.jwks_endpoint is not None
        if cfg.jwt_secret and jwks:
            raise _KeyedError(
                "jwt_secret", "auth.jwt.jwks_endpoint is set too; an authenticator checks one kind of key: set one or the other"
            )
        if not cfg.jwt_secret and not jwks:
            raise _KeyedError(
                "auth.jwt",
                "jwt needs a key: `pulumi config set --secret mqtt-cluster:jwt_secret …` (HMAC) or auth.jwt.jwks_endpoint",
            )
    if auth.bridge_topics is not None:
        if cfg.role != "regional":
            raise _KeyedError("auth.bridge_topics", f"only regional stacks take bridges from peer regions (this one is {cfg.role})")
        if not cfg.is_emqx:
            raise _KeyedError("auth.bridge_topics", "cross-region bridges are EMQX bridges; vernemq regions cannot be bridged")
        if auth.mechanism != "password":
            raise _KeyedError(
                "auth.bridge_topics",
                f"peers' bridges log in with a password; mechanism {auth.mechanism} would refuse them (use mechanism password)",
            )
    if BRIDGE_USER in cfg.users:
        raise _KeyedError("users", f"{BRIDGE_USER} is reserved for the bridges of peer regions (auth.bridge_topics)")
    if cfg.jwt_secret and auth.mechanism != "jwt":
        raise _KeyedError("jwt_secret", f"only used with auth.mechanism jwt (got {auth.mechanism})")
    if auth.mechanism == "mtls":
        _mtls_alone(cfg)
    if auth.uses_mtls:
        if cfg.role == "regional" and cfg.load_balancer.kind == "nlb":
            _mtls_passthrough(cfg)
        elif cfg.role == "regional" and cfg.load_balancer.kind not in ("nginx", "haproxy"):
            raise _KeyedError(
                "auth.mechanism",
                f"{auth.mechanism} needs load_balancer.kind nginx, haproxy or nlb: {cfg.load_balancer.kind} TLS listeners cannot verify client certificates",
            )
        if cfg.role == "regional" and cfg.load_balancer.plain_mqtt:
            raise _KeyedError(
                "load_balancer.plain_mqtt", f"plain MQTT would bypass the device certificate check of auth.mechanism {auth.mechanism}"
            )
    if not cfg.is_emqx:
        # vernemq/vernemq 2.1.1 apps/vmq_acl/docs/vmq_acl.rst:29-57: only allow lines (topic/pattern),
        # per `user`; no deny, no client-id subjects, no "allow when nothing matches".
        for rule in auth.acl:
            if rule.permission == "deny":
                raise _KeyedError("auth.acl.permission", "vernemq's ACL file has allow rules only (anything unlisted is denied)")
            if rule.who.startswith("clientid:"):
                raise _KeyedError("auth.acl.who", "vernemq's ACL file names users, not client ids (use ${clientid} in a topic instead)")
        if auth.no_match != "deny":
            raise _KeyedError("auth.no_match", "vernemq denies whatever its ACL file does not allow")


def tls_passthrough(cfg: StackConfig) -> bool:
    """Device certificates behind an NLB: its TLS listeners cannot ask for a client certificate, so
    a TCP listener passes TLS through to the brokers' own SSL listener, which verifies it."""
    return cfg.role == "regional" and cfg.auth.uses_mtls and cfg.load_balancer.kind == "nlb"


def _mtls_passthrough(cfg: StackConfig) -> None:
    if not cfg.is_emqx:
        raise _KeyedError("auth.mechanism", f"{cfg.auth.mechanism} behind nlb is implemented for emqx only; use load_balancer.kind haproxy")
    if cfg.auth.mechanism == "mtls":
        raise _KeyedError(
            "auth.mechanism",
            "mtls alone behind nlb would let a certificate without a CN choose its own username; use password+mtls, or haproxy",
        )
    if cfg.load_balancer.certificate_arn:
        raise _KeyedError(
            "load_balancer.certificate_arn",
            "with device certificates the nlb passes TLS through and the brokers need the server key, which ACM never releases; remove it",
        )


def _mtls_alone(cfg: StackConfig) -> None:
    """Device certificates as the only credential: the proxy verifies the certificate and hands its
    CN to the brokers as the MQTT username. Only haproxy can: it sends the CN in the SSL TLV of a
    PROXY v2 header ("send-proxy-v2-ssl-cn", haproxy/haproxy v2.6.0 doc/configuration.txt:15536-15546),
    which EMQX reads into the client's username with mqtt.peer_cert_as_username = cn (emqx/esockd
    5.13.0 src/esockd_proxy_protocol.erl:177-178,211-212, src/esockd_transport.erl:323-324;
    emqx/emqx v5.8.6 apps/emqx/src/emqx_channel.erl:341-355)."""
    if cfg.role == "global":
        return
    if cfg.role == "local":
        raise _KeyedError(
            "auth.mechanism",
            "mtls alone needs the certificate CN in a PROXY v2 header, which the local proxy does not send; use password+mtls",
        )
    front = cfg.load_balancer.kind
    if front == "nginx":
        # nginx writes PROXY v1 only ("PROXY TCP4 ...", nginx/nginx release-1.22.1 src/core/ngx_proxy_protocol.c:241): no TLVs.
        raise _KeyedError(
            "auth.mechanism",
            "mtls alone needs the certificate CN at the brokers and nginx cannot pass it on (PROXY v1 only); "
            "use load_balancer.kind haproxy, or password+mtls",
        )
    if front != "haproxy":
        return  # nlb/elb: refused below with every mechanism that verifies device certificates
    if not cfg.is_emqx:
        # vernemq/vernemq 2.1.1 apps/vmq_server/src/vmq_mqtt_fsm.erl:627-633,677-680: the CN from the PROXY
        # header replaces the username, but auth_on_register still asks vmq_passwd for a password.
        raise _KeyedError(
            "auth.mechanism",
            "mtls alone is implemented for emqx only (vernemq still checks a password for the certificate's CN); use password+mtls",
        )
    if not cfg.load_balancer.proxy_protocol:
        raise _KeyedError(
            "load_balancer.proxy_protocol",
            "auth.mechanism mtls passes the certificate CN to the brokers in the PROXY v2 header: set load_balancer.proxy_protocol: true",
        )


# "The connection idle timeout for TLS listeners is 350 seconds and can't be modified" (and 350 s is
# the TCP listeners' default) - Network Load Balancers guide, update-idle-timeout.
NLB_IDLE_TIMEOUT = 350
# Classic ELB idle timeout: 1 to 4000 seconds - Classic Load Balancers guide, config-idle-timeout.
ELB_MAX_IDLE_TIMEOUT = 4000
# Tags the program sets itself (base_tags, and Name/Role/Node/Tier per resource).
_PROGRAM_TAGS = ("Project", "Environment", "Stack", "ManagedBy", "Name", "Role", "Node", "Tier")
# EC2 tag restrictions: 50 per resource, keys 1-128 and values 0-256 characters of letters, digits,
# spaces and _ . : / = + - @ (EC2 user guide, Using_Tags "Tag restrictions").
_TAG_CHARS = re.compile(r"[\w .:/=+\-@]*")
_MAX_USER_TAGS = 50 - len(_PROGRAM_TAGS)


class StackConfig(_Model):
    """Everything one stack file can say."""

    stack: str
    environment: str
    role: Literal["regional", "global", "local"] = "regional"
    region: str | None = None
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    brokers: BrokersConfig = Field(default_factory=BrokersConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    load_balancer: LoadBalancerConfig = Field(default_factory=LoadBalancerConfig)
    links: LinksConfig | None = None
    local: LocalConfig | None = None
    auth: AuthConfig = Field(default_factory=AuthConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    tags: dict[str, str] = Field(default_factory=dict)
    # Secrets: whether the stack supplies them. Values never enter the model (see settings.py).
    cookie: bool = False
    dashboard_password: bool = False
    license: bool = False
    jwt_secret: bool = False
    users: list[str] = Field(default_factory=list)
    """Device usernames from the secret map `mqtt-cluster:users` (passwords never enter the model)."""

    @field_validator("users")
    @classmethod
    def _usernames(cls, v: list[str]) -> list[str]:
        for name in v:
            if not USERNAME_RE.fullmatch(name):
                raise ValueError(f"not a usable username {name!r}: letters, digits, '_', '.', '@', '-' (no ':', '/', '+', '#')")
        return v

    @model_validator(mode="after")
    def _auth_rules(self) -> StackConfig:
        _check_auth(self)
        return self

    @field_validator("environment")
    @classmethod
    def _env(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", v):
            raise ValueError(f"lower-case letters, digits and '-', starting with a letter (got {v!r})")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k.lower().startswith("aws:"):
                raise ValueError(f"tag keys may not start with 'aws:' (got {k!r})")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> StackConfig:
        self._check_tags()
        if self.role == "regional":
            if not self.region:
                raise _KeyedError("aws:region", "a regional stack needs a region")
            if self.region not in REGION_AZS:
                raise _KeyedError("aws:region", f"unknown or unsupported region {self.region!r}")
            self._check_aws_limits()
            offered = len(REGION_AZS[self.region])
            if self.network.azs > offered:
                raise _KeyedError("network.azs", f"{self.region} offers {offered} availability zones (got {self.network.azs})")
            from components.netplan import plan_subnets  # pure; imported late to avoid a cycle

            try:
                plan_subnets(self.network.cidr, self.network.azs, self.network.subnet_bits)
            except ValueError as exc:
                raise _KeyedError("network.cidr", str(exc)) from None
            if self.access.bastion and not self.access.admin_cidrs:
                raise _KeyedError("access.admin_cidrs", "a bastion needs at least one admin network to admit SSH from")
            if self.access.transport == "ssh" and not self.access.bastion:
                raise _KeyedError(
                    "access.transport",
                    "ssh reaches the private broker hosts only through the bastion; set access.bastion: true "
                    "(with admin_cidrs) or use transport: ssm",
                )
        if self.role == "global" and self.links is None:
            raise _KeyedError("links", "a global stack needs links (the regional stacks to tie together)")
        if self.role != "global" and self.links is not None:
            raise _KeyedError("links", "only a stack with role global links regions")
        if self.role != "local" and self.local is not None:
            raise _KeyedError("local", "only a stack with role local runs on Docker")
        if self.role == "local":
            for section in ("network", "access", "load_balancer"):
                if section in self.model_fields_set:
                    raise _KeyedError(section, "not used by a local stack (it runs on Docker); remove it or use the local section")
            nodes = self.brokers.count + self.brokers.replicants
            # Fixed addresses come from the lower half of the subnet; Docker hands out the upper half.
            room = ipaddress.ip_network(self.local_settings.subnet).num_addresses // 2 - LOCAL_FIRST_NODE_HOST
            if nodes > room:
                raise _KeyedError("local.subnet", f"has room for {room} broker containers, the stack asks for {nodes}")
        if self.role == "global":
            for section in ("network", "access", "load_balancer", "brokers"):
                if section in self.model_fields_set:
                    raise _KeyedError(section, "not used by a global stack (it links regional stacks; set it in those)")
        if self.brokers.cluster_with is not None:
            if self.role != "regional":
                raise _KeyedError("brokers.cluster_with", "only a regional stack joins another stack's cluster")
            if self.brokers.cluster_with == self.stack:
                raise _KeyedError("brokers.cluster_with", "a stack cannot share a cluster with itself")
            if self.cookie:
                raise _KeyedError(
                    "cookie", f"the cookie comes from {self.brokers.cluster_with} (brokers.cluster_with); do not set one here"
                )
        enterprise_replicants = self.is_emqx and self.brokers.replicants and self.brokers.edition == "enterprise"
        if self.role in ("regional", "local") and enterprise_replicants and not self.license:
            # Without a key the Enterprise image runs its built-in evaluation license (emqx/emqx
            # e5.8.6-hotfix1 apps/emqx_license/include/emqx_license.hrl:13-14: "limited to ~p concurrent
            # sessions", "not permitted for production use"; single node from 5.9, e5.9.0 same file:94).
            raise _KeyedError(
                "license",
                "EMQX replicants run on the Enterprise edition, which needs a license key: "
                "`pulumi config set --secret mqtt-cluster:license …`",
            )
        if self.role in ("regional", "local") and self.brokers.needs_license and not self.license:
            raise _KeyedError(
                "license",
                f"emqx {self.brokers.effective_version} needs a license key: "
                "`pulumi config set --secret mqtt-cluster:license …`, or use a 5.8.x version",
            )
        return self

    @model_validator(mode="after")
    def _observability_fits(self) -> StackConfig:
        if self.role == "global" and "observability" in self.model_fields_set:
            raise _KeyedError("observability", "not used by a global stack (each regional stack watches itself)")
        if self.role == "local":
            local, obs = self.local_settings, self.observability
            taken = {local.mqtt_port: "local.mqtt_port", local.mqtts_port: "local.mqtts_port", local.dashboard_port: "local.dashboard_port"}
            if self.brokers.websocket:
                taken[local.wss_port] = "local.wss_port"
            for key, port in (("grafana_port", obs.grafana_port), ("prometheus_port", obs.prometheus_port)):
                if port in taken:
                    raise _KeyedError(f"observability.{key}", f"port {port} is already taken by {taken[port]}")
        return self

    def _check_tags(self) -> None:
        if len(self.tags) > _MAX_USER_TAGS:
            raise _KeyedError("tags", f"at most {_MAX_USER_TAGS} tags (AWS allows 50 per resource, the program sets the rest)")
        for k, v in self.tags.items():
            if k in _PROGRAM_TAGS:
                raise _KeyedError(f"tags.{k}", "set by the program on every resource; choose another key")
            if not 1 <= len(k) <= 128 or not _TAG_CHARS.fullmatch(k):
                raise _KeyedError(f"tags.{k}", "tag keys are 1-128 letters, digits, spaces and _ . : / = + - @")
            if len(v) > 256 or not _TAG_CHARS.fullmatch(v):
                raise _KeyedError(f"tags.{k}", "tag values are at most 256 letters, digits, spaces and _ . : / = + - @")

    def _check_aws_limits(self) -> None:
        """What AWS or the providers would reject mid-deploy, refused before any resource."""
        from components.renderers.proxy import idle_timeout  # pure; imported late to avoid a cycle

        lb, keepalive = self.load_balancer, self.brokers.keepalive
        if lb.certificate_arn:
            cert_region = lb.certificate_arn.split(":")[3]
            if cert_region != self.region:
                raise _KeyedError(
                    "load_balancer.certificate_arn",
                    f"is in {cert_region}; a load balancer in {self.region} needs a certificate from {self.region}",
                )
        # The load balancer must never cut a session the broker still keeps: the program gives
        # idle sessions 2 x keepalive + 30 s (the broker gives up at 1.5 x keepalive).
        if lb.kind == "nlb" and idle_timeout(keepalive) > NLB_IDLE_TIMEOUT:
            raise _KeyedError(
                "brokers.keepalive",
                f"an NLB closes TLS connections idle for {NLB_IDLE_TIMEOUT} s (fixed); keepalive must be at most "
                f"{(NLB_IDLE_TIMEOUT - 30) // 2} so 2 x keepalive + 30 fits (got {keepalive})",
            )
        if lb.kind == "elb" and idle_timeout(keepalive) > ELB_MAX_IDLE_TIMEOUT:
            raise _KeyedError(
                "brokers.keepalive",
                f"a classic ELB idle timeout is at most {ELB_MAX_IDLE_TIMEOUT} s; keepalive must be at most "
                f"{(ELB_MAX_IDLE_TIMEOUT - 30) // 2} so 2 x keepalive + 30 fits (got {keepalive})",
            )
        if lb.validated_by == self.stack:
            raise _KeyedError("load_balancer.validated_by", "names this stack; leave it out to own the validation records")
        if self.access.refresh_ami is not None:
            from components.renderers.nodes import node_specs  # pure; imported late to avoid a cycle

            hosts = [n.host for n in node_specs(self)]
            if lb.kind in ("nginx", "haproxy"):
                hosts += [f"{lb.kind}-{i + 1}" for i in range(lb.proxies)]
            if self.access.bastion:
                hosts.append("bastion")
            if self.access.refresh_ami not in hosts:
                raise _KeyedError("access.refresh_ami", f"no host {self.access.refresh_ami!r} in this stack (hosts: {', '.join(hosts)})")

    @property
    def local_settings(self) -> LocalConfig:
        """The local section, defaults filled in (a local stack may omit it)."""
        return self.local or LocalConfig()

    @property
    def is_emqx(self) -> bool:
        return self.brokers.engine == "emqx"

    @property
    def base_tags(self) -> dict[str, str]:
        return {
            "Project": PROJECT,
            "Environment": self.environment,
            "Stack": self.stack,
            "ManagedBy": "pulumi",
            **self.tags,
        }

    @property
    def cluster_name(self) -> str:
        """EMQX cluster.name: shared by every stack of a cross-region cluster."""
        return f"mqtt-{self.brokers.cluster_with or self.stack}"

    @property
    def zone_name(self) -> str:
        """Private DNS zone of the node names, e.g. prod-eu-central-1.mqtt.internal."""
        return f"{self.stack}.mqtt.internal"


class _KeyedError(ValueError):
    """A model-level problem that belongs to one key (relative to the model raising it)."""

    def __init__(self, key: str, problem: str):
        self.key, self.problem = key, problem
        super().__init__(problem)


def _describe(err: dict[str, Any]) -> str:
    t, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    shown = json.dumps(given) if isinstance(given, (int, float, str, bool, type(None))) else type(given).__name__
    if t == "extra_forbidden":
        return "unknown key"
    if t in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))} (got {shown})"
    if t in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))} (got {shown})"
    if t == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {shown})"
    if t in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number (got {shown})"
    if t in ("bool_type", "bool_parsing"):
        return f"must be true or false (got {shown})"
    if t in ("string_type",):
        return f"must be a string (got {shown})"
    if t in ("list_type",):
        return f"must be a list (got {shown})"
    if t in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys (got {shown})"
    if t == "too_short":
        return f"needs at least {ctx.get('min_length')} entries"
    if t == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']} (got {shown})"


def _key_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    top = parts[0] if parts else ""
    if top == "region":
        return "aws:region"
    return f"{PROJECT}:{'.'.join(parts)}"


def _tag_values(tags: Any) -> Any:
    """`pulumi config set --path 'mqtt-cluster:tags.CostCenter' 1234` stores the number 1234: with
    --path the CLI coerces "true"/"false" and decimal integers (# pulumi/pulumi v3.259.0
    pkg/cmd/pulumi/config/config.go:863-878, :901; sdk/go/common/resource/config/value.go:145-166,
    object.go:566-593 coerce()). AWS tag values are strings, so such a value is taken as its text."""
    if not isinstance(tags, dict):
        return tags
    out = {}
    for k, v in tags.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, float) and v.is_integer():
            v = str(int(v))
        elif isinstance(v, (int, float)):
            v = str(v)
        out[k] = v
    return out


def _secret_leaves(value: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the offline plan's placeholders for encrypted values nested in mappings."""
    if isinstance(value, str) and value.startswith(OFFLINE_SECRET_PREFIX) and len(path) > 1:
        return {path}
    if isinstance(value, dict):
        return set().union(*(_secret_leaves(v, (*path, str(k))) for k, v in value.items()))
    return set()


def _without(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = dict(data)
    if len(path) == 1:
        out.pop(path[0], None)
    elif isinstance(out.get(path[0]), dict):
        out[path[0]] = _without(out[path[0]], path[1:])
    return out


def _with(model: Any, path: tuple[str, ...], value: Any) -> Any:
    if not isinstance(model, BaseModel):
        return model
    if len(path) == 1:
        return model.model_copy(update={path[0]: value})
    return model.model_copy(update={path[0]: _with(getattr(model, path[0], None), path[1:], value)})


def _error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, _KeyedError):
        key = original.key
        prefix = [str(p) for p in loc if not isinstance(p, int)]
        full = key if key.startswith("aws:") else f"{PROJECT}:{'.'.join([*prefix, key])}"
        return ConfigError(source, full, original.problem)
    key = _key_of(loc)
    problem = _describe(err)
    if err["type"] == "extra_forbidden" and len(loc) == 1 and "." in str(loc[0]):
        if str(loc[0]).split(".")[0] in StackConfig.model_fields:
            # `pulumi config set mqtt-cluster:brokers.count 5` without --path stores a key named
            # "brokers.count" (# pulumi/pulumi v3.259.0 pkg/cmd/pulumi/config/config.go:774-777 --path,
            # :807 ParseConfigKey(ws, args[0], c.Path)).
            problem = f"unknown key; did you mean `pulumi config set --path '{key}' …`?"
    return ConfigError(source, key, problem)


def parse(
    raw: dict[str, Any],
    *,
    stack: str,
    source: str,
    region: str | None = None,
    secret_keys: Collection[str] | None = None,
) -> StackConfig:
    """Validate raw stack config (top-level keys without the project prefix) into the model.

    ``secret_keys``: the (unprefixed) keys the engine marks secret — a key of :data:`SECRET_KEYS`
    outside it was written in clear. Values starting with :data:`OFFLINE_SECRET_PREFIX` inside a
    section are encrypted values the offline plan cannot read: their format is not checked.
    Raises :class:`ConfigError` with one line naming ``source``, the key and the problem.
    """
    if "users" in raw and not isinstance(raw["users"], dict):
        raise ConfigError(
            source,
            f"{PROJECT}:users",
            "must be a secret map of username to password (pulumi config set --secret --path 'mqtt-cluster:users.NAME' …)",
        )
    if secret_keys is not None:
        for k in sorted(SECRET_KEYS & set(raw) - set(secret_keys)):
            raise ConfigError(
                source,
                f"{PROJECT}:{k}",
                f"is a secret but stored in clear; remove it and run `pulumi config set --secret {PROJECT}:{k} …`",
            )
    data = dict(raw)
    data.setdefault("environment", stack)
    data["stack"] = stack
    if region is not None:
        data["region"] = region
    if "tags" in data:
        data["tags"] = _tag_values(data["tags"])
    for k in _TOP_LEVEL_SECRETS:
        if k in data:
            data[k] = True
    if "users" in data:
        users = data["users"]
        if not isinstance(users, dict):
            raise ConfigError(
                source,
                f"{PROJECT}:users",
                "must be a secret map of username to password (pulumi config set --secret --path 'mqtt-cluster:users.NAME' …)",
            )
        # The names only: each value is a password (a secret the model never holds).
        data["users"] = sorted(str(u) for u in users)
    unreadable = _secret_leaves(data)
    skipped: dict[tuple[str, ...], Any] = {}
    while True:  # bounded: each pass skips one more of the finitely many unreadable values
        try:
            cfg = StackConfig.model_validate(data)
            break
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            path = tuple(str(p) for p in err["loc"])
            if path in unreadable and path not in skipped and not isinstance((err.get("ctx") or {}).get("error"), _KeyedError):
                skipped[path] = _lookup(data, path)
                data = _without(data, path)
                continue
            raise _error(exc, source) from None
    for path, value in skipped.items():
        cfg = _with(cfg, path, value)
    if skipped:
        _recheck(cfg, source)
    return cfg


def _recheck(cfg: StackConfig, source: str) -> None:
    """Run the cross-key rules again with the unreadable values back in place (only their format
    was skipped): e.g. an encrypted certificate_arn on nginx hosts is still refused."""
    sections: list[tuple[str, BaseModel]] = [(name, getattr(cfg, name)) for name in type(cfg).model_fields]
    for prefix, model in [*((p, m) for p, m in sections if isinstance(m, BaseModel)), ("", cfg)]:
        for dec in type(model).__pydantic_decorators__.model_validators.values():
            if dec.info.mode != "after":
                continue
            try:
                dec.func(model)
            except _KeyedError as exc:
                key = exc.key if exc.key.startswith("aws:") or not prefix else f"{prefix}.{exc.key}"
                raise ConfigError(source, key if key.startswith("aws:") else f"{PROJECT}:{key}", exc.problem) from None
            except ValueError as exc:
                raise ConfigError(source, f"{PROJECT}:{prefix}" if prefix else PROJECT, str(exc)) from None
            except (IndexError, KeyError, TypeError, AttributeError):
                continue  # a rule that reads inside the unreadable value (e.g. an ARN's region): not checkable offline


def _lookup(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for p in path:
        value = value[p]
    return value


def _placeholders(value: Any, path: str) -> Any:
    """Encrypted values (`{secure: …}`, at any depth) as the offline plan's marked placeholders."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("secure"), str):
            return f"{OFFLINE_SECRET_PREFIX}{path}"
        return {k: _placeholders(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def stack_file_config(doc: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A stack file's document as parse() input: unprefixed keys, encrypted values as placeholders."""
    raw: dict[str, Any] = {}
    region = None
    for key, value in (doc.get("config") or {}).items():
        key = str(key)
        if key == "aws:region":
            region = str(value)
            continue
        if ":" in key and not key.startswith(f"{PROJECT}:"):
            continue
        name = key.split(":", 1)[-1]
        raw[name] = _placeholders(value, name)
    return raw, region
