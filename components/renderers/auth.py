"""Client authentication and topic authorization, rendered from the model for each engine.

Pure functions (no Pulumi): password files of salted hashes, ACL files, the EMQX HOCON block and
the VerneMQ environment. Passwords come in only as arguments and never leave as plain text; the
hash files are secrets themselves (delivered through SSM / container secrets, never user-data).

Salts are derived, not drawn: HMAC-SHA256 of a per-stack random key (a Pulumi secret) over the
engine, the username and the password. The same inputs give the same file, so an unchanged user
list never shows up as a change, while two stacks (or two users) never share a salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from components.config import BRIDGE_USER, AclRule, AuthConfig, JwtConfig, StackConfig
from components.renderers import render

# --- EMQX --------------------------------------------------------------------------------------
# Built-in database authenticator, keys of emqx/emqx v5.8.6
# apps/emqx_auth_mnesia/src/emqx_authn_mnesia_schema.erl:60-90 (user_id_type, bootstrap_file,
# bootstrap_type enum [hash, plain]) and apps/emqx_auth/src/emqx_authn/emqx_authn_password_hashing.erl:85-112
# (pbkdf2: name, mac_fun enum incl. sha256, iterations). The hash is the lower-case hex of
# PBKDF2-HMAC(mac_fun, password, salt, iterations, dk_length) with dk_length 32 for sha256
# (apps/emqx/src/emqx_passwd.erl:82-84, 117-119, 140-141, 153).
EMQX_PBKDF2_MAC = "sha256"
EMQX_PBKDF2_ITERATIONS = 4096
EMQX_PBKDF2_DK_LENGTH = 32  # emqx_passwd.erl:153 dk_length(sha256) -> 32
EMQX_AUTH_DIR = "/opt/emqx/etc/auth"
"""Directory mounted into the container (a directory, so a rewritten file is seen)."""
EMQX_BOOTSTRAP_FILE = f"{EMQX_AUTH_DIR}/users.json"
"""JSON by extension: emqx_authn_mnesia.erl:499-510 reads .json as a list of user objects."""
EMQX_ACL_FILE = "/opt/emqx/etc/acl.conf"
EMQX_CHAIN = "mqtt:global"
EMQX_JWT_SECRET_ENV = "EMQX_AUTHENTICATION__1__SECRET"  # noqa: S105 - a variable name
"""The first authenticator's secret by environment: emqx/emqx v5.8.6 changes/v5.0.12-en.md:41-43
(EMQX_AUTHENTICATION__1__ENABLE=false addresses authenticator 1 of the array)."""
JWT_SECRET_LEAF = "jwt-secret"  # noqa: S105 - an SSM leaf name
EMQX_AUTHENTICATOR_ID = "password_based:built_in_database"

# --- VerneMQ -----------------------------------------------------------------------------------
# vernemq/vernemq 2.1.1 apps/vmq_passwd/c_src/vmq_passwd.c:80,126-167: 12 random salt bytes,
# SHA-512 over password then salt, both base64 (no newlines), line "user:$6$<salt>$<hash>";
# apps/vmq_passwd/src/vmq_passwd.erl:125,139-140,177-182 checks exactly that.
VMQ_SALT_LEN = 12
VMQ_AUTH_DIR = "/vernemq/etc/auth"
VMQ_PASSWD_FILE = f"{VMQ_AUTH_DIR}/vmq.passwd"
VMQ_ACL_FILE = "/vernemq/etc/vmq.acl"


def _salt(key: str, engine: str, user: str, password: str, n: int) -> bytes:
    return hmac.new(key.encode(), f"{engine}\0{user}\0{password}".encode(), hashlib.sha256).digest()[:n]


def emqx_password_hash(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac(EMQX_PBKDF2_MAC, password.encode(), salt.encode(), EMQX_PBKDF2_ITERATIONS, EMQX_PBKDF2_DK_LENGTH).hex()


def emqx_bootstrap(users: dict[str, str], salt_key: str) -> str:
    """The built-in database's bootstrap file (bootstrap_type = hash): salted hashes only.

    Fields as emqx_authn_mnesia.erl:526-541 reads them: user_id, password_hash, salt, is_superuser.
    The salt is used as the text it is (32 hex characters, like EMQX's own gen_salt,
    emqx_authn_password_hashing.erl:216-218).
    """
    entries = []
    for user in sorted(users):
        salt = _salt(salt_key, "emqx", user, users[user], 16).hex()
        entries.append({"user_id": user, "password_hash": emqx_password_hash(users[user], salt), "salt": salt, "is_superuser": False})
    return json.dumps(entries, separators=(",", ":")) + "\n"


def vmq_passwd(users: dict[str, str], salt_key: str) -> str:
    """vmq_passwd's password file, as the image's own `vmq-passwd` writes it."""
    lines = []
    for user in sorted(users):
        salt = _salt(salt_key, "vernemq", user, users[user], VMQ_SALT_LEN)
        digest = hashlib.sha512(users[user].encode() + salt).digest()
        lines.append(f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n")
    # No users: one empty line, which vmq_passwd skips (vmq_passwd.erl:135-136); SSM refuses "".
    return "".join(lines) or "\n"


def users_fingerprint(text: str) -> str:
    """A one-way digest of a hash file: what the sync step triggers on (never the file itself)."""
    return hashlib.sha256(f"mqtt-cluster-users:{text}".encode()).hexdigest()[:16]


# --- ACL files ----------------------------------------------------------------------------------
def _erl_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _emqx_rule(rule: AclRule) -> str:
    # Rule shapes: emqx/emqx v5.8.6 apps/emqx_auth/etc/acl.conf:23-37 (the formal spec).
    if rule.who == "all":
        who = "all"
    else:
        kind, _, name = rule.who.partition(":")
        who = "{" + kind + ", " + _erl_string(name) + "}"
    topics = ", ".join(_erl_string(t) for t in rule.topics)
    return f"{{{rule.permission}, {who}, {rule.action}, [{topics}]}}."


def emqx_acl(auth: AuthConfig) -> str:
    lines = [
        "%% Topic rules for the file authorization source — rendered by mqtt-cluster; do not edit on the host.",
        "%% The first matching rule decides; ${username} / ${clientid} are the connecting client's own.",
        *bridge_acl(auth),
        *(_emqx_rule(r) for r in auth.acl),
    ]
    # acl.conf:11-13: in production the last rule is {deny, all} and no_match = deny.
    lines.append("{deny, all}." if auth.no_match == "deny" else "{allow, all}.")
    return "\n".join(lines) + "\n"


def bridge_acl(auth: AuthConfig) -> list[str]:
    """The bridge user's rules, ahead of every device rule: it may publish on the bridged topics
    (the peers' egress connectors only publish) and nothing else, whatever the rules below allow."""
    if auth.bridge_topics is None:
        return []
    who = AclRule(who=f"username:{BRIDGE_USER}", topics=["#"])
    return [
        _emqx_rule(who.model_copy(update={"action": "publish", "topics": auth.bridge_topics})),
        _emqx_rule(who.model_copy(update={"permission": "deny", "action": "all", "topics": ["#"]})),
    ]


def _pattern_topic(topic: str, user: str, client: str) -> str:
    return "/".join(user if lvl == "${username}" else client if lvl == "${clientid}" else lvl for lvl in topic.split("/"))


def _access(rule: AclRule, all_word: str) -> str:
    return {"publish": "write", "subscribe": "read", "all": all_word}[rule.action]


def vmq_acl(auth: AuthConfig) -> str:
    """vmq_acl's file (vernemq/vernemq 2.1.1 apps/vmq_acl/docs/vmq_acl.rst:29-62): `pattern` lines
    apply to every user (%u, %c), `topic` lines after `user <name>` to that user; no access word
    means read and write (the parser: apps/vmq_acl/src/vmq_acl.erl:196-224, which also applies
    `topic` lines before any `user` line to everyone). Only allow rules exist; whatever is not
    listed is denied."""
    lines = ["# Topic rules for vmq_acl — rendered by mqtt-cluster; do not edit on the host."]
    for rule in auth.acl:
        if rule.who == "all":
            access = _access(rule, "")
            lines += [f"pattern {access} {_pattern_topic(t, '%u', '%c')}".replace("  ", " ") for t in rule.topics]
    for rule in auth.acl:
        if rule.who.startswith("username:"):
            name = rule.who.partition(":")[2]
            access = _access(rule, "")
            lines.append(f"user {name}")
            lines += [f"topic {access} {_pattern_topic(t, name, '%c')}".replace("  ", " ") for t in rule.topics]
    return "\n".join(lines) + "\n"


def mosquitto_acl(auth: AuthConfig) -> str:
    """The same rules as mosquitto's acl_file (mosquitto.conf(5): pattern/user/topic, %u, %c,
    readwrite/deny), for the loopback data plane. Rules are listed in model order per subject."""
    lines = ["# mosquitto acl_file rendered from the mqtt-cluster auth model"]
    for rule in auth.acl:
        if rule.who == "all":
            access = "deny" if rule.permission == "deny" else _access(rule, "readwrite")
            lines += [f"pattern {access} {_pattern_topic(t, '%u', '%c')}" for t in rule.topics]
    for rule in auth.acl:
        if rule.who.startswith("username:"):
            name = rule.who.partition(":")[2]
            access = "deny" if rule.permission == "deny" else _access(rule, "readwrite")
            lines.append(f"user {name}")
            lines += [f"topic {access} {_pattern_topic(t, name, '%c')}" for t in rule.topics]
    return "\n".join(lines) + "\n"


# --- broker configuration ----------------------------------------------------------------------
def emqx_auth_hocon(cfg: StackConfig) -> str:
    """The authentication chain and authorization block appended to emqx.conf."""
    return render(
        "emqx-auth.conf.j2",
        auth=cfg.auth,
        password=cfg.auth.uses_password and not cfg.auth.allow_anonymous,
        jwt=(cfg.auth.jwt or JwtConfig()) if cfg.auth.mechanism == "jwt" else None,
        bootstrap_file=EMQX_BOOTSTRAP_FILE,
        acl_file=EMQX_ACL_FILE,
        mac_fun=EMQX_PBKDF2_MAC,
        iterations=EMQX_PBKDF2_ITERATIONS,
    )


def vernemq_auth_env(cfg: StackConfig) -> dict[str, str]:
    """DOCKER_VERNEMQ_* variables the image turns into vernemq.conf lines.

    vernemq/docker-vernemq 31299af (Dockerfile:15 VERNEMQ_VERSION="2.1.1") bin/vernemq.sh:237 drops
    the 15-character prefix DOCKER_VERNEMQ_, lower-cases the name and turns "__" into ".":
    DOCKER_VERNEMQ_VMQ_PASSWD__PASSWORD_FILE -> vmq_passwd.password_file. Keys of vernemq/vernemq
    2.1.1: allow_anonymous (apps/vmq_server/priv/vmq_server.schema:8), plugins.vmq_passwd /
    plugins.vmq_acl (vmq_server.schema:2185,2191), vmq_passwd.password_file /
    vmq_passwd.password_reload_interval (apps/vmq_passwd/priv/vmq_passwd.schema:2,10),
    vmq_acl.acl_file / vmq_acl.acl_reload_interval (apps/vmq_acl/priv/vmq_acl.schema:2,9).
    vernemq.sh:239-242 would point password_file at /vernemq/etc/vmq.passwd only for
    DOCKER_VERNEMQ_USER_* variables (plain passwords in the environment), which are never set.
    """
    return {
        "DOCKER_VERNEMQ_ALLOW_ANONYMOUS": "on" if cfg.auth.allow_anonymous else "off",
        "DOCKER_VERNEMQ_PLUGINS__VMQ_PASSWD": "on",
        "DOCKER_VERNEMQ_PLUGINS__VMQ_ACL": "on",
        "DOCKER_VERNEMQ_VMQ_PASSWD__PASSWORD_FILE": VMQ_PASSWD_FILE,
        "DOCKER_VERNEMQ_VMQ_PASSWD__PASSWORD_RELOAD_INTERVAL": "10",
        "DOCKER_VERNEMQ_VMQ_ACL__ACL_FILE": VMQ_ACL_FILE,
        "DOCKER_VERNEMQ_VMQ_ACL__ACL_RELOAD_INTERVAL": "10",
    }


def docker_vernemq_conf_lines(env: dict[str, str]) -> list[str]:
    """What bin/vernemq.sh:237 appends to vernemq.conf for these variables (the same rule, so a
    test can compare the keys against the schema): excluded names, prefix cut, key lower-cased,
    "__" -> "." over the whole line."""
    out = []
    for name, value in sorted(env.items()):
        if not name.startswith("DOCKER_VERNEMQ") or any(x in name for x in ("DISCOVERY_NODE", "KUBERNETES", "SWARM", "COMPOSE")):
            continue
        if "DOCKER_VERNEMQ_USER" in f"{name}={value}":
            continue
        line = f"{name}={value}"[15:]
        key_len = len(line) - len(line.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"))
        out.append((line[:key_len].lower() + line[key_len:]).replace("__", "."))
    return out


# --- hosts ---------------------------------------------------------------------------------------
HOST_AUTH_DIR = "/var/lib/mqtt-broker/auth"
"""On the encrypted data volume: survives reboots (unlike /run), never in user-data."""
USERS_SCRIPT = "/usr/local/sbin/mqtt-cluster-users"
USERS_PARAMETER_LEAF = "auth-users"


def emqx_import_expr() -> str:
    """`emqx eval` text: import the bootstrap file with override, delete users it no longer lists.

    emqx/emqx v5.8.6: emqx_authn_chains.erl:330 import_users(Chain, AuthenticatorID, Source) and
    :339 delete_user(Chain, AuthenticatorID, UserID); the global MQTT chain is 'mqtt:global'
    (apps/emqx_auth/include/emqx_authn_chains.hrl:23); the table is emqx_authn_mnesia
    (emqx_authn_mnesia.erl:72) keyed {UserGroup, UserID}.
    """
    return (
        f'F = <<"{EMQX_BOOTSTRAP_FILE}">>, Id = <<"{EMQX_AUTHENTICATOR_ID}">>, '
        "{ok, D} = file:read_file(F), "
        'Keep = [maps:get(<<"user_id">>, U) || U <- emqx_utils_json:decode(D, [return_maps])], '
        f"{{ok, R}} = emqx_authn_chains:import_users('{EMQX_CHAIN}', Id, {{hash, F, D}}), "
        "Gone = [U || {_, U} <- mnesia:dirty_all_keys(emqx_authn_mnesia), not lists:member(U, Keep)], "
        f"[ok = emqx_authn_chains:delete_user('{EMQX_CHAIN}', Id, U) || U <- Gone], "
        "{R, {deleted, Gone}}."
    )


def users_script(cfg: StackConfig, *, region: str, param_prefix: str, owner: str, container: str, wait_tries: int = 120) -> str:
    return render(
        "users-sync.sh.j2",
        engine=cfg.brokers.engine,
        region=region,
        parameter=f"{param_prefix}/{USERS_PARAMETER_LEAF}",
        host_dir=HOST_AUTH_DIR,
        file_name=users_file_name(cfg),
        owner=owner,
        container=container,
        wait_tries=wait_tries,
        import_expr=emqx_import_expr(),
    )


def users_file_name(cfg: StackConfig) -> str:
    return (EMQX_BOOTSTRAP_FILE if cfg.is_emqx else VMQ_PASSWD_FILE).rsplit("/", 1)[1]


def users_file(cfg: StackConfig, users: dict[str, str], salt_key: str) -> str:
    """The engine's credential file for these users (salted hashes only)."""
    return emqx_bootstrap(users, salt_key) if cfg.is_emqx else vmq_passwd(users, salt_key)


def users_file_size(cfg: StackConfig, names: list[str]) -> int:
    """Bytes of the credential file for these usernames: salts and hashes have fixed lengths, so the
    passwords and the salt key do not change it."""
    probe = dict.fromkeys(names, "")
    return len((emqx_bootstrap(probe, "") if cfg.is_emqx else vmq_passwd(probe, "")).encode())


def acl_file(cfg: StackConfig) -> tuple[str, str, str]:
    """(host path, container path, text) of the rendered ACL: not secret, part of user-data."""
    if cfg.is_emqx:
        return "/etc/mqtt-cluster/acl.conf", EMQX_ACL_FILE, emqx_acl(cfg.auth)
    return "/etc/mqtt-cluster/vmq.acl", VMQ_ACL_FILE, vmq_acl(cfg.auth)


def host_mounts(cfg: StackConfig) -> list[str]:
    """docker run -v entries: the credential directory and the ACL file, read-only."""
    acl_host, acl_container, _ = acl_file(cfg)
    auth_dir = EMQX_AUTH_DIR if cfg.is_emqx else VMQ_AUTH_DIR
    return [f"{HOST_AUTH_DIR}:{auth_dir}:ro", f"{acl_host}:{acl_container}:ro"]
