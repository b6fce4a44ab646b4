"""Loopback data plane: real mosquitto brokers behind the rendered nginx/haproxy configs.

Everything binds to 127.0.0.0/8 ("hosts" 127.0.0.2, 127.0.0.3 …); every process is started here and
stopped here by PID. Used by tests/test_dataplane.py and bench/lb.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.renderers.proxy import Backend, ProxySettings, haproxy_cfg, nginx_conf

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


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
    ws_port: int
    proc: Proc


@dataclass
class Lab:
    """Brokers and a proxy on loopback. Use as a context manager; stop() is idempotent."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    brokers: list[Broker] = field(default_factory=list)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def _spawn(self, name: str, args: list[str], **kw) -> Proc:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        p = Proc(name, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw))
        self.procs.append(p)
        return p

    def start_brokers(self, hosts: list[str], port: int) -> list[Broker]:
        """mosquitto on each host; the others bridge to the first, so messages cross brokers.

        mosquitto 2.0 cannot bind a websockets listener to one address, so each broker's
        websockets port is its own, bound to the loopback interface only.
        """
        for i, host in enumerate(hosts):
            ws_port = free_port()
            conf = self.workdir / f"mosquitto-{i}.conf"
            lines = [
                "persistence false",
                "log_dest stdout",
                "max_connections -1",
                f"listener {port} {host}",
                "allow_anonymous true",
                f"listener {ws_port}",
                "bind_interface lo",
                "protocol websockets",
            ]
            if i > 0:
                lines += [
                    f"connection bridge-{i}",
                    f"address {hosts[0]}:{port}",
                    "topic # both 0",
                    "cleansession true",
                    "bridge_protocol_version mqttv311",
                ]
            conf.write_text("\n".join(lines) + "\n")
            proc = self._spawn(f"mosquitto-{i}", ["mosquitto", "-c", str(conf)])
            self.brokers.append(Broker(host, port, ws_port, proc))
        for b in self.brokers:
            wait_port(b.host, b.port)
        return self.brokers

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


def connect_once(host: str, port: int, ca: Path, client_id: str, timeout: float = 5.0) -> bool:
    """One TLS MQTT connection: True when CONNACK (accepted) arrives within the timeout."""
    ctx = tls_context(ca)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(timeout)
            ok = raw_mqtt_connect(tls, client_id) == b"\x20\x02\x00\x00"
            tls.sendall(b"\xe0\x00")  # DISCONNECT
            return ok
    except OSError:
        return False


def raw_mqtt_connect(sock: socket.socket, client_id: str) -> bytes:
    """Send CONNECT over a (TLS) socket, return the first 4 bytes of the answer."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    sock.sendall(b"\x10" + bytes([len(body)]) + body)
    data = b""
    while len(data) < 4:
        chunk = sock.recv(4 - len(data))
        if not chunk:
            break
        data += chunk
    return data


class HeaderCapturingBroker:
    """A stand-in broker that records what arrives before MQTT (the PROXY header) and answers CONNACK."""

    V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.headers: list[bytes] = []
        self._sock = socket.create_server((host, port), reuse_port=False)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(3)
        with conn:
            try:
                data = conn.recv(4096)
                idx = data.find(b"\x10")
                if data.startswith(b"PROXY "):
                    idx = data.index(b"\r\n") + 2
                elif data.startswith(self.V2_SIGNATURE):
                    idx = 16 + int.from_bytes(data[14:16], "big")
                self.headers.append(data[:idx] if idx > 0 else b"")
                conn.sendall(b"\x20\x02\x00\x00")
                conn.recv(16)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)
