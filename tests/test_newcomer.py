"""The newcomer path: `make up` / `make output` on a machine with only Docker and Python.

The Makefile's targets are run for real against stand-ins: a `pulumi` (and `docker`) script on a
controlled PATH that records its arguments and environment, a runtime venv whose python is the
project's, and the SDK's CLI installer replaced (sitecustomize) by one that records its arguments
and drops the stand-in CLI where the real one would land. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools import pulumi_cli

FAKE_PULUMI = """#!/bin/sh
# stand-in for the Pulumi CLI: records its arguments and backend environment
printf '%s\\n' "$(python3 -c 'import json,os,sys; print(json.dumps({"args": sys.argv[1:], "backend": os.environ.get("PULUMI_BACKEND_URL"), "passphrase": os.environ.get("PULUMI_CONFIG_PASSPHRASE")}))' "$@")" >> "$PULUMI_LOG"
case "$1 $2" in "stack output") echo "value-of-${5:-all}";; esac
exit 0
"""

# Replaces PulumiCommand.install in the make-run python: records (root, version), then puts the
# stand-in CLI at root/bin/pulumi, where the SDK's installer puts the real one.
SITECUSTOMIZE = """
import json, os, shutil
from pulumi.automation import PulumiCommand

def _install(cls, root=None, version=None, skip_version_check=False):
    with open(os.environ["INSTALL_LOG"], "a") as f:
        f.write(json.dumps({"root": root, "version": str(version)}) + "\\n")
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    shutil.copy(os.environ["FAKE_PULUMI"], os.path.join(root, "bin", "pulumi"))

PulumiCommand.install = classmethod(_install)
"""


@pytest.fixture
def rig(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = tmp_path / "fake-pulumi"
    fake.write_text(FAKE_PULUMI)
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexec "{ROOT / "venv" / "bin" / "python"}" "$@"\n')
    py.chmod(0o755)
    (venv / ".runtime").touch()  # newer than requirements.txt: the runtime venv is in place
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # The system's tools, minus any real docker or pulumi (Debian's docker.io is /usr/bin/docker).
    sysbin = tmp_path / "sysbin"
    sysbin.mkdir()
    for d in ("/bin", "/usr/bin"):
        for tool in Path(d).iterdir():
            link = sysbin / tool.name
            if tool.name not in ("docker", "dockerd", "pulumi") and not link.exists():
                link.symlink_to(tool)
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{bindir}:{sysbin}",
        "PULUMI_LOG": str(tmp_path / "pulumi.log"),
        "INSTALL_LOG": str(tmp_path / "install.log"),
        "FAKE_PULUMI": str(fake),
        "PYTHONPATH": str(stub),
    }

    class Rig:
        path = tmp_path

        def on_path(self, name: str, script: str) -> None:
            f = bindir / name
            f.write_text(script)
            f.chmod(0o755)

        def make(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
            cmd = ["make", "-s", f"VENV={venv}", f"CLI_ROOT={tmp_path / 'cli'}", *args]
            return subprocess.run(cmd, cwd=ROOT, env={**env, **extra}, capture_output=True, text=True, timeout=120)

        def calls(self, log: str) -> list[dict]:
            f = tmp_path / log
            return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []

    return Rig()


def test_output_runs_pulumi_stack_output_on_the_file_backend(rig):
    rig.on_path("pulumi", FAKE_PULUMI)
    proc = rig.make("output", "NAME=ca_file")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "value-of-ca_file\n"  # nothing else on stdout: CA=$(make -s output …) works
    (call,) = rig.calls("pulumi.log")
    assert call == {
        "args": ["stack", "output", "--stack", "local", "ca_file"],
        "backend": f"file://{ROOT}/.pulumi-state",
        "passphrase": "",
    }
    proc = rig.make("output", "NAME=dashboard_password", "SHOW_SECRETS=1", "STACK=dev", PULUMI_BACKEND_URL="s3://state-bucket")
    assert proc.returncode == 0, proc.stderr
    call = rig.calls("pulumi.log")[-1]
    assert call["args"] == ["stack", "output", "--stack", "dev", "--show-secrets", "dashboard_password"]
    assert call["backend"] == "s3://state-bucket" and call["passphrase"] is None
    assert rig.calls("install.log") == []  # a CLI on PATH is used as is


def test_a_missing_cli_is_installed_once_matching_the_sdk_into_the_project_dir(rig):
    proc = rig.make("output", "NAME=ca_file")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "value-of-ca_file\n"
    sdk = importlib.metadata.version("pulumi")
    assert rig.calls("install.log") == [{"root": str(rig.path / "cli"), "version": sdk}]
    assert f"installing {sdk}" in proc.stderr
    assert rig.calls("pulumi.log")[0]["args"][:2] == ["stack", "output"]
    rig.make("output", "NAME=ca_file")
    assert len(rig.calls("install.log")) == 1 and len(rig.calls("pulumi.log")) == 2


def test_up_checks_docker_before_creating_a_venv_or_installing_the_cli(rig, tmp_path):
    fresh = tmp_path / "fresh-venv"
    proc = rig.make("up", f"VENV={fresh}")
    assert proc.returncode != 0
    assert "needs Docker (no docker command on PATH)" in proc.stderr
    rig.on_path("docker", "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    proc = rig.make("up", f"VENV={fresh}")
    assert proc.returncode != 0
    assert "needs a running Docker daemon (docker info failed)" in proc.stderr
    assert not fresh.exists() and rig.calls("install.log") == [] and rig.calls("pulumi.log") == []


def test_up_with_docker_runs_the_local_stack_on_the_file_backend(rig):
    rig.on_path("docker", "#!/bin/sh\nexit 0\n")
    proc = rig.make("up")
    assert proc.returncode == 0, proc.stderr
    calls = [c["args"] for c in rig.calls("pulumi.log")]
    # The last call reads the Grafana URL for the closing hint (observability on the local stack).
    assert calls == [["stack", "select", "--create", "local"], ["up", "--yes"], ["stack", "output"], ["stack", "output", "grafana_url"]]
    assert "make -s output NAME=grafana_password SHOW_SECRETS=1" in proc.stdout
    assert {c["backend"] for c in rig.calls("pulumi.log")} == {f"file://{ROOT}/.pulumi-state"}
    assert "make -s output NAME=ca_file" in proc.stdout
    assert "pulumi stack output" not in proc.stdout


def test_the_runtime_venv_installs_only_the_program_requirements(tmp_path):
    venv = tmp_path / "v"
    out = subprocess.run(["make", "-n", f"VENV={venv}", f"{venv}/.runtime"], cwd=ROOT, capture_output=True, text=True).stdout
    assert f"-m venv {venv}" in out and "-r requirements.txt" in out
    assert "requirements-dev" not in out
    # make up's recipe never reaches for the test tooling or apt
    up = subprocess.run(["make", "-n", f"VENV={venv}", "up", "STACK=dev"], cwd=ROOT, capture_output=True, text=True)
    assert "requirements-dev" not in up.stdout + up.stderr and "apt-get" not in up.stdout + up.stderr
    plan = subprocess.run(["make", "-n", f"VENV={venv}", "plan", "STACK=dev"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "-r requirements.txt" in plan and "requirements-dev" not in plan and "-m tools.plan dev" in plan


def test_make_test_still_installs_everything_itself(tmp_path):
    venv = tmp_path / "v"
    out = subprocess.run(["make", "-n", f"VENV={venv}", "test"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "-r requirements-dev.txt" in out and "apt-get" in out and "pytest" in out
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_bench_keeps_the_committed_results_unless_asked(tmp_path):
    def dry(*args):
        return subprocess.run(["make", "-n", f"VENV={tmp_path / 'v'}", "bench", *args], cwd=ROOT, capture_output=True, text=True).stdout

    assert "-m bench.lb --out build/bench/lb.json" in dry()
    assert "-m bench.lb --out bench/results/lb.json" in dry("BENCH_SAVE=1")
    from bench import lb

    src = inspect.getsource(lb.main)
    assert 'default=Path("build/bench/lb.json")' in src


def test_resolve_prefers_path_then_the_local_copy_then_installs(tmp_path):
    installed = []

    def install(root: Path) -> None:
        installed.append(root)
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "pulumi").write_text("#!/bin/sh\n")
        (root / "bin" / "pulumi").chmod(0o755)

    assert pulumi_cli.resolve(tmp_path, which=lambda _: "/opt/pulumi/bin/pulumi", install=install) == "/opt/pulumi/bin/pulumi"
    assert installed == []
    assert pulumi_cli.resolve(tmp_path, which=lambda _: None, install=install) == str(tmp_path / "bin" / "pulumi")
    assert pulumi_cli.resolve(tmp_path, which=lambda _: None, install=install) == str(tmp_path / "bin" / "pulumi")
    assert installed == [tmp_path]


def test_the_sdk_installer_takes_root_and_version_as_used():
    from pulumi.automation import PulumiCommand

    # pulumi/pulumi v3.259.0 sdk/python/lib/pulumi/automation/_cmd.py:92-97
    params = inspect.signature(PulumiCommand.install).parameters
    assert {"root", "version"} <= set(params)
    assert str(pulumi_cli.sdk_version()) == importlib.metadata.version("pulumi")


# -- README ---------------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()


def test_readme_commands_stay_on_the_file_backend():
    # a bare `pulumi stack output` in the user's shell falls back to Pulumi Cloud
    assert not re.search(r"(^|[`$(\s])pulumi stack output", README, re.M), "use make output"
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "CA=$(make -s output NAME=ca_file)" in quick
    assert "make -s output NAME=dashboard_password SHOW_SECRETS=1" in quick


def test_readme_prerequisites_name_the_mqtt_client_and_docker_and_python():
    quick = README.split("## Quick start", 1)[1].split("```", 1)[0]
    assert "mosquitto-clients" in quick and "mosquitto_sub" in quick
    assert "Docker" in quick and "Python 3.11" in quick
    assert "Pulumi CLI" in quick and ".pulumi-cli/" in quick


@pytest.mark.parametrize("target", ["output", "pulumi", "up", "down", "preview"])
def test_help_lists_the_operator_targets(target):
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert re.search(rf"^make {target}\b", out, re.M)


def test_pulumi_wrapper_selects_the_stack_then_runs_the_arguments(rig):
    rig.on_path("pulumi", FAKE_PULUMI)
    proc = rig.make("pulumi", "STACK=dev", "ARGS=config set --path mqtt-cluster:brokers.count 5")
    assert proc.returncode == 0, proc.stderr
    calls = [c["args"] for c in rig.calls("pulumi.log")]
    assert calls == [["stack", "select", "--create", "dev"], ["config", "set", "--path", "mqtt-cluster:brokers.count", "5"]]
    assert os.path.isdir(ROOT / ".pulumi-state")
