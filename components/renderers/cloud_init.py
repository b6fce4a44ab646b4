"""cloud-init user-data built as data (PyYAML), so it is valid YAML by construction."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import yaml

from components.renderers import broker, render
from components.renderers.observability import HostTelemetry

# Kernel settings for many long-lived connections, from what operators learned by hand. Left out
# on purpose: tcp_tw_recycle (removed from Linux, broke clients behind NAT) and a port range
# starting at 500 (collides with well-known ports).
SYSCTL = {
    "fs.file-max": "2097152",
    "fs.nr_open": "2097152",
    "net.core.somaxconn": "32768",
    "net.ipv4.tcp_max_syn_backlog": "16384",
    "net.core.netdev_max_backlog": "16384",
    "net.ipv4.ip_local_port_range": "1024 65535",
    "net.core.rmem_default": "262144",
    "net.core.wmem_default": "262144",
    "net.core.rmem_max": "16777216",
    "net.core.wmem_max": "16777216",
    "net.core.optmem_max": "16777216",
    "net.ipv4.tcp_rmem": "1024 4096 16777216",
    "net.ipv4.tcp_wmem": "1024 4096 16777216",
    "net.ipv4.tcp_max_tw_buckets": "1048576",
    "net.ipv4.tcp_fin_timeout": "15",
    "net.ipv4.tcp_tw_reuse": "1",
    "net.netfilter.nf_conntrack_max": "1000000",
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait": "30",
}
NOFILE = 1048576


def sysctl_conf() -> str:
    return "# mqtt-cluster: many long-lived TCP connections\n" + "".join(f"{k} = {v}\n" for k, v in SYSCTL.items())


def limits_conf() -> str:
    return f"* soft nofile {NOFILE}\n* hard nofile {NOFILE}\nroot soft nofile {NOFILE}\nroot hard nofile {NOFILE}\n"


def _file(path: str, content: str, mode: str = "0644") -> dict[str, Any]:
    return {"path": path, "content": content, "owner": "root:root", "permissions": mode}


def _tuning_files() -> list[dict[str, Any]]:
    return [
        _file("/etc/sysctl.d/90-mqtt-cluster.conf", sysctl_conf()),
        _file("/etc/modules-load.d/mqtt-cluster.conf", "nf_conntrack\n"),
        _file("/etc/security/limits.d/90-mqtt-cluster.conf", limits_conf()),
        _file("/etc/systemd/system.conf.d/90-mqtt-cluster.conf", f"[Manager]\nDefaultLimitNOFILE={NOFILE}\n"),
    ]


# "User data is limited to 16 KB, in raw form, before it is base64-encoded" (AWS EC2 User Guide,
# "Work with instance user data"): EC2 refuses a larger RunInstances at deploy time.
USER_DATA_LIMIT = 16 * 1024


def packed(text: str) -> str:
    """User-data as EC2 receives it: gzip, base64 (for pulumi_aws Instance ``user_data_base64``, which
    takes gzip-compressed data; pulumi_aws 7 ec2/instance.py ``user_data_base64``). cloud-init
    decompresses gzip user-data before reading it (cloud-init 22.4 cloudinit/user_data.py
    convert_string: util.decomp_gzip). mtime=0 keeps the bytes a pure function of the text, so an
    unchanged host never looks changed (user_data_replace_on_change would replace it)."""
    raw = gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
    if len(raw) > USER_DATA_LIMIT:
        raise ValueError(f"user-data is {len(raw)} bytes compressed; EC2 accepts at most {USER_DATA_LIMIT}")
    return base64.b64encode(raw).decode("ascii")


def unpacked(value: str) -> str:
    """The cloud-config text inside :func:`packed` (for tests and reviews)."""
    return gzip.decompress(base64.b64decode(value)).decode("utf-8")


def dump(doc: dict[str, Any]) -> str:
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1000)


def broker_start_script(**values: Any) -> str:
    # VerneMQ: the container first writes the secret cookie into the image's vm.args (see
    # broker.VERNEMQ_COOKIE_STEP); EMQX runs the image's own command.
    values.setdefault("command", broker.vernemq_command() if values.get("engine") == "vernemq" else [])
    return render("broker-start.sh.j2", **values)


def broker_bootstrap_script(*, node_name: str, region: str, parameter: str) -> str:
    return render("broker-bootstrap.sh.j2", node_name=node_name, region=region, parameter=parameter)


def broker_user_data(*, hostname: str, bootstrap: str, extra: HostTelemetry | None = None) -> str:
    """User-data of a broker host: its identity (name) and its bootstrap, nothing that a version,
    a setting or the node count changes; those reach the host through its start parameter.
    ``extra`` adds the monitoring agent (files, packages, commands run before the broker starts)."""
    extra = extra or HostTelemetry()
    write = _tuning_files()
    write += [_file(path, text) for path, text in extra.files.items()]
    write.append(_file("/usr/local/sbin/mqtt-broker-bootstrap", bootstrap, "0755"))
    doc = {
        "hostname": hostname.split(".")[0],
        "fqdn": hostname,
        "prefer_fqdn_over_hostname": True,
        "package_update": True,
        "packages": ["docker", "xfsprogs", *extra.packages],
        "write_files": write,
        "runcmd": [
            ["systemctl", "restart", "systemd-modules-load"],
            ["sysctl", "--system"],
            ["systemctl", "enable", "--now", "docker"],
            *extra.runcmd,
            ["/usr/local/sbin/mqtt-broker-bootstrap"],
        ],
    }
    return dump(doc)


def _gzipped(path: str, content: str, mode: str = "0644") -> dict[str, Any]:
    """A file shipped gzip+base64 (cloud-init write_files "encoding: gz+b64"): EC2 user-data is
    limited to 16 KB."""
    data = base64.b64encode(gzip.compress(content.encode(), mtime=0)).decode()
    return {**_file(path, data, mode), "encoding": "gz+b64"}


def plain_host_user_data(
    hostname: str,
    extra_files: dict[str, str] | None = None,
    packages: list[str] | None = None,
    runcmd: list[list[str]] | None = None,
    extra: HostTelemetry | None = None,
    gzipped: tuple[str, ...] = (),
) -> str:
    """User-data of a bastion or proxy host: tuning, optional packages and files (those named in
    ``gzipped`` shipped compressed); ``extra`` adds the monitoring agent (started before the host's service)."""
    extra = extra or HostTelemetry()
    files = {**(extra_files or {}), **extra.files}
    write = _tuning_files() + [
        (_gzipped if p in gzipped else _file)(p, t, "0600" if p.endswith((".pem", ".key")) else "0644") for p, t in files.items()
    ]
    doc: dict[str, Any] = {"hostname": hostname, "package_update": True, "write_files": write}
    if packages or extra.packages:
        doc["packages"] = [*(packages or []), *extra.packages]
    doc["runcmd"] = [["sysctl", "--system"], *extra.runcmd, *(runcmd or [])]
    return dump(doc)
