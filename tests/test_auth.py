"""Devices authenticate: the model's defaults, the rendered EMQX/VerneMQ settings checked against the
real schemas (facts cited below), the hash formats, secrets never in plain sight, and users
changing without replacing a host."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess

import pytest
from pyhocon import ConfigFactory

from components.config import ConfigError, parse
from components.renderers import auth as ra
from components.renderers import broker as br
from components.renderers import cloud_init
from components.renderers.nodes import node_specs
from tests.conftest import STACKS, plan_of, stack_config
from tools import mockengine

SENTINEL_PW = "Sentinel-Passw0rd-4417"
SENTINEL_JWT = "Sentinel-Jwt-Key-9921"


def _cfg(raw: dict | None = None, region: str | None = "eu-central-1"):
    return parse(raw or {}, stack="dev", source="stacks/Pulumi.dev.yaml", region=region)


def _role(stack: str) -> str:
    return json.loads(json.dumps(stack_config(stack))).get("mqtt-cluster:role", "regional")


BROKER_STACKS = [s for s in STACKS if _role(s) in ("regional", "local")]


# --- the model ---------------------------------------------------------------------------------
def test_auth_is_on_by_default_with_deny_when_nothing_matches():
    a = _cfg().auth
    assert (a.mechanism, a.allow_anonymous, a.no_match) == ("password", False, "deny")
    assert [(r.permission, r.who, r.action, r.topics) for r in a.acl] == [("allow", "all", "all", ["devices/${username}/#"])]


def test_users_are_names_only_in_the_model():
    cfg = _cfg({"users": {"bob": SENTINEL_PW, "alice": SENTINEL_PW}})
    assert cfg.users == ["alice", "bob"]
    assert SENTINEL_PW not in cfg.model_dump_json()


def test_anonymous_is_accepted_only_on_narrowed_client_networks():
    ok = _cfg({"auth": {"allow_anonymous": True}, "access": {"client_cidrs": ["198.51.100.0/24"]}})
    assert ok.auth.allow_anonymous
    with pytest.raises(ConfigError, match=r"mqtt-cluster:auth.allow_anonymous: .*world-open"):
        _cfg({"auth": {"allow_anonymous": True}, "access": {"client_cidrs": ["::/0"]}})


def test_jwt_secret_and_jwks_together_are_refused():
    with pytest.raises(ConfigError, match="mqtt-cluster:jwt_secret: .*one or the other"):
        _cfg({"jwt_secret": "x", "auth": {"mechanism": "jwt", "jwt": {"jwks_endpoint": "https://i.example.com/jwks"}}})


@pytest.mark.parametrize("stack", BROKER_STACKS)
def test_every_shipped_stack_authenticates_devices_by_default(stack):
    plan = plan_of(stack)
    engine = "emqx" if any(h.startswith("emqx") for h, _ in plan.files) else "vernemq"
    hosts = sorted({h for h, _ in plan.files if h.startswith(engine) and "replicant" not in h})
    assert hosts
    for host in hosts:
        if engine == "emqx":
            conf = ConfigFactory.parse_string(plan.files[(host, "emqx.conf")])
            chain = conf["authentication"]
            assert [a["mechanism"] for a in chain] == ["password_based"] and chain[0]["bootstrap_type"] == "hash"
            assert conf["authorization.no_match"] == "deny"
            if (host, "acl.conf") in plan.files:  # AWS host files; the local stack uploads the same text
                assert plan.files[(host, "acl.conf")].rstrip().endswith("{deny, all}.")
        else:
            env = dict(line.split("=", 1) for line in plan.files[(host, "broker.env")].splitlines())
            assert env["DOCKER_VERNEMQ_ALLOW_ANONYMOUS"] == "off"
            assert env["DOCKER_VERNEMQ_PLUGINS__VMQ_PASSWD"] == env["DOCKER_VERNEMQ_PLUGINS__VMQ_ACL"] == "on"


# --- EMQX: rendered HOCON against the v5.8.6 schema ---------------------------------------------
# Keys of emqx/emqx v5.8.6, copied as facts:
BUILTIN_DB_KEYS = {
    # apps/emqx_auth_mnesia/src/emqx_authn_mnesia_schema.erl:46-49,66-90 (+ common enable/backend)
    "mechanism", "backend", "user_id_type", "password_hash_algorithm", "bootstrap_file", "bootstrap_type", "enable",
}  # fmt: skip
PBKDF2_KEYS = {"name", "mac_fun", "iterations", "dk_length"}  # apps/emqx_auth/src/emqx_authn/emqx_authn_password_hashing.erl:85-115
PBKDF2_MAC_FUNS = {"md4", "md5", "ripemd160", "sha", "sha224", "sha256", "sha384", "sha512"}  # ...password_hashing.erl:99
BOOTSTRAP_TYPES = {"hash", "plain"}  # emqx_authn_mnesia_schema.erl:87
JWT_COMMON = {
    "mechanism",
    "acl_claim_name",
    "verify_claims",
    "disconnect_after_expire",
    "from",
    "enable",
}  # emqx_authn_jwt_schema.erl:131-142
JWT_HMAC_KEYS = {"use_jwks", "algorithm", "secret", "secret_base64_encoded"} | JWT_COMMON  # emqx_authn_jwt_schema.erl:57-72
JWT_JWKS_KEYS = {"use_jwks", "endpoint", "headers", "pool_size", "refresh_interval", "ssl"} | JWT_COMMON  # emqx_authn_jwt_schema.erl:90-108
AUTHZ_KEYS = {"no_match", "deny_action", "cache", "sources"}  # apps/emqx/src/emqx_schema.erl:2597-2622 + emqx_authz_schema.erl
AUTHZ_CACHE_KEYS = {"enable", "max_size", "ttl", "excludes"}  # apps/emqx/src/emqx_schema.erl:349-381
FILE_SOURCE_KEYS = {"type", "enable", "path"}  # apps/emqx_auth/src/emqx_authz/sources/emqx_authz_file_schema.erl:38-50


def _emqx_conf(raw: dict) -> tuple:
    cfg = _cfg(raw)
    nodes = node_specs(cfg)
    text = br.emqx_hocon(cfg, nodes[0], [n.node_name for n in nodes])
    return cfg, ConfigFactory.parse_string(text), text


def _assert_authz(conf) -> None:
    authz = conf["authorization"]
    assert set(authz) <= AUTHZ_KEYS and set(authz["cache"]) <= AUTHZ_CACHE_KEYS
    assert authz["no_match"] in ("allow", "deny") and authz["deny_action"] in ("ignore", "disconnect")
    assert [set(s) for s in authz["sources"]] == [FILE_SOURCE_KEYS]
    assert authz["sources"][0]["type"] == "file" and authz["sources"][0]["path"] == ra.EMQX_ACL_FILE


def test_emqx_password_mechanism_uses_only_schema_keys():
    _, conf, _ = _emqx_conf({})
    (a,) = conf["authentication"]
    assert set(a) <= BUILTIN_DB_KEYS
    assert (a["mechanism"], a["backend"], a["user_id_type"]) == ("password_based", "built_in_database", "username")
    assert set(a["password_hash_algorithm"]) <= PBKDF2_KEYS and a["password_hash_algorithm"]["mac_fun"] in PBKDF2_MAC_FUNS
    assert a["password_hash_algorithm"]["name"] == "pbkdf2" and a["password_hash_algorithm"]["iterations"] >= 1000
    assert a["bootstrap_type"] in BOOTSTRAP_TYPES and a["bootstrap_type"] == "hash"
    assert a["bootstrap_file"] == ra.EMQX_BOOTSTRAP_FILE and a["bootstrap_file"].endswith(".json")
    _assert_authz(conf)


def test_emqx_jwt_hmac_and_jwks_use_only_schema_keys_and_never_the_secret():
    _, conf, text = _emqx_conf({"auth": {"mechanism": "jwt"}, "jwt_secret": SENTINEL_JWT})
    (a,) = conf["authentication"]
    assert set(a) <= JWT_HMAC_KEYS and a["algorithm"] == "hmac-based" and a["from"] == "password"
    assert "secret" not in a, "the key comes from the environment, never the file"
    assert a["verify_claims"] == {"username": "${username}"}
    assert SENTINEL_JWT not in text
    cfg = _cfg({"auth": {"mechanism": "jwt", "jwt": {"jwks_endpoint": "https://id.example.com/jwks", "match": "clientid"}}})
    assert br.secret_env_names(_cfg({"auth": {"mechanism": "jwt"}, "jwt_secret": "x"}))["jwt-secret"] == "EMQX_AUTHENTICATION__1__SECRET"
    assert "jwt-secret" not in br.secret_env_names(cfg)
    _, conf, _ = _emqx_conf({"auth": {"mechanism": "jwt", "jwt": {"jwks_endpoint": "https://id.example.com/jwks", "match": "clientid"}}})
    (a,) = conf["authentication"]
    assert set(a) <= JWT_JWKS_KEYS and a["use_jwks"] is True and a["ssl"]["verify"] == "verify_peer"
    assert a["verify_claims"] == {"clientid": "${clientid}"}
    _assert_authz(conf)


def test_emqx_anonymous_has_an_empty_chain_but_keeps_the_acl():
    _, conf, _ = _emqx_conf({"auth": {"allow_anonymous": True}, "access": {"client_cidrs": ["10.20.0.0/16"]}})
    assert conf["authentication"] == []
    _assert_authz(conf)


def test_emqx_acl_file_has_the_rules_in_order_and_denies_the_rest():
    cfg = _cfg(
        {
            "auth": {
                "acl": [
                    {"permission": "deny", "who": "clientid:legacy-1", "topics": ["#"]},
                    {"who": "username:ops", "action": "subscribe", "topics": ["devices/+/status"]},
                    {"topics": ["devices/${username}/#", "inbox/${clientid}"]},
                ]
            }
        }
    )
    rules = [ln for ln in ra.emqx_acl(cfg.auth).splitlines() if not ln.startswith("%%")]
    # Rule shapes: emqx/emqx v5.8.6 apps/emqx_auth/etc/acl.conf:23-37.
    assert rules == [
        '{deny, {clientid, "legacy-1"}, all, ["#"]}.',
        '{allow, {username, "ops"}, subscribe, ["devices/+/status"]}.',
        '{allow, all, all, ["devices/${username}/#", "inbox/${clientid}"]}.',
        "{deny, all}.",
    ]


# --- hashes as the engines check them -----------------------------------------------------------
def test_emqx_bootstrap_holds_pbkdf2_hashes_an_independent_implementation_confirms():
    doc = json.loads(ra.emqx_bootstrap({"alice": SENTINEL_PW, "bob": "other"}, "stack-key"))
    assert [u["user_id"] for u in doc] == ["alice", "bob"]
    assert SENTINEL_PW not in json.dumps(doc)
    # Fields as emqx/emqx v5.8.6 apps/emqx_auth_mnesia/src/emqx_authn_mnesia.erl:526-541 reads them.
    assert all(set(u) == {"user_id", "password_hash", "salt", "is_superuser"} and u["is_superuser"] is False for u in doc)
    alice = doc[0]
    assert re.fullmatch(r"[0-9a-f]{32}", alice["salt"])  # like EMQX's gen_salt (emqx_authn_password_hashing.erl:216-218)
    # openssl's PBKDF2 over the salt text, sha256, 4096 rounds, 32 bytes, lower-case hex (emqx_passwd.erl:82-84,117-119,153).
    out = subprocess.run(
        ["openssl", "kdf", "-keylen", "32", "-kdfopt", "digest:SHA256", "-kdfopt", f"pass:{SENTINEL_PW}",
         "-kdfopt", f"salt:{alice['salt']}", "-kdfopt", "iter:4096", "PBKDF2"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip().replace(":", "").lower() == alice["password_hash"]
    assert doc[0]["salt"] != doc[1]["salt"]


def test_vmq_passwd_lines_have_the_tools_format_and_verify_as_vmq_passwd_checks():
    text = ra.vmq_passwd({"alice": SENTINEL_PW}, "stack-key")
    (line,) = text.splitlines()
    # vernemq/vernemq 2.1.1 apps/vmq_passwd/c_src/vmq_passwd.c:167 "%s:$6$%s$%s"; 12-byte salt (:80),
    # so 16 base64 characters and 88 for the SHA-512 digest, like apps/vmq_passwd/priv/test.passwd:1.
    assert re.fullmatch(r"alice:\$6\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", line)
    user, rest = line.split(":", 1)
    _, _, salt_b64, hash_b64 = rest.split("$")  # vmq_passwd.erl:139-140
    digest = hashlib.sha512(SENTINEL_PW.encode() + base64.b64decode(salt_b64)).digest()  # vmq_passwd.erl:177-182
    assert base64.b64encode(digest).decode() == hash_b64
    assert base64.b64encode(hashlib.sha512(b"wrong" + base64.b64decode(salt_b64)).digest()).decode() != hash_b64
    assert ra.vmq_passwd({}, "k") == "\n", "an empty file would be refused by SSM; vmq_passwd skips a bare newline"


def test_salts_are_stable_per_stack_and_differ_across_stacks():
    users = {"alice": "pw"}
    assert ra.emqx_bootstrap(users, "k1") == ra.emqx_bootstrap(users, "k1")
    assert ra.emqx_bootstrap(users, "k1") != ra.emqx_bootstrap(users, "k2")
    assert ra.vmq_passwd(users, "k1") != ra.vmq_passwd({"alice": "pw2"}, "k1")


# --- VerneMQ: env -> vernemq.conf through the image's rule --------------------------------------
# vernemq/vernemq 2.1.1 keys: allow_anonymous (apps/vmq_server/priv/vmq_server.schema:8),
# plugins.vmq_passwd / plugins.vmq_acl (:2185, :2191), vmq_passwd.password_file and
# .password_reload_interval (apps/vmq_passwd/priv/vmq_passwd.schema:2,10), vmq_acl.acl_file and
# .acl_reload_interval (apps/vmq_acl/priv/vmq_acl.schema:2,9).
VERNEMQ_SCHEMA_KEYS = {
    "allow_anonymous", "plugins.vmq_passwd", "plugins.vmq_acl", "vmq_passwd.password_file",
    "vmq_passwd.password_reload_interval", "vmq_acl.acl_file", "vmq_acl.acl_reload_interval",
}  # fmt: skip


def test_vernemq_auth_env_becomes_real_vernemq_conf_keys():
    cfg = _cfg({"brokers": {"engine": "vernemq", "accept_eula": True}})
    lines = ra.docker_vernemq_conf_lines(ra.vernemq_auth_env(cfg))
    conf = dict(line.split("=", 1) for line in lines)
    assert set(conf) == VERNEMQ_SCHEMA_KEYS
    # And against the project's table of every vernemq.conf key of the 2.1.1 release.
    facts = mockengine.ROOT / "tests" / "facts" / "vernemq-2.1.1-conf-keys.tsv"
    known = {ln.split("\t", 1)[0] for ln in facts.read_text().splitlines() if ln and not ln.startswith("#")}
    assert set(conf) <= known
    assert conf["allow_anonymous"] == "off" and conf["plugins.vmq_passwd"] == conf["plugins.vmq_acl"] == "on"
    assert conf["vmq_passwd.password_file"] == ra.VMQ_PASSWD_FILE == "/vernemq/etc/auth/vmq.passwd"
    assert conf["vmq_acl.acl_file"] == ra.VMQ_ACL_FILE
    # The image's rule (docker-vernemq bin/vernemq.sh:237) on a listener variable it documents (:63-66).
    assert ra.docker_vernemq_conf_lines({"DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT": "0.0.0.0:1883"}) == ["listener.tcp.default=0.0.0.0:1883"]
    assert ra.docker_vernemq_conf_lines({"DOCKER_VERNEMQ_USER_ALICE": "pw"}) == [], "plain-password users are never set"
    # The rendered stack's env carries exactly these variables.
    env = br.broker_env(cfg, node_specs(cfg)[0], node_specs(cfg)[0])
    assert all(env[k] == v for k, v in ra.vernemq_auth_env(cfg).items())


def test_vmq_acl_uses_patterns_for_everyone_and_user_sections():
    cfg = _cfg(
        {
            "brokers": {"engine": "vernemq", "accept_eula": True},
            "auth": {
                "acl": [
                    {"topics": ["devices/${username}/#"]},
                    {"action": "subscribe", "topics": ["broadcast/#"]},
                    {"who": "username:ops", "action": "publish", "topics": ["devices/+/commands"]},
                ]
            },
        }
    )
    # vernemq/vernemq 2.1.1 apps/vmq_acl/docs/vmq_acl.rst:31-62.
    assert ra.vmq_acl(cfg.auth).splitlines()[1:] == [
        "pattern devices/%u/#",
        "pattern read broadcast/#",
        "user ops",
        "topic write devices/+/commands",
    ]


# The line shapes vmq_acl's parser accepts (vernemq/vernemq 2.1.1 apps/vmq_acl/src/vmq_acl.erl:196-224);
# any other line stops the parse with a function_clause error.
VMQ_ACL_LINE = re.compile(r"#.*|(topic|pattern)( read| write)? \S+|user \S+")


@pytest.mark.parametrize("stack", ["vernemq"])
def test_every_rendered_vmq_acl_line_is_one_vmq_acl_parses(stack):
    files = [t for (h, n), t in plan_of(stack).files.items() if n == "vmq.acl"]
    cfg = _cfg({"brokers": {"engine": "vernemq", "accept_eula": True}, "auth": {"acl": [
        {"topics": ["devices/${username}/#", "inbox/${clientid}/+"]},
        {"who": "username:ops", "action": "subscribe", "topics": ["devices/+/status"]},
    ]}})  # fmt: skip
    files.append(ra.vmq_acl(cfg.auth))
    assert len(files) >= 2
    for text in files:
        assert text.endswith("\n")
        for line in text.splitlines():
            assert VMQ_ACL_LINE.fullmatch(line), line


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"auth": {"acl": [{"who": "clientid:x", "topics": ["a"]}]}}, "mqtt-cluster:auth.acl.who"),
        ({"auth": {"no_match": "allow"}}, "mqtt-cluster:auth.no_match"),
    ],
)
def test_vernemq_refuses_what_its_acl_file_cannot_say(raw, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        _cfg({"brokers": {"engine": "vernemq", "accept_eula": True}, **raw})


# --- secrets never in plain sight ----------------------------------------------------------------
HASHLIKE = re.compile(r'password_hash\\?"|\$6\$')
"""Traces of either credential file: the EMQX bootstrap field, the vmq_passwd/crypt marker."""


def _plan_with_secrets(stack: str, **extra: object):
    config = stack_config(stack)
    config["mqtt-cluster:users"] = json.dumps({"alice": SENTINEL_PW, "bob": SENTINEL_PW + "b"})
    keys = ["mqtt-cluster:users"]
    for k, v in extra.items():
        full = f"mqtt-cluster:{k}"
        config[full] = json.dumps(v) if isinstance(v, dict) else str(v)
        if k.endswith("secret"):
            keys.append(full)
    return mockengine.run_program(stack, config, keys)


@pytest.mark.parametrize(
    ("stack", "extra"),
    [
        ("dev", {}),
        ("vernemq", {}),
        ("local", {}),
        ("edge", {"auth": {"mechanism": "jwt"}, "jwt_secret": SENTINEL_JWT}),
        ("local", {"auth": {"mechanism": "jwt"}, "jwt_secret": SENTINEL_JWT}),
    ],
)
def test_no_password_hash_or_jwt_key_in_user_data_files_inputs_or_outputs(stack, extra):
    plan = _plan_with_secrets(stack, **extra)
    everything = [json.dumps(r.inputs) for r in plan.resources] + [json.dumps(plan.outputs)] + list(plan.files.values())
    for text in everything:
        assert "Sentinel-" not in text
        assert not HASHLIKE.search(text), HASHLIKE.search(text)
    params = {r.inputs["name"]: r.inputs for r in plan.of_type("aws:ssm/parameter:Parameter")}
    uploads = [u for c in plan.of_type("docker:index/container:Container") for u in c.inputs.get("uploads") or []]
    if stack == "local":
        users = [u for u in uploads if u["file"] in (ra.EMQX_BOOTSTRAP_FILE, ra.VMQ_PASSWD_FILE)]
        assert users and all(u["content"] == "[secret]" for u in users)
        assert plan.outputs["demo_password"] == "[secret]" and plan.outputs["demo_username"] == "demo"
        if extra:
            brokers = [
                c for c in plan.of_type("docker:index/container:Container") if not c.name.endswith(("-proxy", "-prometheus", "-grafana"))
            ]
            assert all("[secret]" in c.inputs["envs"] for c in brokers)
    else:
        p = params[f"/mqtt-cluster/{stack}/auth-users"]
        assert (p["type"], p["value"]) == ("SecureString", "[secret]")
        if extra:
            assert params[f"/mqtt-cluster/{stack}/jwt-secret"]["value"] == "[secret]"
            assert "EMQX_AUTHENTICATION__1__SECRET" in plan.files[("emqx-1", "mqtt-broker-start")]


def test_the_json_plan_output_shows_no_credentials(capsys, tmp_path):
    from tools import plan as plan_cli

    stack_file = tmp_path / "Pulumi.dev.yaml"
    doc = mockengine.read_stack_file(mockengine.stack_file("dev"))
    doc["config"]["mqtt-cluster:users"] = {"alice": {"secure": "v1:ciphertext"}}
    import yaml

    stack_file.write_text(yaml.safe_dump(doc))
    assert plan_cli.main(["dev", "--config-file", str(stack_file), "--json"]) == 0
    out = capsys.readouterr().out
    assert "ciphertext" not in out
    assert not HASHLIKE.search(out)
    assert '"/mqtt-cluster/dev/auth-users"' in out


# --- users change without replacing a host ----------------------------------------------------
def _run(stack: str, users: dict[str, str]):
    config = stack_config(stack)
    config["mqtt-cluster:users"] = json.dumps(users)
    return mockengine.run_program(stack, config, ["mqtt-cluster:users"])


def test_a_changed_user_list_leaves_user_data_alone_and_the_sync_step_follows_it():
    before, after = _run("dev", {"alice": "one"}), _run("dev", {"alice": "two", "carol": "three"})
    ud = lambda p: {r.name: cloud_init.unpacked(r.inputs["userDataBase64"]) for r in p.of_type("aws:ec2/instance:Instance")}  # noqa: E731
    assert ud(before) == ud(after), "a user change must not replace a broker host"
    # the users step of each node (components/rollout.py), through the node script's `users` mode
    syncs = [r for r in after.of_type("command:local:Command") if r.name.startswith("ops-users-")]
    instances = {r.urn: r for r in after.of_type("aws:ec2/instance:Instance") if "brokers" in r.urn}
    assert len(syncs) == len(instances) == 3
    for s in syncs:
        assert s.inputs["create"] == s.inputs["update"] == "users"
        env = s.inputs["environment"]
        assert env["USERS_FINGERPRINT"] == "[secret]"  # the credential file's fingerprint, kept secret
        assert env["INSTANCE_ID"] in {i.id for i in instances.values()}
        host = s.name.removeprefix("ops-users-")
        assert f"USERS_CMD=${{USERS_CMD:-'bash {ra.USERS_SCRIPT}'}}" in after.files[(host, "mqtt-cluster-node.sh")]
    # The trigger follows the credential file: a new password, a new fingerprint.
    cfg = _cfg()
    f = lambda users: ra.users_fingerprint(ra.users_file(cfg, users, "k"))  # noqa: E731
    assert f({"alice": "one"}) != f({"alice": "two"}) and f({"alice": "one"}) == f({"alice": "one"})


@pytest.mark.parametrize("engine", ["emqx", "vernemq"])
def test_users_script_fetches_atomically_and_loads_the_file(engine, tmp_path, monkeypatch):
    """The rendered script against stand-in aws and docker commands (this machine runs as root)."""
    monkeypatch.setattr(ra, "HOST_AUTH_DIR", str(tmp_path / "auth"))
    raw = {"brokers": {"engine": engine, **({"accept_eula": True} if engine == "vernemq" else {})}}
    cfg = _cfg(raw)
    script = tmp_path / "users.sh"
    script.write_text(
        ra.users_script(cfg, region="eu-central-1", param_prefix="/mqtt-cluster/dev", owner="0:0", container="broker", wait_tries=2)
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "aws").write_text(f'#!/bin/sh\necho "aws $*" >>{log}\necho \'[{{"user_id":"alice"}}]\'\n')
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "docker $*" >>{log}\ncase "$1" in inspect) echo true;; esac\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["bash", str(script), "apply"], check=True, env=env, capture_output=True, text=True, timeout=60)
    name = "users.json" if engine == "emqx" else "vmq.passwd"
    target = tmp_path / "auth" / name
    assert target.read_text() == '[{"user_id":"alice"}]\n'
    assert oct(target.stat().st_mode & 0o777) == "0o440"
    assert [p.name for p in (tmp_path / "auth").iterdir()] == [name], "no temporary file is left behind"
    calls = log.read_text()
    assert "--name /mqtt-cluster/dev/auth-users" in calls and "--with-decryption" in calls
    if engine == "emqx":
        assert "docker exec broker emqx eval" in calls and "import_users('mqtt:global'" in calls
    else:
        assert "exec" not in calls, "vmq_passwd re-reads its file by itself"
    proc = subprocess.run(["shellcheck", "-"], input=script.read_text(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_readme_documents_every_auth_setting_and_the_device_howtos():
    from components.config import AuthConfig

    readme = (mockengine.ROOT / "README.md").read_text()
    missing = [f for f in AuthConfig.model_fields if f"| `auth.{f}` |" not in readme]
    assert not missing, f"README configuration reference lacks {missing}"
    assert "| `users` (secret map) |" in readme and "| `jwt_secret` (secret) |" in readme
    for howto in (
        "--path 'mqtt-cluster:users.",
        "config rm --path 'mqtt-cluster:users.",
        "What the default ACL allows",
        "NAME=demo_password SHOW_SECRETS=1",
    ):
        assert howto in readme, howto


def test_make_up_prints_how_to_connect_as_the_demo_device():
    makefile = (mockengine.ROOT / "Makefile").read_text()
    assert "make -s output NAME=demo_password SHOW_SECRETS=1" in makefile
    assert "-u demo" in makefile and "devices/demo/" in makefile
    assert plan_of("local").outputs["demo_topic"] == "devices/demo/hello"


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBdevicesCA\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("kind", "line"), [("haproxy", "verify required ca-file /etc/mqtt-cluster/tls/devices-ca.pem"), ("nginx", "ssl_verify_client on;")]
)
def test_password_plus_mtls_makes_the_proxy_hosts_verify_device_certificates(program, kind, line):
    mtls = {"mechanism": "password+mtls", "mtls": {"ca_bundle": CA_PEM}}
    plan = program("vernemq" if kind == "haproxy" else "edge", auth=mtls)
    conf = plan.files[(f"{kind}-1", "haproxy.cfg" if kind == "haproxy" else "nginx.conf")]
    assert line in conf
    assert "/etc/mqtt-cluster/tls/devices-ca.pem" in conf
    assert "/etc/mqtt-cluster/tls/devices-ca.pem" in plan.files[(f"{kind}-1", "cloud-init.yaml")]
    assert "MIIBdevicesCA" in plan.files[(f"{kind}-1", "cloud-init.yaml")]
    default = plan_of("vernemq" if kind == "haproxy" else "edge").files[(f"{kind}-1", "haproxy.cfg" if kind == "haproxy" else "nginx.conf")]
    assert "devices-ca" not in default, "off unless asked"


def test_local_password_plus_mtls_verifies_at_the_proxy_and_drops_plain_mqtt(program):
    plan = program("local", auth={"mechanism": "password+mtls", "mtls": {"ca_bundle": CA_PEM}})
    proxy = next(c for c in plan.of_type("docker:index/container:Container") if c.name == "local-proxy")
    assert [p["internal"] for p in proxy.inputs["ports"]] == [8883, 8084]
    assert any(u["file"] == "/etc/mqtt-cluster/devices-ca.pem" and u["content"] == CA_PEM for u in proxy.inputs["uploads"])
    assert "ssl_verify_client on;" in plan.files[("proxy", "nginx.conf")]
    before = next(c for c in plan_of("local").of_type("docker:index/container:Container") if c.name == "local-proxy")
    assert 1883 in [p["internal"] for p in before.inputs["ports"]]


@pytest.mark.parametrize(("stack", "fits", "too_many"), [("dev", 40, 60), ("vernemq", 60, 80)])
def test_a_credential_file_beyond_an_ssm_parameter_is_refused_naming_the_users_key(stack, fits, too_many):
    # PutParameter: "Standard parameters have a value limit of 4 KB. Advanced parameters have a value
    # limit of 8 KB." (boto/botocore 1.43.67 botocore/data/ssm/2014-11-06/service-2.json:15282-15285);
    # the users parameter is Intelligent-Tiering, so 8 KB is its limit. The hashes are fixed-length:
    # the file's size follows from the usernames alone.
    from components.settings import StackConfigError

    names = [f"device-{i:04d}" for i in range(too_many)]
    cfg = _cfg({"brokers": {"engine": "vernemq", "accept_eula": True}} if stack == "vernemq" else None)
    real = {n: "x" * (i % 40 + 1) for i, n in enumerate(names)}
    assert len(ra.users_file(cfg, real, "some-salt-key").encode()) == ra.users_file_size(cfg, names), "passwords do not change the size"
    plan = _run(stack, dict.fromkeys(names[:fits], "pw"))
    assert plan.of_type("aws:ssm/parameter:Parameter")
    with pytest.raises(StackConfigError) as exc:
        _run(stack, dict.fromkeys(names, "pw"))
    assert "mqtt-cluster:users" in str(exc.value) and "8192" in str(exc.value) and f"{too_many} users" in str(exc.value)
