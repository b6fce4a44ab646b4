"""The offline plan applies what the Pulumi CLI applies before the program runs, and what the engine
refuses while it runs. Each rule cites its source in tools/cliconfig.py / components/stackfile.py
(pulumi/pulumi v3.259.0, go-yaml/yaml v3.0.1)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from components import stackfile
from components.config import OFFLINE_SECRET_PREFIX, SECRET_KEYS, ConfigError, parse
from tests.conftest import STACK_FILES, STACKS, plan_of
from tools import cliconfig, mockengine, plan

PROJECT_FILE = mockengine.ROOT / "Pulumi.yaml"


# --- 1. Project config declarations ----------------------------------------------------------


@pytest.mark.parametrize("path", STACK_FILES, ids=STACKS)
def test_every_shipped_stack_passes_the_cli_project_config_rules(path):
    project = cliconfig.load_project(PROJECT_FILE)
    stack = path.name[len("Pulumi.") : -len(".yaml")]
    values = cliconfig.read_stack(path, project)
    cliconfig.apply_project_config(stack, project, values, str(path))  # raises what the CLI refuses


def test_project_declares_no_key_that_every_stack_must_set():
    project = cliconfig.load_project(PROJECT_FILE)
    required = [k for k, d in project.config.items() if d.default is None and d.value is None]
    assert required == [], "a declared key without default makes the CLI refuse every stack lacking it"


def test_project_defaults_are_merged_into_what_the_program_receives():
    config, _ = mockengine.stack_config_of("dev", mockengine.stack_file("dev"))
    assert "role" not in mockengine.read_stack_file(mockengine.stack_file("dev"))["config"]
    assert config["mqtt-cluster:role"] == "regional"  # Pulumi.yaml default, config.go:327-348


def _pair(tmp_path: Path, project_config: str, stack_config: str) -> tuple[Path, Path]:
    project = tmp_path / "Pulumi.yaml"
    project.write_text("name: mqtt-cluster\nruntime: python\nconfig:\n" + textwrap.indent(textwrap.dedent(project_config), "  "))
    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text("config:\n  aws:region: eu-central-1\n" + textwrap.indent(textwrap.dedent(stack_config), "  "))
    return project, stack


def _refused(capsys, monkeypatch, project: Path, stack: Path) -> str:
    registered: list = []
    monkeypatch.setattr(mockengine.RecordingMonitor, "RegisterResource", lambda self, req: registered.append(req))
    code = plan.main(["x", "--config-file", str(stack), "--project-file", str(project)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert registered == []
    return lines[0]


# Synthetic Pulumi.yaml / stack pairs the CLI refuses, with the CLI's own message (config.go:60,
# :126-133, :146-151; project.go:843-886).
CLI_REFUSALS = [
    ("zone:\n  type: string\n", "", "stack", "mqtt-cluster:zone", "Stack 'x' is missing configuration value 'zone'"),
    (
        "zone: {type: string}\nsize: {type: integer}\nalpha: {}\n",
        "",
        "stack",
        "mqtt-cluster:alpha",
        "Stack 'x' is missing configuration values 'alpha', 'size' and 'zone'",
    ),
    ("size:\n  type: integer\n", "mqtt-cluster:size: three\n", "stack", "mqtt-cluster:size", "must be of type 'integer'"),
    ("on_call:\n  type: boolean\n", "mqtt-cluster:on_call: on\n", "stack", "mqtt-cluster:on_call", "must be of type 'boolean'"),
    (
        "names:\n  type: array\n  items: {type: string}\n",
        "mqtt-cluster:names: [a, 1]\n",
        "stack",
        "mqtt-cluster:names",
        "Stack 'x' with configuration key 'names' must be of type 'array<string>'",
    ),
    ("extra:\n  type: object\n", "mqtt-cluster:extra: flat\n", "stack", "mqtt-cluster:extra", "must be of type 'object'"),
    (
        "token:\n  type: string\n  secret: true\n",
        "mqtt-cluster:token: in-clear\n",
        "stack",
        "mqtt-cluster:token",
        "Stack 'x' with configuration key 'token' must be encrypted as it's secret",
    ),
    (
        "names:\n  type: array\n",
        "",
        "project",
        "names",
        "The configuration key 'names' declares an array but does not specify the underlying type via the 'items' attribute",
    ),
    (
        "size:\n  type: integer\n  default: big\n",
        "",
        "project",
        "size",
        "The default value specified for configuration key 'size' is not of the expected type 'integer'",
    ),
    (
        "size:\n  default: 1\n  value: 2\n",
        "",
        "project",
        "size",
        "project config 'size' cannot have both a 'default' and 'value' attribute",
    ),
    (
        "aws:region:\n  type: string\n",
        "",
        "project",
        "aws:region",
        "Configuration key 'aws:region' is not namespaced by the project and should not define a type",
    ),
]


@pytest.mark.parametrize(("declared", "stack_cfg", "where", "key", "message"), CLI_REFUSALS, ids=[c[4][:40] for c in CLI_REFUSALS])
def test_what_the_cli_refuses_the_offline_plan_refuses(tmp_path, capsys, monkeypatch, declared, stack_cfg, where, key, message):
    project, stack = _pair(tmp_path, declared, stack_cfg)
    line = _refused(capsys, monkeypatch, project, stack)
    source = project if where == "project" else stack
    assert line.startswith(f"{source}: {key}: "), line
    assert message in line


@pytest.mark.parametrize(
    ("declared", "value"),
    [
        ("type: integer", '"3"'),  # strings that Atoi accepts (project.go:782-797)
        ("type: integer", "3"),
        ("type: boolean", "true"),
        ("type: string", "3"),  # a top-level scalar reaches the check as its text
        ("type: object", "{a: 1}"),
        ("{type: array, items: {type: integer}}", "[1, 2]"),
    ],
)
def test_values_the_cli_accepts_for_a_declared_type(declared, value, tmp_path):
    body = declared if declared.startswith("{") else "{" + declared + "}"
    project_path, stack_path = _pair(tmp_path, f"k: {body}\n", f"mqtt-cluster:k: {value}\n")
    project = cliconfig.load_project(project_path)
    merged = cliconfig.apply_project_config("x", project, cliconfig.read_stack(stack_path, project), str(stack_path))
    assert "mqtt-cluster:k" in merged


def test_defaults_fill_only_what_the_stack_does_not_set(tmp_path):
    project_path, stack_path = _pair(tmp_path, "a: {type: integer, default: 7}\nb: 5\n", "mqtt-cluster:b: 6\n")
    project = cliconfig.load_project(project_path)
    merged = cliconfig.apply_project_config("x", project, cliconfig.read_stack(stack_path, project), str(stack_path))
    config, _ = cliconfig.program_config(merged)
    assert config["mqtt-cluster:a"] == "7" and config["mqtt-cluster:b"] == "6"


# --- 2. YAML as go-yaml v3 reads it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("no", "no"),
        ("y", "y"),
        ("n", "n"),
        ("True", True),
        ("FALSE", False),
        ("0o17", 15),
        ("0x1F", 31),
        ("1_000", 1000),
        ("1:20", "1:20"),  # YAML 1.1 sexagesimal; a string in YAML 1.2
        ("~", None),
        ("'true'", "true"),
        ("2024-01-02", "2024-01-02 00:00:00 +0000 UTC"),  # Go's time.Time.String(), object.go:490
    ],
)
def test_scalars_resolve_as_go_yaml_v3(text, value):
    assert stackfile.load(f"k: {text}\n") == {"k": value}


def test_pyyaml_alone_would_read_on_as_true():
    import yaml

    assert yaml.safe_load("k: on\n") == {"k": True}  # the YAML 1.1 reading the CLI does not share
    assert stackfile.load("k: on\n") == {"k": "on"}


def test_a_key_given_twice_is_refused_as_go_yaml_refuses_it():
    with pytest.raises(stackfile.StackFileError, match=r'line 3: mapping key "a" already defined at line 1'):
        stackfile.load("a: 1\nb: 2\na: 3\n")


def test_websocket_on_reaches_the_model_as_a_string_and_is_refused(tmp_path, capsys):
    path = _stack(tmp_path, "mqtt-cluster:brokers:\n  websocket: on\n")
    config, _ = mockengine.stack_config_of("n", path)
    assert config["mqtt-cluster:brokers"] == '{"websocket":"on"}'
    assert plan.main(["n", "--config-file", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f'{path}: mqtt-cluster:brokers.websocket: must be true or false (got "on")'


# --- 3. Nested secrets -------------------------------------------------------------------------


def _stack(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "Pulumi.n.yaml"
    path.write_text("config:\n  aws:region: eu-central-1\n" + textwrap.indent(textwrap.dedent(body), "  "))
    return path


def test_a_secret_nested_in_a_section_plans_with_a_marked_placeholder(tmp_path):
    # What `pulumi config set --secret --path mqtt-cluster:load_balancer.certificate_arn …` writes.
    path = _stack(tmp_path, "mqtt-cluster:load_balancer:\n  kind: nlb\n  certificate_arn:\n    secure: v1:AAAABBBBCCCC\n")
    config, secret_keys = mockengine.stack_config_of("n", path)
    assert "mqtt-cluster:load_balancer" in secret_keys  # the whole top-level key (map.go:104-113)
    assert json.loads(config["mqtt-cluster:load_balancer"])["certificate_arn"] == f"{OFFLINE_SECRET_PREFIX}load_balancer.certificate_arn"
    p = mockengine.plan_stack("n", path)
    listeners = p.of_type("aws:lb/listener:Listener")
    assert listeners and all(r.inputs["certificateArn"] == f"{OFFLINE_SECRET_PREFIX}load_balancer.certificate_arn" for r in listeners)
    assert not p.of_type("aws:acm/certificate:Certificate"), "the stack's certificate is used, none is issued"


def test_a_nested_secret_still_meets_the_cross_key_rules(tmp_path, capsys):
    path = _stack(tmp_path, "mqtt-cluster:load_balancer:\n  kind: nginx\n  certificate_arn:\n    secure: v1:AAAA\n")
    assert plan.main(["n", "--config-file", str(path)]) == 2
    assert "mqtt-cluster:load_balancer.certificate_arn: an ACM certificate cannot be installed on nginx hosts" in capsys.readouterr().err


def test_an_encrypted_section_value_used_in_clear_is_reported_not_hidden():
    from components.settings import clear_use_warnings

    # A nested secret makes the whole section secret; the program carries only SECRET_KEYS as secrets.
    (warning,) = clear_use_warnings({"load_balancer", "cookie", "users"})
    assert warning.startswith("mqtt-cluster:load_balancer holds a value set with --secret")
    assert "state stores them unencrypted" in warning
    assert clear_use_warnings(set(SECRET_KEYS)) == []


# --- 4. Plaintext secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_a_secret_key_in_clear_is_refused_and_encrypted_is_accepted(key):
    with pytest.raises(ConfigError) as info:
        parse(
            {key: {"sensor-1": "plain"} if key == "users" else "plain"},
            stack="s",
            source="stacks/Pulumi.s.yaml",
            region="eu-central-1",
            secret_keys=set(),
        )
    assert str(info.value) == (
        f"stacks/Pulumi.s.yaml: mqtt-cluster:{key}: is a secret but stored in clear; "
        f"remove it and run `pulumi config set --secret mqtt-cluster:{key} …`"
    )
    raw = {
        "license": {"license": "x", "brokers": {"version": "5.9.0"}},
        "jwt_secret": {"jwt_secret": "x", "auth": {"mechanism": "jwt"}},
        "users": {"users": {"sensor-1": "x"}},
    }.get(key, {key: "x"})
    parse(raw, stack="s", source="x", region="eu-central-1", secret_keys={key})


def test_the_secret_key_list_is_the_one_rule(monkeypatch):
    # A key added to SECRET_KEYS is enforced without another line of code.
    monkeypatch.setattr("components.config.SECRET_KEYS", frozenset({*SECRET_KEYS, "environment"}))
    with pytest.raises(ConfigError, match="pulumi config set --secret mqtt-cluster:environment"):
        parse({"environment": "dev"}, stack="s", source="x", region="eu-central-1", secret_keys=set())


def test_an_encrypted_cookie_plans_and_stays_secret(tmp_path):
    path = _stack(tmp_path, "mqtt-cluster:cookie:\n  secure: v1:Q09PS0lF\n")
    p = mockengine.plan_stack("n", path)
    params = {r.inputs["name"]: r.inputs for r in p.of_type("aws:ssm/parameter:Parameter")}
    assert params["/mqtt-cluster/n/cookie"]["value"] == "[secret]"
    assert not p.of_type("random:index/randomPassword:RandomPassword") or all(
        r.name != "secrets-cookie" for r in p.of_type("random:index/randomPassword:RandomPassword")
    )


# --- 5. Unique URNs ----------------------------------------------------------------------------


def test_the_mock_engine_refuses_a_duplicate_urn_as_the_engine_does(tmp_path, monkeypatch, capsys):
    (tmp_path / "__main__.py").write_text(
        "import pulumi\npulumi.CustomResource('test:index:Thing', 'same', {})\npulumi.CustomResource('test:index:Thing', 'same', {})\n"
    )
    with pytest.raises(mockengine.DuplicateUrnError) as info:
        monkeypatch.setattr(mockengine, "ROOT", tmp_path)
        mockengine.run_program("dup", {}, stack_outputs={})
    urn = info.value.urn
    assert urn.startswith("urn:pulumi:dup::mqtt-cluster::") and urn.endswith("test:index:Thing::same")
    assert str(info.value) == f"Duplicate resource URN '{urn}'; try giving it a unique name"  # diag/errors.go:33
    stack = tmp_path / "Pulumi.dup.yaml"
    stack.write_text("config: {}\n")
    assert plan.main(["dup", "--config-file", str(stack), "--project-file", str(PROJECT_FILE)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"Pulumi.dup.yaml: {info.value}"]  # named relative to the project root (here tmp_path)


def test_classic_elb_with_plain_mqtt_and_proxy_protocol_plans(program):
    p = program("dev", load_balancer={"kind": "elb", "plain_mqtt": True, "proxy_protocol": True})
    ports = sorted(r.inputs["instancePort"] for r in p.of_type("aws:elb/loadBalancerBackendServerPolicy:LoadBalancerBackendServerPolicy"))
    assert ports == [1883, 8083]  # one policy per broker port, 1883 serving both 1883 and 8883
    assert len({r.urn for r in p.resources}) == len(p.resources)


# --- 6. Resource options -----------------------------------------------------------------------


def test_every_resource_carries_its_options_in_the_json():
    doc = plan_of("dev").as_json()
    assert all(isinstance(r["options"], dict) for r in doc["resources"])
    assert all(v not in ([], {}, "", False, None) for r in doc["resources"] for v in r["options"].values()), "non-empty only"


def test_broker_volume_attachments_are_deleted_before_replacement():
    attachments = plan_of("dev").of_type("aws:ec2/volumeAttachment:VolumeAttachment")
    assert attachments and all(r.options.get("deleteBeforeReplace") is True for r in attachments)


def test_broker_instances_ignore_ami_changes():
    brokers = [r for r in plan_of("dev").of_type("aws:ec2/instance:Instance") if r.name.startswith("brokers-")]
    assert brokers and all("ami" in r.options.get("ignoreChanges", []) for r in brokers)


def test_a_join_depends_on_the_seed_explicitly_not_on_every_input():
    p = plan_of("dev")
    seed = p.named("brokers-emqx-1")
    join = p.named("ops-member-emqx-2")
    assert seed.urn in join.options["dependsOn"]
    nat = p.named("net-nat-1")
    igw = p.named("net-igw")
    assert nat.options["dependsOn"] == [igw.urn]  # explicit only …
    assert set(nat.dependencies) > {igw.urn}  # … while dependencies also hold the property ones


def test_resources_without_options_have_none():
    p = plan_of("dev")
    vpc = p.of_type("aws:ec2/vpc:Vpc")[0]
    assert vpc.options == {}


# --- 7. `pulumi config set` habits -------------------------------------------------------------


def test_a_tag_stored_as_a_number_is_its_text(tmp_path):
    # `pulumi config set --path 'mqtt-cluster:tags.CostCenter' 1234` writes the number 1234.
    path = _stack(tmp_path, "mqtt-cluster:tags:\n  CostCenter: 1234\n")
    vpc = mockengine.plan_stack("n", path).of_type("aws:ec2/vpc:Vpc")[0]
    assert vpc.inputs["tags"]["CostCenter"] == "1234"
