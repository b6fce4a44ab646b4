"""What the vernemq/vernemq:2.1.1 image does at start-up, as a small model written from its source.

Every fact below is cited as ``# <repo> <revision> <path>:<line>``. The image revision is
vernemq/docker-vernemq 31299af, the commit that set VERNEMQ_VERSION="2.1.1" (Dockerfile:15); the
later 2.1.1 revisions (0797c99, 82e93e6) change none of the lines modelled here. Code is not copied:
the rules are restated.

- ``env_to_conf`` / ``appended_defaults``: how bin/vernemq.sh turns the container environment into
  the block it appends to /vernemq/etc/vernemq.conf.
- ``effective_cookie``: which cookie the VM and vmq-admin use.
- ``listeners``: the listeners the broker binds, from the package's vernemq.conf plus that block.
- ``run_container``: runs a container command for real with the image's files under a temporary
  root, the way Docker would run it in the image (paths under / mapped to the root).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from pathlib import Path

IMAGE_REV = "vernemq/docker-vernemq 31299af"

# docker-vernemq 31299af files/vm.args:1-15, installed as /vernemq/etc/vm.args (Dockerfile:18).
IMAGE_VM_ARGS = (
    "+P 512000\n"
    "+e 256000\n"
    "-env ERL_CRASH_DUMP /erl_crash.dump\n"
    "-env ERL_FULLSWEEP_AFTER 0\n"
    "+Q 512000\n"
    "+A 64\n"
    "-setcookie vmq\n"
    "-name VerneMQ@127.0.0.1\n"
    "+K true\n"
    "+W w\n"
    "+sbwt none \n"
    "+sbwtdcpu none \n"
    "+sbwtdio none\n"
    "-smp enable\n"
    "+zdbbl 32768\n"
)
PUBLIC_COOKIE = "vmq"  # files/vm.args:7; also distributed_cookie's default, vernemq 2.1.1 files/vmq.schema:15-17

# docker-vernemq 31299af Dockerfile:12-15 (ENV); PATH is the image's plus /vernemq/bin.
IMAGE_ENV = {
    "DOCKER_VERNEMQ_KUBERNETES_LABEL_SELECTOR": "app=vernemq",
    "DOCKER_VERNEMQ_LOG__CONSOLE": "console",
    "VERNEMQ_VERSION": "2.1.1",
}
IMAGE_UID = 10000  # Dockerfile:6-7 (addgroup --gid 10000, adduser --uid 10000), :25 chown -R 10000:10000 /vernemq, :47 USER vernemq
IMAGE_GID = 10000
IMAGE_CMD = ["start_vernemq"]  # Dockerfile:49; the script is /usr/sbin/start_vernemq (Dockerfile:16)
START_SCRIPT = "/usr/sbin/start_vernemq"
ETC_DIR = "/vernemq/etc"  # bin/vernemq.sh:8
DATA_DIR = "/vernemq/data"  # Dockerfile:9 WORKDIR /vernemq + vernemq 2.1.1 vars.config:9 platform_data_dir "./data"; Dockerfile:43 VOLUME
BIN_DIR = "/vernemq/bin"  # Dockerfile:14 PATH="/vernemq/bin:$PATH"; vernemq 2.1.1 rebar.config:101-102 (bin/vmq-admin, bin/vernemq)

# What the package's own vernemq.conf binds before vernemq.sh appends its block: cuttlefish writes
# every non-hidden mapping with a default into the generated .conf (Kyorai/cuttlefish v3.4.0
# src/cuttlefish_conf.erl:153-185), "$name" replaced by include_default.
PACKAGED_CONF = [
    # vernemq 2.1.1 apps/vmq_server/priv/vmq_server.schema:1100-1104 + vars.config:71,77
    ("listener.vmq.clustering", "0.0.0.0:44053"),
    # vmq_server.schema:1116-1120 + vars.config:79,81
    ("listener.http.default", "127.0.0.1:8888"),
    # listener.tcp.$name is only "commented" (vmq_server.schema:856-859), listener.ws.$name hidden (:861-865).
]

# bin/vernemq.sh:237 drops every environment line containing one of these.
CONF_EXCLUDED = ("DISCOVERY_NODE", "KUBERNETES", "SWARM", "COMPOSE", "DOCKER_VERNEMQ_USER")
# HTTP modules every listener without its own list serves: vmq_server.schema:333-335 (default list),
# :1133-1137 (per-listener default "[]"), apps/vmq_server/src/vmq_http_config.erl:30-31 ([] -> global).
DEFAULT_HTTP_MODULES = ("vmq_metrics_http", "vmq_http_mgmt_api", "vmq_status_http", "vmq_health_http", "vmq_http_v2_api")
HEALTH_ROUTE = ("vmq_health_http", "/health")  # apps/vmq_server/src/vmq_health_http.erl:25
ALLOW_ANONYMOUS_DEFAULT = "off"  # vmq_server.schema:8-11


def _env_lines(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(env.items())]


def env_to_conf(env: dict[str, str]) -> list[tuple[str, str]]:
    """bin/vernemq.sh:237: each line of `env` that contains DOCKER_VERNEMQ and none of CONF_EXCLUDED
    loses its first 15 characters, its leading [A-Z0-9_]* run is lower-cased, then every "__"
    in the whole line becomes "."."""
    out = []
    for line in _env_lines(env):
        if "DOCKER_VERNEMQ" not in line or any(x in line for x in CONF_EXCLUDED):
            continue
        rest = line[15:]
        m = re.match(r"[A-Z0-9_]*", rest)
        text = (rest[: m.end()].lower() + rest[m.end() :]).replace("__", ".")
        key, _, value = text.partition("=")
        out.append((key.strip(), value.strip()))
    return out


def _configure_listeners(env: dict[str, str], ip: str) -> list[tuple[str, str]]:
    """bin/vernemq.sh:22-57: for DOCKER_VERNEMQ_LISTENER__* the name is split at every "_" into
    _, prefix, type, name and the rest (bash `read` with IFS='__', :31): a listener line is written
    only when the rest is empty and the value "true" (:37-43) or the rest is "PORT" (:44-47), and
    every remembered one once more (:53-56)."""
    out: list[tuple[str, str]] = []
    ports: dict[str, str] = {}
    base = 1883
    for line in _env_lines(env):
        if not line.startswith("DOCKER_VERNEMQ_LISTENER__"):
            continue
        key, _, value = line.partition("=")
        fields = key.split("_", 4) + [""] * 5
        _, _prefix, type_, name, prop = fields[:5]
        type_ = type_.lower()
        if not prop and value == "true":
            if f"{type_}.{name}" not in ports:
                base += 1
                ports[f"{type_}.{name}"] = str(base)
            out.append((f"listener.{type_}.{name}", f":{ports[f'{type_}.{name}']}"))  # :43 prints ${I} (unset)
        elif prop == "PORT":
            ports[f"{type_}.{name}"] = value
            out.append((f"listener.{type_}.{name}", f"{ip}:{value}"))
    out += [(f"listener.{k}", f"{ip}:{p}") for k, p in ports.items()]
    return out


def appended_defaults(env: dict[str, str], ip: str) -> list[tuple[str, str]]:
    """bin/vernemq.sh:255-280: what the script adds for variables left unset."""
    out: list[tuple[str, str]] = []
    if not env.get("DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MINIMUM"):
        out.append(("erlang.distribution.port_range.minimum", "9100"))  # :255-257
    if not env.get("DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MAXIMUM"):
        out.append(("erlang.distribution.port_range.maximum", "9109"))  # :259-261
    if not env.get("DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT"):
        out += _configure_listeners(env, ip)  # :263-266
        out.append(("listener.tcp.default", f"{ip}:1883"))
    if not env.get("DOCKER_VERNEMQ_LISTENER__WS__DEFAULT"):
        out.append(("listener.ws.default", f"{ip}:8080"))  # :268-270
    if not env.get("DOCKER_VERNEMQ_LISTENER__VMQ__CLUSTERING"):
        out.append(("listener.vmq.clustering", f"{ip}:44053"))  # :272-274
    if not env.get("DOCKER_VERNEMQ_LISTENER__HTTP__METRICS"):
        out.append(("listener.http.metrics", f"{ip}:8888"))  # :276-278
    out += _configure_listeners(env, ip)  # :280
    return out


def conf_block(env: dict[str, str], ip: str) -> list[tuple[str, str]]:
    """The block vernemq.sh:232-282 appends to vernemq.conf (no vernemq.conf.local, :229)."""
    return env_to_conf(env) + appended_defaults(env, ip)


def effective_cookie(vm_args: str | None, conf: list[tuple[str, str]]) -> str:
    """The cookie of the VM and of vmq-admin / `vernemq ping`.

    A vm.args in the etc dir is used as is (Kyorai/cuttlefish v3.4.0 src/cuttlefish_escript.erl:
    266-269), and the scripts take -setcookie from it before distributed_cookie from vernemq.conf
    (vernemq 2.1.1 files/env.sh:83-92, the last such line, :85).
    """
    if vm_args is not None:
        lines = [ln for ln in vm_args.splitlines() if ln.startswith("-setcookie")]
        if len(lines) > 1:
            raise AssertionError(f"vm.args has {len(lines)} -setcookie lines")
        if lines:
            return lines[0].split()[1]
    values = [v for k, v in conf if k == "distributed_cookie"]
    if not values:
        raise AssertionError("vm.args needs to have a -setcookie parameter.")  # env.sh:87
    return values[-1]


_LISTENER = re.compile(r"listener\.(tcp|ssl|ws|wss|vmq|vmqs|http|https)\.([A-Za-z0-9_]+)")


def listeners(conf: list[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """Bound listeners, "type.name" -> (address, port): the package's conf, then the appended
    block; a later line for the same key wins."""
    bound: dict[str, tuple[str, int]] = {}
    for key, value in PACKAGED_CONF + conf:
        m = _LISTENER.fullmatch(key)
        if m:
            addr, _, port = value.rpartition(":")
            bound[f"{m.group(1)}.{m.group(2)}"] = (addr, int(port))
    return bound


def bind_conflicts(bound: dict[str, tuple[str, int]]) -> list[tuple[str, str]]:
    """Pairs that cannot both bind: same port on the same address, or one of them the wildcard."""
    names = sorted(bound)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (aa, ap), (ba, bp) = bound[a], bound[b]
            if ap == bp and (aa == ba or "0.0.0.0" in (aa, ba)):
                out.append((a, b))
    return out


def reachable(bound: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """Listeners other hosts can reach (not on a loopback address)."""
    return {k: v for k, v in bound.items() if not ipaddress.ip_address(v[0]).is_loopback}


def run_container(root: Path, env: dict[str, str], command: list[str] | None) -> tuple[str, dict[str, str]]:
    """Run ``command`` (or the image's CMD) as the container would, with the image's vm.args and
    a recording stand-in for start_vernemq under ``root``. Returns vm.args as the broker then
    finds it and the environment start_vernemq received."""
    etc = root / ETC_DIR.lstrip("/")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "vm.args").write_text(IMAGE_VM_ARGS)
    (etc / "vm.args").chmod(0o644)
    start = root / START_SCRIPT.lstrip("/")
    start.parent.mkdir(parents=True, exist_ok=True)
    seen = root / "start_vernemq.env"
    start.write_text(f'#!/bin/sh\nenv -0 >"{seen}"\n')
    start.chmod(0o755)

    def rooted(arg: str) -> str:
        for path in (START_SCRIPT, ETC_DIR):
            arg = arg.replace(path, f"{root}{path}")
        return arg

    argv = [rooted(a) for a in (command or [START_SCRIPT if IMAGE_CMD == ["start_vernemq"] else IMAGE_CMD[0]])]
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **IMAGE_ENV, **env}
    proc = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=20, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise AssertionError(f"container command failed ({proc.returncode}): {proc.stderr}")
    received = dict(item.split("=", 1) for item in seen.read_text().split("\0") if "=" in item)
    return (etc / "vm.args").read_text(), received
