"""DeviceAuth: device credentials as salted hashes (a Pulumi secret), delivered like the other
secrets. Changed credentials reach the running brokers through the per-node users step
(components.rollout), without replacing a host.

Passwords come from the secret map `mqtt-cluster:users` (`pulumi config set --secret --path
'mqtt-cluster:users.NAME' PASSWORD`). The program hashes them (components.renderers.auth) with
salts derived from a per-stack random key; only the hash file leaves the program, as an SSM
SecureString (AWS) or a container upload marked secret (local) — never user-data, never a
rendered file, never plan output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker
import pulumi_random as random

from components.config import PROJECT, StackConfig
from components.renderers import auth as ra
from components.secrets import generated
from components.settings import StackConfigError, source_name

USERS_PARAMETER_LIMIT = 8192
"""Bytes the users parameter may hold: "Standard parameters have a value limit of 4 KB. Advanced
parameters have a value limit of 8 KB." (boto/botocore 1.43.67
botocore/data/ssm/2014-11-06/service-2.json:15282-15285, PutParameter Value); Intelligent-Tiering
takes the advanced tier when the value needs it."""


def users_from_config() -> pulumi.Output[dict[str, str]]:
    """The secret users map of the stack (empty when none is set)."""
    value = pulumi.Config(PROJECT).get_secret_object("users")
    if value is None:
        return pulumi.Output.secret({})

    def plain(users: Any) -> dict[str, str]:
        # The offline plan cannot decrypt nested `secure:` values; it stands in a marked placeholder.
        return {str(k): (v if isinstance(v, str) else f"offline-secret-users.{k}") for k, v in (users or {}).items()}

    return pulumi.Output.secret(value.apply(plain))


@dataclass
class DeviceAuthArgs:
    cfg: StackConfig
    users: pulumi.Input[dict[str, str]]
    """username -> password (secret)."""
    generated_users: list[str] | None = None
    """Users whose passwords the program generates (e.g. the local demo user); see .passwords."""
    param_prefix: str | None = None
    """SSM path of the stack's secrets (AWS); None on local Docker."""
    tags: dict[str, str] | None = None
    jwt_secret: pulumi.Output[str] | None = None
    """HMAC key of mechanism jwt (secret config `mqtt-cluster:jwt_secret`)."""


class DeviceAuth(pulumi.ComponentResource):
    """The engine's credential file (salted hashes) as a secret, and on AWS its SSM parameter."""

    users_file: pulumi.Output[str]
    fingerprint: pulumi.Output[str]
    parameter_name: str | None

    def __init__(self, name: str, args: DeviceAuthArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:DeviceAuth", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.cfg
        # The salt key is stable in the state: the file only changes when a user or password does.
        salt_key = random.RandomPassword(f"{name}-salt-key", length=32, special=False, opts=child)
        names = sorted(args.generated_users or [])
        self.passwords: dict[str, pulumi.Output[str]] = {n: generated(f"{name}-{n}-password", 24, False, self) for n in names}

        def build(values: list[Any]) -> str:
            users, key, *extra_pw = values
            merged = {**dict(users or {}), **dict(zip(names, extra_pw, strict=True))}
            return ra.users_file(cfg, merged, key)

        text = pulumi.Output.all(args.users, salt_key.result, *(self.passwords[n] for n in names)).apply(build)
        self.users_file = pulumi.Output.secret(text)
        # Triggers the sync step; one-way, but kept secret all the same.
        self.fingerprint = pulumi.Output.secret(text.apply(ra.users_fingerprint))
        self.parameter_name = None
        if args.param_prefix is not None:
            everyone = sorted({*cfg.users, *names})
            size = ra.users_file_size(cfg, everyone)
            if size > USERS_PARAMETER_LIMIT:
                raise StackConfigError(
                    source_name(cfg.stack),
                    f"{PROJECT}:users",
                    f"{len(everyone)} users make a {size}-byte credential file; its SSM parameter holds at most "
                    f"{USERS_PARAMETER_LIMIT} bytes",
                )
            self.parameter_name = f"{args.param_prefix}/{ra.USERS_PARAMETER_LEAF}"
            aws.ssm.Parameter(
                f"{name}-users",
                name=self.parameter_name,
                type="SecureString",
                # Up to 4 KB standard, 8 KB advanced: the service picks the tier by size.
                tier="Intelligent-Tiering",
                value=self.users_file,
                description="mqtt-cluster device credentials (salted hashes)",
                tags=args.tags or {},
                opts=child,
            )
        # Secrets the broker containers get in their environment, by SSM leaf (AWS) or value (local).
        self.secret_values: dict[str, pulumi.Output[str]] = {}
        if args.jwt_secret is not None:
            self.secret_values[ra.JWT_SECRET_LEAF] = pulumi.Output.secret(args.jwt_secret)
            if args.param_prefix is not None:
                aws.ssm.Parameter(
                    f"{name}-{ra.JWT_SECRET_LEAF}",
                    name=f"{args.param_prefix}/{ra.JWT_SECRET_LEAF}",
                    type="SecureString",
                    value=self.secret_values[ra.JWT_SECRET_LEAF],
                    description="mqtt-cluster JWT HMAC key",
                    tags=args.tags or {},
                    opts=child,
                )
        self.register_outputs({"fingerprint": self.fingerprint})


CONTAINER_UIDS = {"emqx": "1000", "vernemq": "10000"}
"""The broker user of the official images (as components.broker_cluster's EMQX_UID / VERNEMQ_UID)."""


def local_uploads(cfg: StackConfig, users_file: pulumi.Output[str]) -> list[docker.ContainerUploadArgs]:
    """Files a local broker container gets: the hash file (a secret upload) and the ACL.

    Uploads create missing directories (the provider's own acceptance test uploads to /terraform/…
    in an nginx image: kreuzwerker/terraform-provider-docker
    testdata/resources/docker_container/testAccDockerContainerUploadBase64Config.tf).
    """
    uid = CONTAINER_UIDS[cfg.brokers.engine]
    users_path = ra.EMQX_BOOTSTRAP_FILE if cfg.is_emqx else ra.VMQ_PASSWD_FILE
    _, acl_path, acl_text = ra.acl_file(cfg)
    return [
        docker.ContainerUploadArgs(file=users_path, content=users_file, permissions="0440", owner=uid, group=uid),
        docker.ContainerUploadArgs(file=acl_path, content=acl_text, permissions="0444"),
    ]
