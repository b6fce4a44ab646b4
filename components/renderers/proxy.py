"""nginx.conf and haproxy.cfg for TLS termination in front of the brokers.

The same functions render the files for AWS proxy hosts, the local Docker stack and the loopback
data-plane tests; only paths, addresses and sizes differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components import config as c
from components.renderers import TEMPLATES, render


@dataclass(frozen=True)
class CheckTiming:
    """Active broker checks, the same for haproxy's own and nginx's checker (seconds).

    Worst-case detection of a broker that stops answering just after a passing check: the next
    check starts after ``inter`` and fails after ``timeout``; the following ones come every
    ``fastinter`` and each fails after ``timeout`` until ``fall`` have failed in a row.
    ``fall`` 2 rides out a pause shorter than one failed check (about 1.5 s); ``rise`` 3 wants
    three answers in a row before a flapping broker gets devices again.
    """

    inter: float = 1.0
    fastinter: float = 0.5
    downinter: float = 2.0
    timeout: float = 1.0
    fall: int = 2
    rise: int = 3

    @property
    def detection_s(self) -> float:
        return self.inter + self.timeout + (self.fall - 1) * (self.fastinter + self.timeout)

    def haproxy(self) -> str:
        ms = lambda s: f"{round(s * 1000)}ms"  # noqa: E731
        return f"inter {ms(self.inter)} fastinter {ms(self.fastinter)} downinter {ms(self.downinter)} fall {self.fall} rise {self.rise}"


CHECK = CheckTiming()
CONNECT_TIMEOUT_S = 1
"""Proxy -> broker connect timeout: a vanished broker (SYNs unanswered) costs a device this much
before its CONNECT is retried on another broker."""
CHECKER_PATH = "/usr/local/sbin/mqtt-upstream-check"
CHECKER_UNIT = "mqtt-upstream-check.service"
ADMIN_SOCKET = "/run/haproxy-admin.sock"
"""haproxy's admin socket on a proxy host (root only): a rollout drains a broker through it."""
DRAINED_FILE = "/etc/mqtt-cluster/drained"
"""nginx proxy hosts: brokers (one host name a line) the checker keeps down while a rollout drains them."""


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    mqtt_port: int = c.MQTT_PORT
    ws_port: int = c.WS_PORT


@dataclass(frozen=True)
class ProxySettings:
    backends: list[Backend]
    listen: str = "0.0.0.0"  # noqa: S104 - a proxy host serves devices; its security group narrows who
    mqtts_port: int = c.MQTTS_PORT
    wss_port: int | None = c.WSS_PORT
    plain_port: int | None = None
    proxy_protocol: bool = False
    keepalive: int = 60
    maxconn: int = 100_000
    """Concurrent client connections the proxy accepts."""
    cert: str = "/etc/mqtt-cluster/tls/server.crt"
    key: str = "/etc/mqtt-cluster/tls/server.key"
    pem: str = "/etc/mqtt-cluster/tls/server.pem"
    """haproxy wants certificate and key in one file."""
    pid: str = "/run/mqtt-proxy.pid"
    error_log: str = "/var/log/nginx/error.log"
    access_log: str = "/var/log/nginx/mqtt-access.log"
    log_target: str = "/dev/log"
    user: str | None = None
    workers: str = "auto"
    daemon: bool = True
    modules: list[str] = field(default_factory=list)
    stats_bind: str | None = None
    admin_socket: str | None = None
    """haproxy: a unix stats socket at level admin (mode 600: root only) for draining a broker."""
    balance: str = "leastconn"
    resolver: str | None = None
    """DNS server haproxy re-resolves backend names with (the VPC resolver on AWS)."""
    check_client_id: str = "mqtt-cluster-check"
    client_ca: str | None = None
    """Device CA bundle (auth.mechanism password+mtls): the proxy verifies client certificates."""
    send_cn: bool = False
    """auth.mechanism mtls (haproxy): the verified certificate's CN travels to the brokers in the
    PROXY v2 header and becomes the MQTT username there."""
    cn_pattern: str = "^" + c.USERNAME_RE.pattern + "$"
    """What a device certificate's CN must look like to be accepted as a username (send_cn)."""


def idle_timeout(keepalive: int) -> int:
    """Seconds a silent connection may live in the proxy: twice the keepalive plus margin, so the
    broker (1.5x keepalive) always decides first."""
    return keepalive * 2 + 30


def mqtt_connect_packet(client_id: str, keepalive: int = 60) -> str:
    """A minimal MQTT 3.1.1 CONNECT (clean session) as hex, for haproxy's tcp-check."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big")
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    if len(body) > 127:
        raise ValueError("client id too long for a one-byte remaining length")
    return (b"\x10" + bytes([len(body)]) + body).hex()


def nginx_conf(s: ProxySettings) -> str:
    nofile = max(s.maxconn * 2 + 1024, 4096)
    return render(
        "nginx.conf.j2",
        **s.__dict__,
        nofile=nofile,
        worker_connections=s.maxconn * 2 + 512,
        idle_timeout=idle_timeout(s.keepalive),
        connect_timeout=CONNECT_TIMEOUT_S,
    )


def upstream_checker() -> str:
    """The nginx kind's active MQTT checker (python3, stdlib only)."""
    return (TEMPLATES / "mqtt-upstream-check.py").read_text()


def upstream_checker_args(s: ProxySettings, conf: str = "/etc/nginx/nginx.conf", timing: CheckTiming = CHECK) -> list[str]:
    args = ["--conf", conf, "--upstream", "mqtt_brokers"]
    if s.wss_port:
        args += ["--follow", "mqtt_ws"]
    if s.proxy_protocol:
        args.append("--proxy-protocol")
    args += ["--inter", f"{timing.inter:g}", "--fastinter", f"{timing.fastinter:g}", "--timeout", f"{timing.timeout:g}"]
    args += ["--fall", str(timing.fall), "--rise", str(timing.rise), "--client-id", s.check_client_id]
    args += ["--drained", DRAINED_FILE]
    return args


def upstream_checker_unit(s: ProxySettings, conf: str = "/etc/nginx/nginx.conf") -> str:
    """systemd unit running the checker next to nginx on a proxy host."""
    return render("mqtt-upstream-check.service.j2", checker=CHECKER_PATH, args=upstream_checker_args(s, conf))


def haproxy_cfg(s: ProxySettings) -> str:
    return render(
        "haproxy.cfg.j2",
        **s.__dict__,
        idle_timeout=idle_timeout(s.keepalive),
        connect_packet=mqtt_connect_packet(s.check_client_id),
        check_timing=CHECK.haproxy(),
        check_timeout=f"{CHECK.timeout:g}",
        connect_timeout=CONNECT_TIMEOUT_S,
    )


# Memory per proxied TLS connection, measured by bench/lb.py on this design (rounded up), and
# what is left for it on common proxy instance types.
KIB_PER_TLS_CONNECTION = 48
INSTANCE_MEMORY_MIB = {
    "t3.micro": 1024,
    "t3.small": 2048,
    "t3.medium": 4096,
    "t3.large": 8192,
    "c6i.large": 4096,
    "c6i.xlarge": 8192,
    "c7g.large": 4096,
    "m6i.large": 8192,
}


def proxy_start_script(**values: object) -> str:
    return render("proxy-start.sh.j2", **values)


def maxconn_for(instance_type: str) -> int:
    mem = INSTANCE_MEMORY_MIB.get(instance_type, 4096)
    usable_kib = (mem - 512) * 1024  # leave room for the OS
    return max(10_000, usable_kib // KIB_PER_TLS_CONNECTION // 1000 * 1000)
