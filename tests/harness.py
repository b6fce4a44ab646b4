"""Loopback data plane: real mosquitto brokers behind the rendered nginx/haproxy configs.

Everything binds to 127.0.0.0/8 ("hosts" 127.0.0.2, 127.0.0.3 …); every process is started here and
stopped here by PID. Used by tests/test_dataplane.py and bench/lb.py.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import pwd
import random
import re
import resource
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from components import config as c
from components.renderers.proxy import Backend, ProxySettings, haproxy_cfg, nginx_conf

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


# Every loopback "host" the tests use. The labs reuse one port number on several of them, and
# mosquitto's WebSocket listener binds the port on every loopback address: a port is handed out
# only when it is free on all of them, so one lab cannot collide with another's listener.
LAB_HOSTS = tuple(f"127.0.0.{i}" for i in range(1, 10))
# The three broker "hosts" of the proxy labs (tests/test_dataplane.py, test_faults.py, bench/faults.py).
BROKER_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listen_ports() -> range:
    """Ports for the labs' listeners: below the kernel's ephemeral range, which the source ports of
    outgoing connections (bridges, proxies, clients) come from, so none of those can take a port
    between the moment it is handed out here and the moment its listener binds it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(max(1024, low - 12000), low)


_LISTEN_PORTS = _listen_ports()
_handed_out: set[int] = set()
_port_picks = random.Random()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on every lab address and never handed out before in this process: a lab picks
    several ports before it starts anything, and each must be its own."""
    del host  # free on every lab address, so on this one
    for _ in range(500):
        port = _port_picks.choice(_LISTEN_PORTS)
        if port not in _handed_out and all(_bindable(h, port) for h in LAB_HOSTS):
            _handed_out.add(port)
            return port
    raise RuntimeError("no port free on every lab address")


def until(cond, timeout: float, interval: float = 0.05) -> bool:
    """Whether ``cond()`` came true within ``timeout`` seconds, asked every ``interval``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    if not until(lambda: _accepts(host, port), timeout):
        raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def wait_bridged(log: Path, client_ids: list[str], timeout: float = 40.0) -> None:
    """Until the first broker's own log shows every bridge connected to it.

    mosquitto 2.0 retries a bridge whose first connect failed only after 5-30 s (restart_timeout's
    default, jittered back-off): a bridge that raced its remote's listener stays down through the
    first tests and a message published on the other broker never crosses. The log line is the
    broker's ("New bridge connected from <addr> as <hostname>.bridge-1 (p2, c1, k60)." or, with
    remote_clientid set, "... as bridge-1 ..."), read here from the process this lab started.
    """

    def pending() -> list[str]:
        text = log.read_text(errors="replace") if log.exists() else ""
        return [i for i in client_ids if not re.search(rf"connected from \S+ as (\S+\.)?{re.escape(i)} ", text)]

    if not until(lambda: not pending(), timeout, 0.1):
        raise TimeoutError(f"bridges {pending()} not connected to the first broker within {timeout}s (see {log})")


def proc_stats():
    """(pid, the fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, …) of every
    live process; one that exits while read is skipped."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue


def make_certs(d: Path) -> dict[str, Path]:
    """A CA and a server certificate for localhost / 127.0.0.1 (ECDSA P-256)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, pem = d / "server.key", d / "server.csr", d / "server.crt", d / "server.pem"
    ext = d / "ext.cnf"
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    new_ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(
        "openssl",
        "req",
        "-x509",
        *new_ec_key,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
        "-days",
        "2",
        "-subj",
        "/CN=mqtt-cluster test CA",
    )
    run("openssl", "req", *new_ec_key, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(crt),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return {"ca": ca_crt, "crt": crt, "key": key, "pem": pem}


# PROXY protocol framing, from the specification haproxy ships (haproxy/haproxy v2.6.0
# doc/proxy-protocol.txt): a v1 line starts with "PROXY " and is at most 107 bytes with its CRLF
# (:266-276); the v2 signature (:335); a v2 LOCAL command, which haproxy's health checks send,
# carries no client and the receiver uses the connection's own endpoints (:346-350); families
# \x11 TCP over IPv4 and \x21 TCP over IPv6 (:417-423).
PP_V1_PREFIX = b"PROXY "
PP_V1_MAX = 107
PP_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# A listener with proxy_protocol on drops a connection whose header has not arrived within
# proxy_protocol_timeout, default "3s": emqx/emqx v5.8.6 apps/emqx/src/emqx_schema.erl:1899-1904
# (components/templates/emqx.conf.j2 sets the same 3s).
PROXY_PROTOCOL_TIMEOUT = 3.0


class ProxyHeaderError(Exception):
    pass


@dataclass
class Arrival:
    """One connection as a broker listener saw it."""

    peer: tuple[str, int]
    header: str | None = None
    """"v1", "v2", "v2-local" (a health check), "v1-unknown", or None (no header)."""
    client: tuple[str, int] | None = None
    """The client the PROXY header announced."""
    forwarded_for: str | None = None
    """X-Forwarded-For of a WebSocket upgrade request."""
    dropped: str | None = None
    """Why the listener closed the connection before the broker saw a byte of it."""
    relayed: bool = False

    @property
    def client_address(self) -> str:
        """The address the broker takes for the client: the PROXY header's, else the TCP peer."""
        return self.client[0] if self.client else self.peer[0]


def _parse_v1(line: bytes, arrival: Arrival) -> None:
    if len(line) > PP_V1_MAX or not line.endswith(b"\r\n"):
        raise ProxyHeaderError("PROXY v1 line without CRLF in 107 bytes")
    parts = line[:-2].decode("ascii", "replace").split(" ")
    if parts[1] == "UNKNOWN":
        arrival.header = "v1-unknown"
        return
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}")
    arrival.header = "v1"
    arrival.client = (str(ipaddress.ip_address(parts[2])), int(parts[4]))


def _parse_v2(head: bytes, body: bytes, arrival: Arrival) -> None:
    if head[:12] != PP_V2_SIGNATURE or head[12] >> 4 != 2:
        raise ProxyHeaderError("bad PROXY v2 signature or version")
    command, family = head[12] & 0x0F, head[13]
    if command == 0x0:
        arrival.header = "v2-local"
        return
    if command != 0x1:
        raise ProxyHeaderError(f"unknown PROXY v2 command {command}")
    arrival.header = "v2"
    if family == 0x11 and len(body) >= 12:
        arrival.client = (str(ipaddress.ip_address(body[0:4])), int.from_bytes(body[8:10], "big"))
    elif family == 0x21 and len(body) >= 36:
        arrival.client = (str(ipaddress.ip_address(body[0:16])), int.from_bytes(body[32:34], "big"))


class ShimLoop:
    """One asyncio loop in a thread, serving every ListenerShim of a Lab."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="listener-shims", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class ListenerShim:
    """A broker listener's PROXY protocol handling, in front of a mosquitto listener that has none.

    EMQX and VerneMQ parse the PROXY header themselves; mosquitto 2.0 cannot. This stand-in does
    what their listener does. proxy_protocol=True: the connection must open with a PROXY v1 or v2
    header within PROXY_PROTOCOL_TIMEOUT, else it is closed before a byte reaches the broker; the
    client the header announces is recorded. proxy_protocol=False: a connection opening with a
    PROXY header is closed (to such a listener it is a malformed packet). Everything after the
    header is relayed to mosquitto; a WebSocket listener also records X-Forwarded-For.
    """

    def __init__(
        self,
        shims: ShimLoop,
        host: str,
        port: int,
        upstream: tuple[str, int],
        *,
        proxy_protocol: bool,
        websocket: bool = False,
        timeout: float = PROXY_PROTOCOL_TIMEOUT,
    ):
        self.host, self.port, self.upstream = host, port, upstream
        self.proxy_protocol, self.websocket, self.timeout = proxy_protocol, websocket, timeout
        self.arrivals: list[Arrival] = []
        self._shims = shims
        self._transports: set[asyncio.BaseTransport] = set()
        self._server = shims.run(asyncio.start_server(self._handle, host, port, reuse_address=True, backlog=1024))

    def stop(self) -> None:
        """The broker dies: the port closes and every open connection is cut."""
        if self._server is not None:
            self._shims.run(self._stop())
            self._server = None

    async def _stop(self) -> None:
        self._server.close()
        for tr in list(self._transports):
            tr.abort()
        await self._server.wait_closed()

    async def _preamble(self, reader: asyncio.StreamReader, arrival: Arrival) -> bytes:
        """Consume the PROXY header (if any); return the bytes already read that belong to the broker."""
        head = await reader.readexactly(len(PP_V1_PREFIX))  # CONNECT and GET are both longer
        is_v1, is_v2 = head == PP_V1_PREFIX, head == PP_V2_SIGNATURE[: len(head)]
        data = b""
        if self.proxy_protocol:
            if is_v1:
                _parse_v1(head + await reader.readuntil(b"\r\n"), arrival)
            elif is_v2:
                head += await reader.readexactly(16 - len(head))
                _parse_v2(head, await reader.readexactly(int.from_bytes(head[14:16], "big")), arrival)
            else:
                raise ProxyHeaderError("no PROXY header")
        elif is_v1 or is_v2:
            raise ProxyHeaderError("PROXY header on a listener without proxy_protocol")
        else:
            data = head
        if self.websocket:
            data += await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"^x-forwarded-for:[ \t]*([^\r\n]*)", data, flags=re.I | re.M)
            arrival.forwarded_for = m.group(1).decode().strip() if m else None
        return data

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrival = Arrival(writer.get_extra_info("peername")[:2])
        self.arrivals.append(arrival)
        self._transports.add(writer.transport)
        try:
            try:
                data = await asyncio.wait_for(self._preamble(reader, arrival), self.timeout)
            except TimeoutError:
                arrival.dropped = "timeout"
                return
            except (ProxyHeaderError, ValueError) as e:
                arrival.dropped = str(e)
                return
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                arrival.dropped = "closed by the client"
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                arrival.dropped = "broker unreachable"
                return
            self._transports.add(up_writer.transport)
            arrival.relayed = True
            up_writer.write(data)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            self._transports.discard(up_writer.transport)
        finally:
            self._transports.discard(writer.transport)
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@dataclass
class Broker:
    host: str
    port: int
    """The MQTT port the proxy addresses: the listener shim's when there is one."""
    ws_port: int
    proc: Proc
    direct_port: int = 0
    """mosquitto's own MQTT listener (bridges and direct publishers use it)."""
    mqtt_shim: ListenerShim | None = None
    ws_shim: ListenerShim | None = None

    def __post_init__(self) -> None:
        self.direct_port = self.direct_port or self.port

    def stop(self) -> None:
        """The broker dies: its listeners close and its process ends."""
        for shim in (self.mqtt_shim, self.ws_shim):
            if shim:
                shim.stop()
        self.proc.stop()


@dataclass
class Lab:
    """Brokers and a proxy on loopback. Use as a context manager; stop() is idempotent."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    brokers: list[Broker] = field(default_factory=list)
    shims: ShimLoop | None = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for b in self.brokers:
            for shim in (b.mqtt_shim, b.ws_shim):
                if shim:
                    shim.stop()
        for p in reversed(self.procs):
            p.stop()
        if self.shims:
            self.shims.close()
            self.shims = None

    def _spawn(self, name: str, args: list[str], **kw) -> Proc:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = Proc(name, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw))
        self.procs.append(p)
        return p

    def spawn_mosquitto(self, name: str, conf: Path) -> Proc:
        """mosquitto logs to stdout through stdio, block-buffered into a file: line-buffered here
        (coreutils stdbuf execs mosquitto itself, so the PID is the broker's) so that its log can
        be read while it runs (wait_bridged)."""
        return self._spawn(name, ["stdbuf", "-oL", "mosquitto", "-c", str(conf)])

    def start_brokers(
        self, hosts: list[str], port: int, *, listeners: tuple[bool, bool] | None = None, anonymous: bool = True
    ) -> list[Broker]:
        """mosquitto on each host; the others bridge to the first, so messages cross brokers.

        listeners: the (MQTT, WebSocket) listeners' proxy_protocol as the shipped broker config sets
        them (components.renderers.broker.listener_proxy_protocol). Given, a ListenerShim stands on
        host:port (and on a shared WebSocket port) in front of each mosquitto and behaves as the
        EMQX/VerneMQ listener would; None (the benchmark) exposes mosquitto itself on host:port.
        anonymous=False refuses every CONNECT without credentials (CONNACK return code 5), as a broker
        with client authentication does; its bridges are refused too, so messages stay on their broker.

        mosquitto 2.0 cannot bind a websockets listener to one address, so each broker's
        websockets port is its own, bound to the loopback interface only.
        """
        direct = [free_port(h) if listeners else port for h in hosts]
        ws_shim_port = free_port(hosts[0]) if listeners else 0
        if listeners and not self.shims:
            self.shims = ShimLoop()
        started = []
        for i, host in enumerate(hosts):
            ws_port = free_port()
            conf = self.workdir / f"mosquitto-{i}.conf"
            lines = [
                "persistence false",
                "log_dest stdout",
                "max_connections -1",
                f"listener {direct[i]} {host}",
                f"allow_anonymous {'true' if anonymous else 'false'}",
                f"listener {ws_port}",
                "bind_interface lo",
                "protocol websockets",
            ]
            if i > 0:
                lines += [
                    f"connection bridge-{i}",
                    f"address {hosts[0]}:{direct[0]}",
                    "topic # both 0",
                    "cleansession true",
                    "bridge_protocol_version mqttv311",
                ]
            conf.write_text("\n".join(lines) + "\n")
            proc = self.spawn_mosquitto(f"mosquitto-{i}", conf)
            started.append(Broker(host, direct[i], ws_port, proc))
            if i == 0:  # the others bridge to it: it listens before their first connect
                wait_port(host, direct[0])
        for b in started:
            wait_port(b.host, b.direct_port)
            wait_port("127.0.0.1", b.ws_port)  # the WebSocket listener opens separately
        if anonymous:  # bridges carry no credentials: refused by a broker that authenticates
            wait_bridged(self.workdir / "mosquitto-0.log", [f"bridge-{i}" for i in range(1, len(hosts))])
        if listeners:
            mqtt_pp, ws_pp = listeners
            for b in started:
                b.mqtt_shim = ListenerShim(self.shims, b.host, port, (b.host, b.direct_port), proxy_protocol=mqtt_pp)
                b.ws_shim = ListenerShim(self.shims, b.host, ws_shim_port, ("127.0.0.1", b.ws_port), proxy_protocol=ws_pp, websocket=True)
                b.port, b.ws_port = port, ws_shim_port
        self.brokers += started
        return started

    def settings(self, certs: dict[str, Path], backends: list[Backend], maxconn: int = 2000, **kw) -> ProxySettings:
        return ProxySettings(
            backends=backends,
            listen="127.0.0.1",
            cert=str(certs["crt"]),
            key=str(certs["key"]),
            pem=str(certs["pem"]),
            pid=str(self.workdir / "proxy.pid"),
            error_log=str(self.workdir / "nginx-error.log"),
            access_log=str(self.workdir / "nginx-access.log"),
            log_target="stdout",
            workers="1",
            daemon=False,
            maxconn=maxconn,
            modules=[NGINX_STREAM_MODULE],
            **kw,
        )

    def start_proxy(self, kind: str, s: ProxySettings) -> Proc:
        if kind == "nginx":
            conf = self.workdir / "nginx.conf"
            conf.write_text(nginx_conf(s))
            proc = self._spawn("nginx", ["nginx", "-c", str(conf), "-p", str(self.workdir), "-e", s.error_log, "-g", "daemon off;"])
        else:
            conf = self.workdir / "haproxy.cfg"
            conf.write_text(haproxy_cfg(s))
            proc = self._spawn(
                "haproxy", ["haproxy", "-W", "-db", "-f", str(conf)], env={**os.environ, "HAPROXY_STATS_PASSWORD": "test-only"}
            )
        wait_port(s.listen, s.mqtts_port)
        return proc

    def start_shipped_proxy(self, kind: str, text: str, certs: dict[str, Path]) -> ShippedProxy:
        """Run a proxy config as a stack ships it, localised by localise() onto this Lab's brokers."""
        text, ports = localise(text, self.brokers, certs, self.workdir)
        if kind == "nginx":
            conf = self.workdir / "nginx.conf"
            conf.write_text(text)
            err = str(self.workdir / "nginx-error.log")
            proc = self._spawn("nginx", ["nginx", "-c", str(conf), "-p", str(self.workdir), "-e", err, "-g", "daemon off;"])
        else:
            conf = self.workdir / "haproxy.cfg"
            conf.write_text(text)
            # -db keeps haproxy in the foreground whatever "daemon" says, so it is stopped by its PID.
            env = {**os.environ, "HAPROXY_STATS_PASSWORD": STATS_PASSWORD}
            proc = self._spawn("haproxy", ["haproxy", "-W", "-db", "-f", str(conf)], env=env)
        shipped = ShippedProxy(kind, proc, ports, conf)
        for port in ports.values():
            try:
                wait_port("127.0.0.1", port, timeout=10)
            except TimeoutError:
                raise TimeoutError(f"{kind} did not open {port}: {(self.workdir / f'{kind}.log').read_text()[-2000:]}") from None
        return shipped


STATS_PASSWORD = "test-only"  # noqa: S105 - the loopback stats page of a test proxy
BROKER_ADDRESS = re.compile(r"\b([a-z][a-z0-9-]*-(\d+)\.[a-z0-9-]+\.mqtt\.internal):(\d+)\b")


@dataclass
class ShippedProxy:
    kind: str
    proc: Proc
    ports: dict[int, int]
    """Shipped listen port -> the loopback port it was localised to (8883 -> …)."""
    conf: Path


def localise(text: str, brokers: list[Broker], certs: dict[str, Path], workdir: Path) -> tuple[str, dict[int, int]]:
    """Point a shipped proxy config at this machine, changing nothing but where things are.

    Addresses: broker names -> the brokers' loopback hosts and listener ports (1883 -> MQTT shim,
    8083 -> WebSocket shim), 0.0.0.0:<port> -> 127.0.0.1:<free port>, the DNS resolver -> loopback.
    Paths: certificates, pid and log files, nginx's stream module (loaded where a config relies on
    an nginx built with it). Host facts this machine differs
    in: an account that does not exist here (or that an unprivileged run cannot switch to) is
    dropped, and haproxy's maxconn / nginx's worker limits are capped to the open-file limit
    (haproxy refuses to start above it; nginx cannot raise it). Every option that decides behaviour (PROXY protocol, checks, TLS, timeouts,
    balancing) stays as shipped.
    """
    names = sorted({(int(m.group(2)), m.group(1)) for m in BROKER_ADDRESS.finditer(text)})
    if len(names) > len(brokers):
        raise ValueError(f"{len(names)} brokers in the config, {len(brokers)} started")
    hosts = {name: brokers[i] for i, (_, name) in enumerate(names)}

    def broker(m: re.Match) -> str:
        b = hosts[m.group(1)]
        port = {c.MQTT_PORT: b.port, c.WS_PORT: b.ws_port}[int(m.group(3))]
        return f"{b.host}:{port}"

    text = BROKER_ADDRESS.sub(broker, text)
    ports: dict[int, int] = {}

    def listen(m: re.Match) -> str:
        shipped = int(m.group(1))
        ports.setdefault(shipped, free_port())
        return f"127.0.0.1:{ports[shipped]}"

    text = re.sub(r"\b0\.0\.0\.0:(\d+)\b", listen, text)
    text = re.sub(r"^(\s*nameserver \S+ )\S+$", rf"\g<1>127.0.0.1:{free_port()}", text, flags=re.M)
    for shipped, local in (
        ("/etc/mqtt-cluster/tls/server.crt", certs["crt"]),
        ("/etc/mqtt-cluster/tls/server.key", certs["key"]),
        ("/etc/mqtt-cluster/tls/server.pem", certs["pem"]),
        ("/usr/lib64/nginx/modules/ngx_stream_module.so", NGINX_STREAM_MODULE),
    ):
        text = text.replace(shipped, str(local))
    text = text.replace("/run/haproxy-admin.sock", f"{workdir}/admin.sock")  # the rollout's drain socket
    text = re.sub(r"^(\s*pid(?:file)? )\S+?(;?)$", rf"\g<1>{workdir}/proxy.pid\g<2>", text, flags=re.M)
    text = text.replace("/var/log/nginx/", f"{workdir}/")
    if "\nstream {" in text and "load_module" not in text:
        text = f"load_module {NGINX_STREAM_MODULE};\n{text}"  # built into the image; a module on Debian

    def account(m: re.Match) -> str:
        try:
            pwd.getpwnam(m.group(2))
        except KeyError:
            return ""
        return m.group(0) if os.geteuid() == 0 else ""

    text = re.sub(r"^(\s*(?:user|group) )(\w+);?$", account, text, flags=re.M)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    cap = (limit - 200) // 2  # haproxy wants about two descriptors per connection
    text = re.sub(r"^(\s*maxconn )(\d+)$", lambda m: f"{m.group(1)}{min(int(m.group(2)), cap)}", text, flags=re.M)
    # nginx cannot raise its workers' limit above the hard one either; connection slots beyond it
    # would only be preallocated memory.
    text = re.sub(
        r"^(\s*worker_(?:rlimit_nofile|connections) )(\d+);$",
        lambda m: f"{m.group(1)}{min(int(m.group(2)), limit - 200)};",
        text,
        flags=re.M,
    )
    return text, ports


def broker_listeners(files: dict[tuple[str, str], str], host: str) -> tuple[bool, bool]:
    """(MQTT, WebSocket) listeners' proxy_protocol as a broker host's shipped files set them."""
    mine = {name: text for (h, name), text in files.items() if h == host}
    if "emqx.conf" in mine:
        from pyhocon import ConfigFactory

        conf = ConfigFactory.parse_string(mine["emqx.conf"])
        # Default false: emqx/emqx v5.8.6 apps/emqx/src/emqx_schema.erl:1891-1896
        return tuple(bool(conf.get(f"listeners.{kind}.default.proxy_protocol", False)) for kind in ("tcp", "ws"))
    env = dict(line.split("=", 1) for line in mine["broker.env"].splitlines() if "=" in line and not line.startswith("#"))
    # Default off: vernemq/vernemq 2.1.1 apps/vmq_server/priv/vmq_server.schema:883-898
    return tuple(env.get(f"DOCKER_VERNEMQ_LISTENER__{kind}__DEFAULT__PROXY_PROTOCOL", "off") == "on" for kind in ("TCP", "WS"))


def haproxy_stats(port: int, password: str = STATS_PASSWORD) -> list[dict[str, str]]:
    """haproxy's own view of its proxies and servers: the stats page in CSV (";csv"), whose first
    line names the columns with a leading "# " (haproxy/haproxy v2.6.0 doc/management.txt:1074-1086;
    pxname, svname, status, check_status: :1096-1097, :1134, :1161-1179)."""
    auth = base64.b64encode(f"admin:{password}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/;csv", headers={"Authorization": f"Basic {auth}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an HTTP proxy from the environment
    with opener.open(req, timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    columns = lines[0].lstrip("# ").split(",")
    return [dict(zip(columns, line.split(","), strict=False)) for line in lines[1:] if line]


def checked_servers(stats_port: int, timeout: float = 12.0) -> dict[tuple[str, str], dict[str, str]]:
    """Every server row once each has finished at least one health check (check_status no longer
    "INI"; a running check shows its last result behind "* "), within the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {(r["pxname"], r["svname"]): r for r in haproxy_stats(stats_port) if r["svname"] not in ("FRONTEND", "BACKEND")}
        done = all(r["check_status"].lstrip("* ") not in ("", "INI") for r in rows.values())
        if (rows and done) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def tls_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def mqtt_client(client_id: str, ca: Path, transport: str = "tcp"):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, transport=transport, protocol=mqtt.MQTTv311)
    c.tls_set_context(tls_context(ca))
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    return c


def connect_once(host: str, port: int, ca: Path | None, client_id: str, timeout: float = 5.0) -> bool:
    """One MQTT connection (TLS unless ca is None): True when CONNACK (accepted) arrives within the timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = tls_context(ca).wrap_socket(raw, server_hostname="localhost") if ca else raw
            with sock:
                sock.settimeout(timeout)
                ok = raw_mqtt_connect(sock, client_id) == b"\x20\x02\x00\x00"
                sock.sendall(b"\xe0\x00")  # DISCONNECT
                return ok
    except OSError:
        return False


def _mqtt_string(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def connack_code(
    port: int,
    ca: Path,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    cert: tuple[Path, Path] | None = None,
) -> int | None:
    """One TLS MQTT 3.1.1 CONNECT to 127.0.0.1:port (with a client certificate when ``cert`` is
    (crt, key)): the CONNACK return code, None without one (a refused handshake included)."""
    ctx = tls_context(ca)
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    flags, payload = 0x02, _mqtt_string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _mqtt_string(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c" + payload
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.settimeout(5)
            s.sendall(b"\x10" + bytes([len(body)]) + body)
            data = recv_upto(s, 4)
            if len(data) == 4 and data[:2] == b"\x20\x02":
                if data[3] == 0:
                    s.sendall(b"\xe0\x00")  # DISCONNECT
                return data[3]
            return None
    except OSError:  # ssl.SSLError included: the handshake was refused
        return None


def raw_mqtt_connect(sock: socket.socket, client_id: str) -> bytes:
    """Send CONNECT over a (TLS) socket, return the first 4 bytes of the answer."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    sock.sendall(b"\x10" + bytes([len(body)]) + body)
    return recv_upto(sock, 4)


def recv_upto(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes: fewer when the peer closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data
