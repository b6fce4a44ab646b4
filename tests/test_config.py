"""Bad input: one clear line naming the stack file and the key, exit 2, nothing registered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.config import ConfigError, parse
from tools import mockengine, plan

BAD = sorted((Path(__file__).parent / "bad_stacks").glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    key, problem = first.removeprefix("# expect: ").split(" | ")
    return key, problem


def test_the_bad_config_suite_is_large_enough():
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_stack_file_is_refused_with_one_line_naming_the_key(path, capsys, monkeypatch):
    registered: list = []
    monkeypatch.setattr(mockengine.RecordingMonitor, "RegisterResource", lambda self, req: registered.append(req))
    key, problem = _expectation(path)
    code = plan.main(["dev", "--config-file", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    shown = path.relative_to(mockengine.ROOT)  # files inside the project are named as the operator wrote them
    assert lines[0].startswith(f"{shown}: {key}: "), lines[0]
    assert problem in lines[0]
    assert registered == [], "no resource may be registered before the config is valid"


def test_cli_exit_code_and_stderr_through_a_real_process(tmp_path):
    bad = tmp_path / "Pulumi.x.yaml"
    bad.write_text("config:\n  aws:region: eu-central-1\n  mqtt-cluster:brokers:\n    count: 0\n")
    proc = subprocess.run([sys.executable, "-m", "tools.plan", "x", "--config-file", str(bad), "--json"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"{bad}: mqtt-cluster:brokers.count: must be at least 1 (got 0)"


def test_the_program_raises_a_run_error_so_pulumi_up_prints_one_clean_line(program):
    import pulumi

    with pytest.raises(pulumi.RunError) as info:
        program("dev", brokers={"count": 0})
    assert str(info.value) == "stacks/Pulumi.dev.yaml: mqtt-cluster:brokers.count: must be at least 1 (got 0)"


def test_defaults_are_secure_and_sane():
    cfg = parse({}, stack="dev", source="x", region="eu-central-1")
    assert cfg.brokers.engine == "emqx" and cfg.brokers.count == 3
    assert cfg.access.admin_cidrs == []  # nobody is an admin until the stack says so
    assert cfg.load_balancer.kind == "nlb" and not cfg.load_balancer.plain_mqtt
    assert "TLS13-1-2" in cfg.load_balancer.tls_policy
    assert cfg.network.azs == 3 and cfg.network.nat == "single"
    assert cfg.brokers.effective_image == "emqx/emqx:5.8.6"
    assert cfg.base_tags["Environment"] == "dev"


def test_every_problem_names_the_source_file():
    with pytest.raises(ConfigError) as info:
        parse({"network": {"azs": 9}}, stack="s", source="stacks/Pulumi.s.yaml", region="eu-west-1")
    assert str(info.value) == "stacks/Pulumi.s.yaml: mqtt-cluster:network.azs: must be at most 6 (got 9)"


def test_readme_documents_every_setting():
    from components.config import AccessConfig, BrokersConfig, LinksConfig, LoadBalancerConfig, LocalConfig, NetworkConfig

    readme = (mockengine.ROOT / "README.md").read_text()
    missing = [
        f"{section}.{field}"
        for section, model in (
            ("network", NetworkConfig),
            ("brokers", BrokersConfig),
            ("access", AccessConfig),
            ("load_balancer", LoadBalancerConfig),
            ("local", LocalConfig),
            ("links", LinksConfig),
        )
        for field in model.model_fields
        if f"| `{section}.{field}` |" not in readme
    ]
    assert not missing, f"README configuration reference lacks {missing}"
