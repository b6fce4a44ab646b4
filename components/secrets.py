"""ClusterSecrets: Erlang cookie, dashboard password (and license) as Pulumi secrets in SSM."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random


@dataclass
class ClusterSecretsArgs:
    param_prefix: str
    """SSM path the hosts read, e.g. /mqtt-cluster/dev."""
    cookie: pulumi.Output[str] | None
    """From the stack's secret config, or None to generate."""
    dashboard_password: pulumi.Output[str] | None
    license: pulumi.Output[str] | None
    tags: dict[str, str]


def fingerprint(secret: str) -> str:
    """A short one-way digest: lets the linking stack compare cookies without reading them."""
    return hashlib.sha256(f"mqtt-cluster-cookie:{secret}".encode()).hexdigest()[:16]


def generated(name: str, length: int, special: bool, parent: pulumi.Resource) -> pulumi.Output[str]:
    # Erlang cookies are atoms: letters and digits only.
    pw = random.RandomPassword(
        name, length=length, special=special, override_special="-_.+" if special else None, opts=pulumi.ResourceOptions(parent=parent)
    )
    return pulumi.Output.secret(pw.result)


def secure_parameters(
    name: str,
    prefix: str,
    values: dict[str, pulumi.Input[str]],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
    *,
    describe: bool = True,
) -> dict[str, str]:
    """One SSM SecureString per leaf under ``prefix`` (what a host fetches at boot with its role);
    returns leaf -> parameter name."""
    names: dict[str, str] = {}
    for leaf, value in values.items():
        aws.ssm.Parameter(
            f"{name}-{leaf}",
            name=f"{prefix}/{leaf}",
            type="SecureString",
            value=pulumi.Output.secret(value),
            description=f"mqtt-cluster {leaf}" if describe else None,
            tags=tags,
            opts=opts,
        )
        names[leaf] = f"{prefix}/{leaf}"
    return names


class ClusterSecrets(pulumi.ComponentResource):
    """Secrets never enter user-data: hosts fetch them from SSM with their instance role."""

    cookie: pulumi.Output[str]
    dashboard_password: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mqtt-cluster:index:ClusterSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cookie = args.cookie or generated(f"{name}-cookie", 64, False, self)
        self.dashboard_password = args.dashboard_password or generated(f"{name}-dashboard-password", 24, True, self)
        values = {"cookie": self.cookie, "dashboard-password": self.dashboard_password}
        if args.license is not None:
            values["license"] = args.license
        self.parameter_names = secure_parameters(name, args.param_prefix, values, args.tags, child)
        self.register_outputs({"cookie": self.cookie, "dashboard_password": self.dashboard_password})


class LocalSecrets(pulumi.ComponentResource):
    """The local stack's cookie and dashboard password: generated (or from config), never in SSM."""

    def __init__(
        self,
        name: str,
        cookie: pulumi.Output[str] | None,
        dashboard_password: pulumi.Output[str] | None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mqtt-cluster:index:LocalSecrets", name, None, opts)
        self.cookie = cookie or generated(f"{name}-cookie", 64, False, self)
        self.dashboard_password = dashboard_password or generated(f"{name}-dashboard-password", 24, True, self)
        self.register_outputs({"cookie": self.cookie, "dashboard_password": self.dashboard_password})
