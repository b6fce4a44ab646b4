"""The Pulumi CLI's configuration rules, applied offline before the program runs.

What `pulumi preview` / `pulumi up` do with Pulumi.yaml and the stack file before the language host
starts, emulated from pulumi/pulumi v3.259.0 (the newest tag available here; the installed SDK is
3.272.0) — each rule cites its source line:

1. Read both files with go-yaml v3 (components/stackfile.py).
2. Project `config:` declarations: shorthand values become defaults
   (sdk/go/common/workspace/project.go:486-514), then Project.Validate()
   (project.go:837-888) and the JSON schema's type names (sdk/go/common/workspace/project.json:335-343).
3. Stack keys without a namespace get the project's (sdk/go/common/workspace/loaders.go:61-88);
   a key must be `<namespace>:<name>` (sdk/go/common/resource/config/key.go:45-70).
4. mergeConfig (pkg/workspace/config.go:255-366): a declared project key with neither default nor
   value that the stack does not set is *required* ("Stack 'dev' is missing configuration value …",
   config.go:53-64, :319-324, :351-355); defaults/values are merged in (config.go:327-348);
   then every explicitly typed key is checked (config.go:66-157): a declared secret must be stored
   encrypted (config.go:126-133) and the value must be of its type (project.go:771-834).
5. What the program receives: each top-level value as a string — JSON for objects — decrypted, and
   the list of keys whose value holds any ciphertext (sdk/go/common/resource/config/object.go:403-419,
   :50-71 Secure(); sdk/go/common/resource/config/map.go:104-113 SecureKeys();
   pkg/resource/deploy/source_eval.go:223). Ciphertext cannot be decrypted offline: each secure
   value becomes a marked placeholder, ``offline-secret:<key path>``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import stackfile
from components.config import OFFLINE_SECRET_PREFIX, ConfigError

TYPES = ("string", "integer", "boolean", "array", "object")  # project.json:335-343


@dataclass(frozen=True)
class Ciphertext:
    """A `{secure: …}` value (object.go:492-494, :541-551: a map of exactly one string key "secure")."""

    value: str


@dataclass
class Declaration:
    """One entry of Pulumi.yaml `config:` (ProjectConfigType, project.go:282-289)."""

    type: str | None = None
    items: dict[str, Any] | None = None
    default: Any = None
    value: Any = None
    secret: bool = False
    description: str = ""


@dataclass
class Project:
    name: str
    config: dict[str, Declaration] = field(default_factory=dict)
    source: str = "Pulumi.yaml"


def _type_name(type_: str, items: dict[str, Any] | None) -> str:
    """InferFullTypeName (project.go:760-766)."""
    if items is not None:
        return f"array<{_type_name(items.get('type', ''), items.get('items'))}>"
    return type_


def _atoi(text: str) -> bool:
    """Go strconv.Atoi: optional sign, decimal digits only."""
    return re.fullmatch(r"[+-]?[0-9]+", text) is not None


def valid_value(type_: str, items: dict[str, Any] | None, value: Any) -> bool:
    """ValidateConfigValue (project.go:771-834)."""
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):
            return math.isfinite(value) and value == math.trunc(value)
        return isinstance(value, str) and _atoi(value)
    if type_ == "boolean":
        return value in ("true", "false") or isinstance(value, bool)
    if type_ == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(valid_value(items.get("type", ""), items.get("items"), v) for v in value)


def _declaration(key: str, raw: Any, project: str, source: str) -> Declaration:
    if not isinstance(raw, dict):
        # Shorthand: a project key's plain value is its default, another namespace's its value.
        namespaced = ":" not in key or key.startswith(f"{project}:")
        return Declaration(default=raw) if namespaced else Declaration(value=raw)
    unknown = set(raw) - {"type", "items", "default", "value", "secret", "description"}
    if unknown:  # project.json:378-398 additionalProperties: false
        raise ConfigError(source, f"config.{key}", f"additional property '{sorted(unknown)[0]}' not allowed")
    type_ = raw.get("type")
    if type_ is not None and type_ not in TYPES:
        raise ConfigError(source, f"config.{key}.type", f"value must be one of {', '.join(repr(t) for t in TYPES)}")
    return Declaration(
        type=type_,
        items=raw.get("items"),
        default=raw.get("default"),
        value=raw.get("value"),
        secret=bool(raw.get("secret", False)),
        description=str(raw.get("description", "")),
    )


def load_project(path: Path) -> Project:
    """Pulumi.yaml's name and config declarations, validated as Project.Validate() does."""
    source = str(path)
    try:
        doc = stackfile.load(path.read_text(encoding="utf-8")) or {}
    except (stackfile.StackFileError, ValueError) as exc:
        raise ConfigError(source, getattr(exc, "key", "") or "(document)", str(exc)) from None
    name = doc.get("name") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(source, "name", "project is missing a non-empty string 'name' attribute")
    project = Project(name=name, source=source)
    for key, raw in (doc.get("config") or {}).items():
        d = _declaration(key, raw, name, source)
        # project.go:843-886
        if d.default is not None and d.value is not None:
            raise ConfigError(source, key, f"project config '{key}' cannot have both a 'default' and 'value' attribute")
        if ":" not in key or key.startswith(f"{name}:"):
            if d.type == "array" and d.items is None:
                raise ConfigError(
                    source,
                    key,
                    f"The configuration key '{key}' declares an array but does not specify the underlying type via the 'items' attribute",
                )
            if d.type is not None and d.default is not None and not valid_value(d.type, d.items, d.default):
                raise ConfigError(
                    source,
                    key,
                    f"The default value specified for configuration key '{key}' is not of the expected type "
                    f"'{_type_name(d.type, d.items)}'",
                )
        else:
            if d.type is not None:
                raise ConfigError(source, key, f"Configuration key '{key}' is not namespaced by the project and should not define a type")
            if d.default is not None:
                raise ConfigError(
                    source,
                    key,
                    f"Configuration key '{key}' is not namespaced by the project and should not define a default value. "
                    "Did you mean to use the 'value' attribute instead of 'default'?",
                )
            if d.value is None:
                raise ConfigError(source, key, f"Configuration key '{key}' is namespaced and must provide an attribute 'value'")
        project.config[key] = d
    return project


def _objects(value: Any) -> Any:
    """The stack value as config objects: `{secure: "…"}` maps become Ciphertext (object.go:492-494)."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("secure"), str):
            return Ciphertext(value["secure"])
        return {k: _objects(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_objects(v) for v in value]
    return value


def full_key(key: str, project: str) -> str:
    """Stack keys without a namespace are the project's (loaders.go:61-88); key.go:45-70 parses them."""
    key = key if ":" in key else f"{project}:{key}"
    if key.count(":") == 1 or (key.count(":") == 2 and key.split(":")[1] == "config"):
        return key.replace(":config:", ":")
    raise ValueError(f"could not parse {key} as a configuration key (configuration keys should be of the form `<namespace>:<name>`)")


def stack_value(value: Any) -> Any:
    """One stack-file value as the CLI keeps it (no value is "")."""
    return "" if value is None else _objects(value)  # loaders.go:379-410: no value is treated as ""


def read_stack(path: Path, project: Project, source: str | None = None) -> dict[str, Any]:
    """The stack file's config: full key → value (Ciphertext for secure leaves). Raises ConfigError."""
    source = source or str(path)
    try:
        doc = stackfile.load(path.read_text(encoding="utf-8")) or {}
    except stackfile.StackFileError as exc:
        raise ConfigError(source, _key_name(exc.key, project.name), str(exc)) from None
    except ValueError as exc:  # yaml.YAMLError and friends: syntax
        first = str(exc).strip().splitlines()
        raise ConfigError(source, "(document)", f"invalid YAML file: {first[0] if first else type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise ConfigError(source, "(document)", "expected project to be an object")
    values: dict[str, Any] = {}
    for key, value in (doc.get("config") or {}).items():
        try:
            name = full_key(key, project.name)
        except ValueError as exc:
            raise ConfigError(source, key, str(exc)) from None
        values[name] = stack_value(value)
    return values


def _key_name(key: str, project: str) -> str:
    if not key:
        return "(document)"
    return key if ":" in key.split(".")[0] else f"{project}:{key}"


def is_secure(value: Any) -> bool:
    """object.Secure(): a ciphertext, or a structure holding one (object.go:50-71)."""
    if isinstance(value, Ciphertext):
        return True
    if isinstance(value, dict):
        return any(is_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(is_secure(v) for v in value)
    return False


def _plaintext(value: Any, path: str) -> Any:
    """Decrypted as the CLI would hand it over; offline, a marked placeholder per secret."""
    if isinstance(value, Ciphertext):
        return f"{OFFLINE_SECRET_PREFIX}{path}"
    if isinstance(value, dict):
        return {k: _plaintext(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plaintext(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _go_json(value: Any) -> str:
    """encoding/json as Go writes a config object: sorted keys, no spaces, whole floats as integers."""

    def norm(v: Any) -> Any:
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"json: unsupported value: {v}")
            return int(v) if v.is_integer() and abs(v) < 1e21 else v
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, separators=(",", ":"))


def as_text(value: Any, path: str) -> tuple[str, bool]:
    """(string the program receives, is it an object) — object.MarshalString (object.go:403-419)."""
    plain = _plaintext(value, path)
    if isinstance(value, Ciphertext) or isinstance(plain, str):
        return plain, False
    if isinstance(plain, (dict, list)):
        return _go_json(plain), True
    return _go_json(plain), False  # bool, int, float: their JSON text


def apply_project_config(stack: str, project: Project, values: dict[str, Any], source: str) -> dict[str, Any]:
    """mergeConfig with validation (config.go:255-366): defaults in, required keys, types, secrets."""
    merged = dict(values)
    missing: list[str] = []
    for key in sorted(project.config):
        d = project.config[key]
        full = full_key(key, project.name)
        if full in merged:
            continue
        if d.default is None and d.value is None:
            if full.split(":", 1)[0] == project.name:
                missing.append(key)
            continue
        merged[full] = d.default if d.default is not None else d.value  # createConfigValue, config.go:179-193
    if missing:
        # config.go:30-64: one key → 'a'; several, sorted → 'a', 'b' and 'c'
        names = sorted(missing)
        listed = f"'{names[0]}'" if len(names) == 1 else ", ".join(f"'{n}'" for n in names[:-1]) + f" and '{names[-1]}'"
        noun = "value" if len(names) == 1 else "values"
        raise ConfigError(source, full_key(names[0], project.name), f"Stack '{stack}' is missing configuration {noun} {listed}")
    for key in sorted(project.config):
        d = project.config[key]
        if d.type is None:
            continue  # only explicitly typed keys are checked (config.go:105-117)
        full = full_key(key, project.name)
        value = merged.get(full, "")
        if d.secret and not is_secure(value):
            raise ConfigError(source, full, f"Stack '{stack}' with configuration key '{key}' must be encrypted as it's secret")
        text, is_object = as_text(value, full.split(":", 1)[1])
        content = json.loads(text) if is_object else text  # config.go:135-142
        if not valid_value(d.type, d.items, content):
            raise ConfigError(
                source, full, f"Stack '{stack}' with configuration key '{key}' must be of type '{_type_name(d.type, d.items)}'"
            )
    return merged


def program_config(values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """What the language host hands the program: strings per key, and the secret keys."""
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in values.items():
        config[key], _ = as_text(value, key.split(":", 1)[1])
        if is_secure(value):
            secret_keys.append(key)
    return config, sorted(secret_keys)
