"""VerneMQ as the vernemq/vernemq:2.1.1 image really runs it: cookie, listeners, conf keys, paths.

The image's start-up rules are modelled in tests/vernemq_image.py from its source (cited there);
these tests feed that model what our rendered start script and containers actually produce.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from components import config as c
from components.broker_cluster import VERNEMQ_UID
from components.config import ConfigError, parse
from components.firewall import health_check
from components.local_cluster import DATA_DIRS
from components.renderers import broker as br
from tests import vernemq_image as img
from tests.conftest import ROOT, plan_of

CONTAINER = "docker:index/container:Container"
HOST_FAKES = Path(__file__).parent / "fakes" / "vernemq_host"
CONF_KEYS = Path(__file__).parent / "facts" / "vernemq-2.1.1-conf-keys.tsv"
SECRET = "S3cretCookieFromSsm0123456789abcdef"
HOST_IP = "10.20.1.17"
"""What vernemq.sh finds as IP_ADDRESS (docker-vernemq 31299af bin/vernemq.sh:3-6)."""


def _local_plan(program, **brokers):
    return program("local", brokers={"engine": "vernemq", "count": 3, "accept_eula": True, **brokers})


def _containers(plan):
    return sorted((r for r in plan.of_type(CONTAINER) if not r.name.endswith(("-proxy", "-prometheus", "-grafana"))), key=lambda r: r.name)


def _env_of_file(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def _run_aws_start_script(tmp_path: Path, script: str, broker_env: str) -> dict:
    """Run the rendered start script from its secrets step on: fake `aws` (SSM), `install` and
    `docker` (which runs the container command for real on the image's files)."""
    header, rest = script.split("# 1. ", 1)
    body = "# 2. " + rest.split("# 2. ", 1)[1]
    header = re.sub(r"^SECRETS=.*$", f"SECRETS={tmp_path}/secrets.env", header, flags=re.M)
    params = re.search(r"^PARAMS='([^']*)'$", header, flags=re.M).group(1)
    (tmp_path / "broker.env").write_text(broker_env)
    root = tmp_path / "root"
    root.mkdir()
    env = {
        "PATH": f"{HOST_FAKES}:{os.environ['PATH']}",
        "FAKE_ROOT": str(root),
        "FAKE_SSM": json.dumps({f"{params}/cookie": SECRET}),
        "FAKE_HOST_FILES": json.dumps({"/etc/mqtt-cluster/broker.env": str(tmp_path / "broker.env")}),
    }
    proc = subprocess.run(["bash", "-c", header + body], env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603, S607
    assert proc.returncode == 0, proc.stderr
    record = json.loads((root / "run.json").read_text())
    record["secrets_mode"] = stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode)
    record["vm_args_mode"] = stat.S_IMODE((root / "vernemq/etc/vm.args").stat().st_mode)
    return record


# --- the cookie ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["vernemq-1", "vernemq-2"])
def test_aws_host_runs_vernemq_on_the_secret_cookie_not_the_images_public_one(tmp_path, host):
    plan = plan_of("vernemq")
    script = plan.files[(host, "mqtt-broker-start")]
    run = _run_aws_start_script(tmp_path, script, plan.files[(host, "broker.env")])
    conf = img.conf_block(run["received"], HOST_IP)
    cookie = img.effective_cookie(run["vm_args"], conf)
    assert cookie == SECRET, f"the VM and vmq-admin would use {cookie!r}"
    assert cookie != img.PUBLIC_COOKIE
    assert img.effective_cookie(run["vm_args"], []) == SECRET, "vm.args alone decides"
    assert run["vm_args"].count("-setcookie") == 1
    # Everything else the image ships in vm.args is still there for vernemq.sh to edit.
    assert [ln for ln in run["vm_args"].splitlines() if not ln.startswith("-setcookie")] == [
        ln for ln in img.IMAGE_VM_ARGS.splitlines() if not ln.startswith("-setcookie")
    ]
    # vernemq.sh refuses a vm.args it cannot write (bin/vernemq.sh:86-95): owner rw, nobody else.
    assert run["vm_args_mode"] == 0o600 and run["secrets_mode"] == 0o600
    assert not any(name in ("-v", "--volume") and "vm.args" in value for name, value in run["options"])
    # The secret reaches the container only through the env file on tmpfs, never the rendered files.
    for (_, _), text in plan.files.items():
        assert SECRET not in text
    assert ("--env-file", "/etc/mqtt-cluster/broker.env") in [tuple(o) for o in run["options"]]


def test_local_containers_run_vernemq_on_the_secret_cookie(program, tmp_path):
    plan = _local_plan(program)
    containers = _containers(plan)
    assert len(containers) == 3
    for node in containers:
        envs = node.inputs["envs"]
        assert envs.count("[secret]") == 1, "the cookie is the one secret variable"
        env = dict(e.split("=", 1) for e in envs if e != "[secret]")
        env[br.VERNEMQ_COOKIE_ENV] = SECRET
        vm_args, received = img.run_container(tmp_path / node.name, env, node.inputs.get("command"))
        cookie = img.effective_cookie(vm_args, img.conf_block(received, HOST_IP))
        assert cookie == SECRET, f"{node.name} would run on {cookie!r}"
        assert img.DATA_DIR == node.inputs["volumes"][0]["containerPath"]


@pytest.mark.parametrize("cookie", [None, "", "two words", "a;b", "dots.and-dashes"])
def test_the_cookie_step_refuses_a_missing_or_unsafe_cookie(tmp_path, cookie):
    env = {} if cookie is None else {br.VERNEMQ_COOKIE_ENV: cookie}
    with pytest.raises(AssertionError, match="must be set to letters and digits only"):
        img.run_container(tmp_path, env, br.vernemq_command())
    assert (tmp_path / "vernemq/etc/vm.args").read_text() == img.IMAGE_VM_ARGS, "vm.args untouched"


def test_the_cookie_step_is_idempotent_across_restarts(tmp_path):
    env = {br.VERNEMQ_COOKIE_ENV: SECRET}
    first, _ = img.run_container(tmp_path, env, br.vernemq_command())
    # restart=always reruns the command on the same /vernemq/etc (the image's VOLUME, Dockerfile:43).
    etc = tmp_path / "vernemq/etc/vm.args"
    etc.write_text(first)
    proc = subprocess.run(  # noqa: S603
        ["bash", "-c", br.VERNEMQ_COOKIE_STEP.replace(img.ETC_DIR, f"{tmp_path}{img.ETC_DIR}").replace(img.START_SCRIPT, "true")],  # noqa: S607
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert etc.read_text() == first


# --- listeners --------------------------------------------------------------------------------


def _envs_to_check(program) -> list[tuple[str, dict[str, str], bool]]:
    """(label, env, websocket) for every VerneMQ node we render: the AWS stack and local variants."""
    out = []
    plan = plan_of("vernemq")
    for (host, name), text in sorted(plan.files.items()):
        if name == "broker.env":
            out.append((f"vernemq/{host}", _env_of_file(text), True))
    for websocket in (True, False):
        for node in _containers(_local_plan(program, websocket=websocket)):
            env = dict(e.split("=", 1) for e in node.inputs["envs"] if e != "[secret]")
            out.append((f"local(ws={websocket})/{node.name}", env, websocket))
    return out


def test_vernemq_binds_one_reachable_listener_per_port_and_none_unwanted(program):
    cases = _envs_to_check(program)
    assert {ws for _, _, ws in cases} == {True, False}
    for label, env, websocket in cases:
        bound = img.listeners(img.conf_block({**img.IMAGE_ENV, **env}, HOST_IP))
        assert img.bind_conflicts(bound) == [], f"{label}: EADDRINUSE between {img.bind_conflicts(bound)}"
        reach = img.reachable(bound)
        ports = Counter(port for _, port in reach.values())
        assert all(n == 1 for n in ports.values()), f"{label}: {reach}"
        wanted = {("tcp", c.MQTT_PORT), ("vmq", c.VERNEMQ_CLUSTER_PORT), ("http", c.VERNEMQ_HTTP_PORT)}
        if websocket:
            wanted.add(("ws", c.WS_PORT))
        assert {(name.split(".")[0], port) for name, (_, port) in reach.items()} == wanted, f"{label}: {reach}"


def test_the_load_balancer_health_check_hits_a_listener_that_serves_it(program):
    port, path = health_check(parse({"role": "local", "brokers": {"engine": "vernemq", "accept_eula": True}}, stack="x", source="x"))
    assert (port, path) == (c.VERNEMQ_HTTP_PORT, img.HEALTH_ROUTE[1])
    assert img.HEALTH_ROUTE[0] in img.DEFAULT_HTTP_MODULES
    for label, env, _ in _envs_to_check(program):
        conf = img.conf_block({**img.IMAGE_ENV, **env}, HOST_IP)
        http = [n for n, (_, p) in img.reachable(img.listeners(conf)).items() if n.startswith("http.") and p == port]
        assert len(http) == 1, label
        assert not [k for k, _ in conf if k.endswith(".http_modules")], f"{label}: the listener keeps the default modules"


def test_the_listener_model_matches_the_image_script_when_its_source_is_at_hand(tmp_path, program):
    """Cross-check of the model against docker-vernemq's own bin/vernemq.sh, run for real."""
    mirror = Path("/work/.mirror/vernemq+docker-vernemq/repo")
    if not mirror.exists() or not shutil.which("git"):
        pytest.skip("docker-vernemq source not available here")
    src = subprocess.run(  # noqa: S603
        ["git", f"--git-dir={mirror}", "show", "31299af:bin/vernemq.sh"],
        capture_output=True,
        text=True,
        check=True,  # noqa: S607
    ).stdout.splitlines()
    assert src[236].startswith("    env | grep DOCKER_VERNEMQ"), "line numbers moved"
    # The listener function (:22-57) and the block that writes vernemq.conf (:229-283), nothing else.
    part = "\n".join(src[21:57] + src[228:283])
    for label, env, _ in _envs_to_check(program)[:2] + _envs_to_check(program)[-1:]:
        conf = tmp_path / "vernemq.conf"
        conf.write_text("")
        run_env = {"PATH": os.environ["PATH"], **img.IMAGE_ENV, **env}
        script = f"IP_ADDRESS={HOST_IP}\nVERNEMQ_CONF_FILE={conf}\nVERNEMQ_CONF_LOCAL_FILE={tmp_path}/none\n{part}\n"
        proc = subprocess.run(["bash", "-c", script], env=run_env, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603, S607
        assert proc.returncode == 0, proc.stderr
        lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("##########")]
        real = sorted((k.strip(), v.strip()) for k, _, v in (ln.partition("=") for ln in lines))
        assert real == sorted(img.conf_block({**img.IMAGE_ENV, **env}, HOST_IP)), label


# --- conf keys, paths, defaults ----------------------------------------------------------------


def _schema_keys() -> dict[str, str]:
    keys = {}
    for line in CONF_KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            key, where = line.split("\t")
            keys.setdefault(key, where)
    return keys


def _matches(key: str, pattern: str) -> bool:
    a, b = key.split("."), pattern.split(".")
    return len(a) == len(b) and all(p == "$name" or p == k for k, p in zip(a, b, strict=True))


# Read by bin/vernemq.sh itself, not written to vernemq.conf (:237 filters them out).
CONSUMED_BY_THE_SCRIPT = {"DOCKER_VERNEMQ_DISCOVERY_NODE"}  # bin/vernemq.sh:118-139
# Only in the EULA binary's schema, not in the open source: docker-vernemq 31299af README.md:39.
BINARY_ONLY_KEYS = {"accept_eula"}


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "docker/vernemq/Dockerfile").read_text()
    return dict(re.findall(r"(DOCKER_VERNEMQ_[A-Z0-9_]+)=(\S+)", text))


def test_every_docker_vernemq_variable_maps_to_a_real_vernemq_conf_key(program):
    keys = _schema_keys()
    assert len(keys) > 400, "the key list is the whole schema"
    envs = [(label, env) for label, env, _ in _envs_to_check(program)]
    envs.append(("docker/vernemq/Dockerfile", _dockerfile_env()))
    envs.append(("secret env", {br.VERNEMQ_COOKIE_ENV: SECRET}))
    for label, env in envs:
        produced = dict(img.env_to_conf(env))
        assert len(produced) == len(set(env) - CONSUMED_BY_THE_SCRIPT), f"{label}: a variable vanished"
        for name, value in env.items():
            assert "__" not in value, f"{label}: {name}: vernemq.sh:237 rewrites '__' in values"
        for key in produced:
            if key in BINARY_ONLY_KEYS:
                continue
            assert any(_matches(key, k) for k in keys), f"{label}: {key} is no vernemq.conf key at 2.1.1"
    assert dict(img.env_to_conf({br.VERNEMQ_COOKIE_ENV: SECRET})) == {"distributed_cookie": SECRET}


def test_image_paths_uid_and_commands_the_project_relies_on():
    assert f"{img.IMAGE_UID}:{img.IMAGE_GID}" == VERNEMQ_UID
    script = plan_of("vernemq").files[("vernemq-1", "mqtt-broker-start")]
    assert f'chown -R {img.IMAGE_UID}:{img.IMAGE_GID} "$DATA/data"' in script
    assert f"-v /var/lib/mqtt-broker/data:{img.DATA_DIR} " in script
    assert DATA_DIRS["vernemq"] == img.DATA_DIR
    assert br.VERNEMQ_ETC == img.ETC_DIR and br.VERNEMQ_START == img.START_SCRIPT
    # `vmq-admin` and `vernemq ping` are found on the image's PATH (/vernemq/bin first).
    node_sh = (ROOT / "components/templates/node.sh.j2").read_text()
    assert "vmq-admin" in node_sh and "vernemq ping" in node_sh
    assert "/vernemq/bin" in img.BIN_DIR
    # Our image keeps the stock user.
    assert re.search(rf"^USER {img.IMAGE_UID}:{img.IMAGE_GID}$", (ROOT / "docker/vernemq/Dockerfile").read_text(), re.M)


def test_anonymous_clients_stay_refused_by_default(program):
    # vernemq 2.1.1 apps/vmq_server/priv/vmq_server.schema:8-11: allow_anonymous defaults to off.
    assert img.ALLOW_ANONYMOUS_DEFAULT == "off"
    for label, env, _ in _envs_to_check(program):
        assert dict(img.env_to_conf(env)).get("allow_anonymous", "off") == "off", label


def test_the_eula_requirement_says_commercial_use_needs_a_subscription():
    with pytest.raises(ConfigError, match="commercial use needs a paid VerneMQ subscription"):
        parse({"role": "local", "brokers": {"engine": "vernemq"}}, stack="x", source="Pulumi.x.yaml")
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `brokers.accept_eula`"))
    assert "subscription" in row
