"""Cross-region bridges log in to their peers: each bridged regional stack owns a generated bridge
user (in its own users file, ACL-scoped to the bridged topics) and exports its password as a
secret; the linking stack's connector to a peer logs in with the peer's exported credentials."""

from __future__ import annotations

import base64
import gzip
import json
import stat
import subprocess
from pathlib import Path

import pulumi
import pytest
from pyhocon import ConfigFactory

from components.config import BRIDGE_USER, ConfigError, filter_covers, parse
from components.links import BRIDGE_OUTPUTS, check
from components.renderers import auth as ra
from components.renderers.bridges import REDACTED, Peer, bridge_hocon, bridge_passwords, bridge_script, redacted
from tests.conftest import stack_config
from tests.test_region_links import _bridge_env
from tools import mockengine

SENTINEL = "Sentinel-bridge-pw-0xC0FFEE"
PEM = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"


def _cfg(auth: dict, **raw):
    return parse({"auth": auth, **raw}, stack="r", source="stacks/Pulumi.r.yaml", region="eu-central-1")


# --- the connector ------------------------------------------------------------------------------


PARAM = "/mqtt-cluster/a/links/bridge-passwords"


def test_the_connector_to_a_peer_logs_in_as_the_peers_bridge_user():
    peers = [Peer("b", "mqtt-b.example.com", PEM, BRIDGE_USER, SENTINEL), Peer("c", "mqtt-c.example.com", None, BRIDGE_USER, "pw-c")]
    public = bridge_hocon("a", peers, ["plant/#"])
    assert SENTINEL not in public and "password" not in ConfigFactory.parse_string(public)["connectors"]["mqtt"]["to-b"]
    # What the seed loads: the connectors, then the passwords it appends (their own lines).
    conf = ConfigFactory.parse_string(public + bridge_passwords(peers))
    b = conf["connectors"]["mqtt"]["to-b"]
    # username / password: emqx/emqx v5.8.6 apps/emqx_bridge_mqtt/src/emqx_bridge_mqtt_connector_schema.erl:123-134
    assert (b["username"], b["password"]) == (BRIDGE_USER, SENTINEL)
    assert b["server"] == "mqtt-b.example.com:8883" and b["ssl"]["cacertfile"] == PEM, "the connector is merged, not replaced"
    assert conf["connectors"]["mqtt"]["to-c"]["password"] == "pw-c"
    # The loop guard is untouched: bridge client ids keep their prefix, the rule skips them.
    assert b["clientid_prefix"] == "mqtt-bridge-a-"
    assert "regex_match(clientid, '^mqtt-bridge-') = false" in conf["rule_engine"]["rules"]["to_b"]["sql"]
    # The copy kept for review carries the placeholder, never the password.
    shown = bridge_passwords(redacted(peers))
    assert SENTINEL not in shown
    assert ConfigFactory.parse_string(public + shown)["connectors"]["mqtt"]["to-b"]["password"] == REDACTED
    # The script holds no password at all; the disabled copies carry none either: conf load
    # --merge keeps the stored one (emqx/emqx v5.8.6 apps/emqx_conf/src/emqx_conf_cli.erl:472-474, 698-703 deep_merge).
    script = bridge_script("a", peers, ["plant/#"], container="broker", passwords_parameter=PARAM, region="eu-central-1")
    assert SENTINEL not in script and "pw-c" not in script
    disabled = script.split("links-disabled.hocon\" <<'MQTT_CLUSTER_HOCON'\n", 1)[1].split("\nMQTT_CLUSTER_HOCON", 1)[0]
    d = ConfigFactory.parse_string(disabled)["connectors"]["mqtt"]["to-b"]
    assert d["enable"] is False and "password" not in d and d["username"] == BRIDGE_USER
    # Passwords with nowhere to come from are refused rather than dropped.
    with pytest.raises(ValueError, match="SSM parameter"):
        bridge_script("a", peers, ["plant/#"], container="broker")


def _host_env(tmp_path: Path, passwords: str | None) -> tuple[dict, Path]:
    """The seed host: the fake broker CLI, and Parameter Store holding the peers' passwords in eu-central-1."""
    env, state = _bridge_env(tmp_path, {"parameters": {f"eu-central-1 {PARAM}": passwords} if passwords is not None else {}})
    env["PATH"] = f"{Path(__file__).parent / 'fakes' / 'paramstore'}:{env['PATH']}"
    return env, state


def test_the_bridge_script_hands_the_password_to_the_broker_and_keeps_no_copy(tmp_path):
    peers = [Peer("b", "mqtt-b.example.com", PEM, BRIDGE_USER, SENTINEL)]
    script = tmp_path / "bridges.sh"
    script.write_text(bridge_script("a", peers, ["#"], container="broker", passwords_parameter=PARAM, region="eu-central-1"))
    assert subprocess.run(["shellcheck", "-S", "style", str(script)], capture_output=True).returncode == 0
    env, state = _host_env(tmp_path, bridge_passwords(peers))
    bridges = tmp_path / "data" / "bridges"
    for action in ("apply", "disable", "apply"):
        proc = subprocess.run(["bash", str(script), action], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert SENTINEL not in proc.stdout + proc.stderr
        # Nothing left on the seed's disk holds the password, and what is there is the broker's own.
        assert not (bridges / "links.hocon").exists()
        for f in bridges.iterdir():
            assert SENTINEL not in f.read_text(), f
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
    st = json.loads(state.read_text())
    loads = st["loads"]
    assert "exec broker emqx ctl conf load --merge /opt/emqx/data/bridges/links.hocon" in st["calls"]
    # apply: the broker got the credentials, read with decryption in the host's region; disable:
    # the same connector, off, password untouched and not read.
    assert [c for c in st["calls"] if "get-parameter" in c] == [
        f"aws ssm get-parameter --region eu-central-1 --name {PARAM} --with-decryption"
    ] * 2
    b = ConfigFactory.parse_string(loads[0])["connectors"]["mqtt"]["to-b"]
    assert (b["username"], b["password"], b["server"]) == (BRIDGE_USER, SENTINEL, "mqtt-b.example.com:8883")
    assert SENTINEL not in loads[1] and "enable = false" in loads[1]
    assert st["conf"]["connectors.mqtt.to-b"]["enable"] == "true"


def test_a_failed_load_removes_the_file_with_the_password(tmp_path):
    peers = [Peer("b", "mqtt-b.example.com", None, BRIDGE_USER, SENTINEL)]
    script = tmp_path / "bridges.sh"
    script.write_text(bridge_script("a", peers, ["#"], container="broker", passwords_parameter=PARAM, region="eu-central-1"))
    env, state = _host_env(tmp_path, bridge_passwords(peers))
    state.write_text(json.dumps({**json.loads(state.read_text()), "conf_load_fails": True}))
    proc = subprocess.run(["bash", str(script), "apply"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "Can't merge the new configurations!" in proc.stderr
    assert SENTINEL not in proc.stderr
    assert any("get-parameter" in c for c in json.loads(state.read_text())["calls"]), "the file had the password in it"
    assert not (tmp_path / "data" / "bridges" / "links.hocon").exists()


# --- the regional stack: its own bridge user -----------------------------------------------------


def test_the_bridge_user_is_scoped_to_the_bridged_topics_ahead_of_every_device_rule():
    cfg = _cfg({"bridge_topics": ["plant/#", "alerts/+"], "acl": [{"who": "all", "topics": ["#"]}]})
    lines = [line for line in ra.emqx_acl(cfg.auth).splitlines() if not line.startswith("%%")]
    # Rule shapes: emqx/emqx v5.8.6 apps/emqx_auth/etc/acl.conf:23-37; the first match decides, so
    # even an allow-everything device rule below cannot widen the bridge user's rights.
    assert lines == [
        '{allow, {username, "mqtt-bridge"}, publish, ["plant/#", "alerts/+"]}.',
        '{deny, {username, "mqtt-bridge"}, all, ["#"]}.',
        '{allow, all, all, ["#"]}.',
        "{deny, all}.",
    ]
    assert ra.bridge_acl(_cfg({}).auth) == []
    assert "mqtt-bridge" not in ra.emqx_acl(_cfg({}).auth)


@pytest.mark.parametrize("enabled", [False, True])
def test_the_regional_users_file_has_the_bridge_user_only_when_enabled(program, monkeypatch, enabled):
    built: list[tuple[dict, str]] = []
    original = ra.users_file

    def record(cfg, users, key):
        text = original(cfg, users, key)
        built.append((dict(users), text))
        return text

    monkeypatch.setattr(ra, "users_file", record)
    auth = {"bridge_topics": ["plant/#"]} if enabled else {}
    plan = program("dev", auth=auth)
    (users, text), *_ = built
    entries = {e["user_id"]: e for e in json.loads(text)}
    passwords = [r for r in plan.of_type("random:index/randomPassword:RandomPassword") if r.name == "auth-mqtt-bridge-password"]
    acl = plan.files[("emqx-1", "acl.conf")]
    if not enabled:
        assert BRIDGE_USER not in users and BRIDGE_USER not in entries and not passwords
        assert not set(BRIDGE_OUTPUTS) & set(plan.outputs) and "mqtt-bridge" not in acl
        return
    # Hashed like every user (bootstrap_type hash), its password generated and secret.
    assert entries[BRIDGE_USER]["password_hash"] == ra.emqx_password_hash(users[BRIDGE_USER], entries[BRIDGE_USER]["salt"])
    assert users[BRIDGE_USER] not in text
    (pw,) = passwords
    assert pw.inputs["length"] == 24 and pw.inputs["special"] is False
    assert plan.outputs["bridge_username"] == BRIDGE_USER and plan.outputs["bridge_password"] == "[secret]"
    assert '{allow, {username, "mqtt-bridge"}, publish, ["plant/#"]}.' in acl
    params = {p.inputs["name"]: p.inputs for p in plan.of_type("aws:ssm/parameter:Parameter")}
    assert params["/mqtt-cluster/dev/auth-users"]["value"] == "[secret]"


@pytest.mark.parametrize("enabled", [False, True])
def test_the_hosts_of_a_bridged_region_may_read_the_parameter_the_linking_stack_writes_and_no_other(program, enabled):
    plan = program("dev", auth={"bridge_topics": ["#"]} if enabled else {})
    (policy,) = [p for p in plan.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == "brokers-read-own-params"]
    doc = json.loads(policy.inputs["policy"])
    (allow,) = [st for st in doc["Statement"] if st["Effect"] == "Allow" and st["Action"] == "ssm:GetParameter"]
    (deny,) = [st for st in doc["Statement"] if st["Effect"] == "Deny"]
    arn = "arn:aws:ssm:eu-central-1:123456789012:parameter/mqtt-cluster/dev/links/bridge-passwords"
    links = [a for a in allow["Resource"] if "/links/" in a]
    assert links == ([arn] if enabled else [])
    assert set(deny["NotResource"]) == set(allow["Resource"]), "every other parameter stays denied"
    if enabled:
        # The name the linking stack writes to (its bridge_passwords_parameter output) is that one.
        assert plan.outputs["bridge_passwords_parameter"] == "/mqtt-cluster/dev/links/bridge-passwords"
        assert not [p for p in plan.of_type("aws:ssm/parameter:Parameter") if "/links/" in p.inputs["name"]], "the linking stack owns it"
    else:
        assert "bridge_passwords_parameter" not in plan.outputs


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"auth": {"bridge_topics": []}}, "auth.bridge_topics: "),
        ({"auth": {"bridge_topics": ["plant/#/x"]}}, "auth.bridge_topics: "),
        ({"auth": {"bridge_topics": ["devices/${username}/#"]}}, "auth.bridge_topics: "),
        ({"auth": {"bridge_topics": ["#"]}, "brokers": {"engine": "vernemq", "accept_eula": True}}, "auth.bridge_topics: "),
        (
            {"auth": {"bridge_topics": ["#"], "mechanism": "jwt", "jwt": {"jwks_endpoint": "https://id.example.com/jwks"}}},
            "auth.bridge_topics: ",
        ),
        ({"users": {"mqtt-bridge": "x"}}, "users: mqtt-bridge is reserved"),
    ],
)
def test_bad_bridge_settings_are_refused_naming_the_key(raw, key):
    with pytest.raises(ConfigError, match=rf"mqtt-cluster:{key}"):
        parse(raw, stack="r", source="stacks/Pulumi.r.yaml", region="eu-central-1")


# --- the linking stack ---------------------------------------------------------------------------


def test_filter_coverage():
    assert filter_covers("#", "plant/a/#") and filter_covers("plant/#", "plant/+/t") and filter_covers("plant/+", "plant/x")
    assert filter_covers("plant/#", "plant")  # '#' also matches the parent level
    assert not filter_covers("plant/+", "plant/#") and not filter_covers("plant/#", "#")
    assert not filter_covers("plant/x", "plant/+") and not filter_covers("a/b", "a/b/c") and not filter_covers("a/b/c", "a/b")


def _write(d: Path, name: str, region: str, cidr: str, auth: dict | None, **brokers) -> None:
    config = {
        "mqtt-cluster:brokers": {"count": 3, **brokers},
        "aws:region": region,
        "mqtt-cluster:network": {"cidr": cidr},
        "mqtt-cluster:access": {"admin_cidrs": ["198.51.100.0/24"], "bastion": True},
    }
    if auth is not None:
        config["mqtt-cluster:auth"] = auth
    (d / f"Pulumi.{name}.yaml").write_text(json.dumps({"config": config}))


def test_the_static_check_refuses_a_link_the_regions_do_not_admit(tmp_path):
    _write(tmp_path, "a", "eu-west-1", "10.1.0.0/16", {"bridge_topics": ["plant/#", "alerts/+"]})
    _write(tmp_path, "b", "us-west-2", "10.2.0.0/16", None)
    g = lambda **links: parse({"role": "global", "links": {"stacks": ["a", "b"], "mode": "bridge", **links}}, stack="g", source="x")  # noqa: E731
    with pytest.raises(ConfigError) as e:
        check(g(bridge_topics=["plant/#"]), "stacks/Pulumi.g.yaml", tmp_path)
    assert str(e.value) == (
        "stacks/Pulumi.g.yaml: mqtt-cluster:links.bridge_topics: g bridges plant/# into b, which admits none: no bridge user "
        "(set mqtt-cluster:auth.bridge_topics in stacks/Pulumi.b.yaml)"
    )
    _write(tmp_path, "b", "us-west-2", "10.2.0.0/16", {"bridge_topics": ["#"]})
    with pytest.raises(ConfigError, match=r"links.bridge_topics: g bridges #, alerts/x/y into a, which admits plant/#, alerts/\+ "):
        check(g(bridge_topics=["#", "plant/line-1/#", "alerts/x/y"]), "x", tmp_path)
    assert set(check(g(bridge_topics=["plant/line-1/#", "alerts/+"]), "x", tmp_path)) == {"a", "b"}
    # Cluster mode logs in as cluster nodes, not over MQTT: no bridge user needed.
    _write(tmp_path, "b", "us-west-2", "10.2.0.0/16", None, cluster_with="a")
    assert set(check(g(mode="cluster", bridge_topics=["#"]), "x", tmp_path)) == {"a", "b"}


def test_the_linking_plan_shows_the_peers_password_only_as_secret(bridged_stacks):
    bridged_stacks("dev", ["#"])
    bridged_stacks("edge", ["#"])
    config = stack_config("prod-global")
    config["mqtt-cluster:links"] = json.dumps({"stacks": ["dev", "edge"], "mode": "bridge"})
    outputs = mockengine.resolve_references(config)
    assert outputs["edge"]["bridge_password"] == "[secret]" and outputs["edge"]["bridge_username"] == BRIDGE_USER
    outputs["edge"]["bridge_password"] = SENTINEL  # as a real StackReference would hand it over
    outputs["dev"]["bridge_password"] = SENTINEL + "-dev"
    plan = mockengine.run_program("prod-global", config, stack_outputs=outputs)
    everything = [json.dumps(r.inputs) for r in plan.resources] + [json.dumps(plan.outputs)] + list(plan.files.values())
    assert all(SENTINEL not in text for text in everything)
    commands = {c.name: c.inputs for c in plan.of_type("command:local:Command")}
    for stack in ("dev", "edge"):
        # Neither the script (a command-line argument here, SSM command parameters on the way to
        # the host) nor the environment carries a password; the SecureString holds them.
        step = commands[f"links-bridges-{stack}"]["interpreter"][2]
        assert (
            SENTINEL not in step
            and SENTINEL not in gzip.decompress(base64.b64decode(step.split("NODE_SCRIPT_GZ='", 1)[1].split("'", 1)[0])).decode()
        )
        assert "[secret]" not in json.dumps(commands[f"links-bridges-{stack}"]["environment"])
    (param,) = [p for p in plan.of_type("aws:ssm/parameter:Parameter") if p.name == "links-bridge-passwords-dev"]
    assert param.inputs["value"] == "[secret]" and param.inputs["type"] == "SecureString"
    # The reviewable copies: dev's connector to edge logs in as edge's bridge user, password [secret].
    shown = plan.files[("dev/seed", "bridges.sh")]
    hocon = shown.split("links.hocon\" <<'MQTT_CLUSTER_HOCON'\n", 1)[1].split("\nMQTT_CLUSTER_HOCON", 1)[0]
    hocon += "\n" + plan.files[("dev/seed", "bridge-passwords.hocon")]
    to_edge = ConfigFactory.parse_string(hocon)["connectors"]["mqtt"]["to-edge"]
    assert (to_edge["username"], to_edge["password"]) == (BRIDGE_USER, REDACTED)


def test_a_peer_deployed_without_a_bridge_user_output_is_refused_and_nothing_links(bridged_stacks, registered_types):
    bridged_stacks("dev", ["#"])
    bridged_stacks("edge", ["#"])
    config = stack_config("prod-global")
    config["mqtt-cluster:links"] = json.dumps({"stacks": ["dev", "edge"], "mode": "bridge"})
    outputs = mockengine.resolve_references(config)
    del outputs["edge"]["bridge_password"]
    registered = registered_types
    registered.clear()  # only what the linking program registers counts
    with pytest.raises(pulumi.RunError) as e:
        mockengine.run_program("prod-global", config, stack_outputs=outputs)
    assert str(e.value).endswith(
        "Pulumi.prod-global.yaml: mqtt-cluster:links.stacks: edge has no output 'bridge_password' (update edge with this version first)"
    )
    assert not [t for t in registered if t.startswith(("aws:", "command:"))]
