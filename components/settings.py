"""Read the stack's configuration from Pulumi and validate it into the model, before any resource."""

from __future__ import annotations

import json
import os

import pulumi
from pulumi.runtime import config as runtime_config

from components.config import PROJECT, SECRET_KEYS, ConfigError, StackConfig, parse
from components.links import Region, check

SOURCE_ENV = "MQTT_CLUSTER_CONFIG_SOURCE"
"""Set by the offline plan to the file it read, so messages name that file."""


class StackConfigError(ConfigError, pulumi.RunError):
    """Raised from the program: Pulumi prints a RunError as one clean line, no traceback."""


def source_name(stack: str) -> str:
    return os.environ.get(SOURCE_ENV) or f"stacks/Pulumi.{stack}.yaml"


def _raw_project_config() -> dict[str, object]:
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = f"{PROJECT}:"
    cfg = pulumi.Config(PROJECT)
    raw: dict[str, object] = {}
    for full in sorted(keys):
        if not full.startswith(prefix):
            continue
        key = full[len(prefix) :]
        text = cfg.get(key)
        if text is None:
            continue
        # Structured values arrive as JSON text; plain scalars as the string itself.
        if text[:1] in "{[":
            try:
                raw[key] = json.loads(text)
            except json.JSONDecodeError:
                raw[key] = text
        else:
            raw[key] = text
    return raw


def _secret_keys() -> set[str]:
    """Unprefixed keys the engine marks secret: their stored value holds ciphertext (the CLI sends
    Map.SecureKeys(), # pulumi/pulumi v3.259.0 pkg/resource/deploy/source_eval.go:223; the SDK
    answers is_config_secret from that list)."""
    prefix = f"{PROJECT}:"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return {k[len(prefix) :] for k in keys if k.startswith(prefix) and runtime_config.is_config_secret(k)}


def clear_use_warnings(secret_keys: set[str]) -> list[str]:
    """Sections the operator encrypted (a nested `secure:` value) whose values the program passes to
    resources in clear: only SECRET_KEYS are carried as Pulumi secrets, so say so instead of letting
    an encrypted value reach the state unencrypted without a word."""
    return [
        f"mqtt-cluster:{k} holds a value set with --secret; this program uses {k} values in resource inputs "
        "in clear (they are identifiers, not credentials), so the state stores them unencrypted"
        for k in sorted(secret_keys - set(SECRET_KEYS))
    ]


def load() -> StackConfig:
    stack = pulumi.get_stack()
    source = source_name(stack)
    secret_keys = _secret_keys()
    try:
        cfg = parse(
            _raw_project_config(),
            stack=stack,
            source=source,
            region=pulumi.Config("aws").get("region"),
            secret_keys=secret_keys,
        )
    except ConfigError as exc:
        raise StackConfigError(exc.source, exc.key, exc.problem) from None
    for warning in clear_use_warnings(secret_keys):
        pulumi.log.warn(warning)
    return cfg


def linked_regions(cfg: StackConfig) -> dict[str, Region]:
    """The global stack's linked regional stacks, cross-checked (one clean line on a problem)."""
    try:
        return check(cfg, source_name(cfg.stack))
    except ConfigError as exc:
        raise StackConfigError(exc.source, exc.key, exc.problem) from None


def secret(key: str) -> pulumi.Output[str] | None:
    """A secret the stack supplies (`pulumi config set --secret mqtt-cluster:KEY`), or None."""
    return pulumi.Config(PROJECT).get_secret(key)
