"""Run the Pulumi program under the SDK's mock engine and record what the engine would receive.

``run_program(stack, config)`` installs fresh mocks, runs ``__main__.py`` inside a root stack (as
the language host does), and returns a :class:`Plan`: every registered resource with its type,
name, parent, inputs (as sent over the wire, secrets marked) and dependencies, plus the stack's
exported outputs. No CLI, no cloud, no credentials.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings as psettings
from pulumi.runtime.stack import Stack, wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from components import hostfiles, stackfile
from components.config import PROJECT, REGION_AZS
from tools import cliconfig

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"

_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - the wire signature, not a secret
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SIG = "4dabf18193072939515e22adb298388d"
SECRET = "[secret]"  # noqa: S105 - the placeholder the plan prints


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    inputs: dict[str, Any]
    dependencies: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    """Resource options as the engine receives them, non-empty ones only."""
    id: str = ""
    """The mock's physical id (not part of the JSON contract; tests match references with it)."""
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    """Input name -> URNs its value came from (the engine's PropertyDependencies; not in the JSON
    contract: ``dependencies`` holds their union with the explicit ones)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "provider": self.provider,
            "inputs": self.inputs,
            "dependencies": self.dependencies,
            "options": self.options,
        }


@dataclass
class Plan:
    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    files: dict[tuple[str, str], str]

    def as_json(self) -> dict[str, Any]:
        return {
            "project": PROJECT,
            "stack": self.stack,
            "resources": [r.as_json() for r in self.resources],
            "outputs": self.outputs,
        }

    # Helpers tests read like questions.
    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def by_urn(self, urn: str) -> Resource:
        return next(r for r in self.resources if r.urn == urn)

    def named(self, name: str) -> Resource:
        return next(r for r in self.resources if r.name == name)


def wire_to_plain(value: Any) -> Any:
    """A wire value (protobuf Struct as dict) with secrets as "[secret]" and refs as URNs."""
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == _SECRET_SIG:
            return SECRET
        if sig == _RESOURCE_SIG:
            return value.get("urn")
        if sig == _OUTPUT_SIG:
            if value.get("secret"):
                return SECRET
            return wire_to_plain(value.get("value")) if "value" in value else "[unknown]"
        if sig == _ASSET_SIG:
            return {k: v for k, v in value.items() if k != SIG}
        return {k: wire_to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire_to_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == _UNKNOWN:
        return "[unknown]"
    return value


def _short_hash(*parts: str, n: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2/instance:Instance": "i",
    "aws:ebs/volume:Volume": "vol",
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": "pcx",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
}


class ProgramMocks(pmocks.Mocks):
    """Realistic answers: region-true AZs, AMI ids, private IPs inside their subnet, DNS names."""

    def __init__(
        self,
        stack: str,
        region: str | None,
        stack_outputs: dict[str, dict[str, Any]],
        host_order: dict[str, list[str]] | None = None,
    ):
        self.stack = stack
        self.region = region or "us-east-1"
        self.stack_outputs = stack_outputs
        self.subnet_cidrs: dict[str, str] = {}
        # Instances per subnet in the order they were registered, and (given) the order in which
        # their private addresses are handed out: see run_program.
        self.hosts_seen: dict[str, list[str]] = {}
        self.host_order = host_order or {}

    # --- data sources -------------------------------------------------------------------------
    def call(self, args: pmocks.MockCallArgs):
        region = args.args.get("region") or self.region
        tok = args.token
        if tok == "aws:index/getAvailabilityZones:getAvailabilityZones":
            letters = REGION_AZS.get(region, ("a", "b", "c"))
            return {
                "names": [f"{region}{x}" for x in letters],
                "zoneIds": [f"{region[:3]}-az{i + 1}" for i in range(len(letters))],
                "state": "available",
                "id": region,
            }
        if tok == "aws:ec2/getAmi:getAmi":
            return {
                "id": f"ami-0{_short_hash(region, str(args.args.get('filters')), n=16)}",
                "name": "al2023-ami-2023.6.20241121.0-kernel-6.1-x86_64",
                "architecture": "x86_64",
                "rootDeviceName": "/dev/xvda",
            }
        if tok == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/offline-plan", "userId": "AIDAOFFLINE", "id": ACCOUNT}
        if tok == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if tok == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "offline-ecr-token",  # noqa: S105 - a mock's answer
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{region}.amazonaws.com",
                "authorizationToken": "offline",
                "expiresAt": "2100-01-01T00:00:00Z",
                "id": region,
            }
        if tok == "aws:index/getRegion:getRegion":
            return {"name": region, "region": region, "id": region}
        return {}

    # --- resources ----------------------------------------------------------------------------
    def new_resource(self, args: pmocks.MockResourceArgs):
        t, name, inputs = args.typ, args.name, dict(args.inputs)
        if t == "pulumi:pulumi:StackReference":
            ref = str(inputs.get("name", name)).rsplit("/", 1)[-1]  # organization/project/stack
            if ref not in self.stack_outputs:
                raise pulumi.RunError(f"stack reference {ref}: no such stack")
            outs = self.stack_outputs[ref]
            return f"{ref}", {"name": ref, "outputs": outs, "secretOutputNames": []}
        region = inputs.get("region") or self.region
        prefix = _ID_PREFIX.get(t)
        rid = f"{prefix}-0{_short_hash(self.stack, t, name, n=16)}" if prefix else f"{name}-{_short_hash(self.stack, t, name, n=8)}"
        state: dict[str, Any] = {**inputs}
        if t.startswith("aws:"):
            # Auto-naming: the provider picks "<logical name>-<suffix>" where the program gives none.
            state.setdefault("name", f"{name}-{_short_hash(rid, n=7)}")
        if t == "aws:ec2/keyPair:KeyPair":
            state.setdefault("keyName", f"{name}-{_short_hash(rid, n=7)}")
        arn_service = t.split(":")[1].split("/")[0]
        state.setdefault("arn", f"arn:aws:{arn_service}:{region}:{ACCOUNT}:{name}")
        if t == "aws:ec2/vpc:Vpc":
            state.update(
                defaultRouteTableId=f"rtb-0{_short_hash(rid, n=16)}",
                mainRouteTableId=f"rtb-0{_short_hash(rid, 'main', n=16)}",
                ownerId=ACCOUNT,
            )
        elif t == "aws:ec2/subnet:Subnet":
            self.subnet_cidrs[rid] = inputs.get("cidrBlock", "10.0.0.0/24")
        elif t == "aws:ec2/instance:Instance":
            subnet = inputs.get("subnetId", "")
            cidr = ipaddress.ip_network(self.subnet_cidrs.get(subnet, "10.0.0.0/24"))
            seen = self.hosts_seen.setdefault(subnet, [])
            order = self.host_order.get(subnet, [])
            n = 10 + (order.index(name) if name in order else len(order) + len(seen))
            seen.append(name)
            ip = str(cidr.network_address + n)
            state.update(
                privateIp=ip,
                privateDns=f"ip-{ip.replace('.', '-')}.{region}.compute.internal",
                primaryNetworkInterfaceId=f"eni-0{_short_hash(rid, n=16)}",
            )
            if inputs.get("associatePublicIpAddress"):
                state["publicIp"] = f"203.0.113.{n}"
        elif t == "aws:ec2/eip:Eip":
            state["publicIp"] = f"198.51.100.{int(_short_hash(rid, n=2), 16) % 250 + 1}"
        elif t == "aws:lb/loadBalancer:LoadBalancer":  # NLB: <name>-<16 hex>.elb.<region>.amazonaws.com
            state.update(dnsName=f"{state['name']}-{_short_hash(rid, n=16)}.elb.{region}.amazonaws.com", zoneId="Z26RNL4JYFTOTI")
            # What CloudWatch dimensions use: "net/<name>/<id>" (the ARN after "loadbalancer/").
            state["arnSuffix"] = f"net/{state['name']}/{_short_hash(rid, n=16)}"
        elif t == "aws:elb/loadBalancer:LoadBalancer":  # classic: <name>-<digits>.<region>.elb.amazonaws.com
            state.update(dnsName=f"{state['name']}-{int(_short_hash(rid, n=8), 16)}.{region}.elb.amazonaws.com", zoneId="Z26RNL4JYFTOTI")
        elif t == "aws:lb/targetGroup:TargetGroup":
            state["arnSuffix"] = f"targetgroup/{state['name']}/{_short_hash(rid, n=16)}"
        elif t == "aws:route53/zone:Zone":
            rid = f"Z0{_short_hash(rid, n=18).upper()}"
            state.update(zoneId=rid, nameServers=["ns-1.awsdns-01.org"])
        elif t == "aws:acm/certificate:Certificate":
            names = [inputs.get("domainName", "mqtt.example.com"), *(inputs.get("subjectAlternativeNames") or [])]
            state["domainValidationOptions"] = [
                {
                    "domainName": dn,
                    "resourceRecordName": f"_{_short_hash(dn, n=8)}.{dn}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": f"_{_short_hash(dn, 'v', n=8)}.acm-validations.aws.",
                }
                for dn in reversed(names)  # no fixed order, as the provider
            ]
        elif t == "random:index/randomPassword:RandomPassword":
            state["result"] = f"offline-{_short_hash(rid, n=24)}"
        elif t == "tls:index/privateKey:PrivateKey":
            state.update(
                privateKeyPem="-----BEGIN PRIVATE KEY-----\nOFFLINE\n-----END PRIVATE KEY-----\n",
                privateKeyOpenssh="-----BEGIN OPENSSH PRIVATE KEY-----\nOFFLINE\n-----END OPENSSH PRIVATE KEY-----\n",
                publicKeyOpenssh=f"ssh-ed25519 AAAAC3NzaOFFLINE{_short_hash(rid, n=12)} {name}\n",
                publicKeyPem="-----BEGIN PUBLIC KEY-----\nOFFLINE\n-----END PUBLIC KEY-----\n",
            )
        elif t in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            state["certPem"] = f"-----BEGIN CERTIFICATE-----\nOFFLINE{_short_hash(rid, n=8)}\n-----END CERTIFICATE-----\n"
        elif t == "tls:index/certRequest:CertRequest":
            state["certRequestPem"] = "-----BEGIN CERTIFICATE REQUEST-----\nOFFLINE\n-----END CERTIFICATE REQUEST-----\n"
        elif t.startswith("command:"):
            state.update(stdout="", stderr="")
        elif t == "aws:ssm/parameter:Parameter":
            state["version"] = 1  # a new parameter's first version
        elif t == "docker:index/remoteImage:RemoteImage":
            digest = _short_hash(rid, n=64)
            state.update(imageId=f"sha256:{digest}", repoDigest=f"{inputs.get('name', name).split(':')[0]}@sha256:{digest}")
        elif t == "docker:index/image:Image":
            image_name = inputs.get("imageName", name)
            state.update(imageName=image_name, repoDigest=f"{image_name.rsplit(':', 1)[0]}@sha256:{_short_hash(rid, n=64)}")
        elif t == "aws:ecr/repository:Repository":
            state.update(repositoryUrl=f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{inputs.get('name', name)}", registryId=ACCOUNT)
        if t.startswith("docker:"):
            state.setdefault("name", name)
        return rid, state


class DuplicateUrnError(pulumi.RunError):
    """The engine's refusal of a second resource with the same URN."""

    def __init__(self, urn: str):
        self.urn = urn
        # pulumi/pulumi v3.259.0 sdk/go/common/diag/errors.go:32-34, raised by the step generator
        # for every URN seen twice in one deployment (pkg/resource/deploy/step_generator.go:276-286).
        super().__init__(f"Duplicate resource URN '{urn}'; try giving it a unique name")


def _options(request, depends_on: list[str]) -> dict[str, Any]:
    """The resource options a RegisterResourceRequest carries, non-empty ones only
    (pulumi/pulumi sdk/proto/resource.proto RegisterResourceRequest; filled by the Python SDK in
    pulumi/runtime/resource.py register_resource)."""
    opts: dict[str, Any] = {}
    if request.ignoreChanges:
        opts["ignoreChanges"] = list(request.ignoreChanges)
    if request.deleteBeforeReplace:
        opts["deleteBeforeReplace"] = True
    if request.replaceOnChanges:
        opts["replaceOnChanges"] = list(request.replaceOnChanges)
    if request.HasField("protect") and request.protect:
        opts["protect"] = True
    if request.HasField("retainOnDelete") and request.retainOnDelete:
        opts["retainOnDelete"] = True
    if depends_on:
        opts["dependsOn"] = depends_on
    if request.HasField("customTimeouts"):
        timeouts = {k: v for k, v in json_format.MessageToDict(request.customTimeouts).items() if v}
        if timeouts:
            opts["customTimeouts"] = timeouts
    aliases: list[Any] = [a.urn if a.WhichOneof("alias") == "urn" else json_format.MessageToDict(a.spec) for a in request.aliases]
    aliases += list(request.aliasURNs)
    if aliases:
        opts["aliases"] = aliases
    if request.deletedWith:
        opts["deletedWith"] = request.deletedWith
    return opts


class _ExplicitDependsOn:
    """The explicit ``depends_on`` URNs of each registration, as the SDK resolves them.

    The request's ``dependencies`` merges them with every property dependency
    (pulumi/runtime/resource.py prepare_resource), so they are recorded where the SDK computes them:
    a wrapper of ``prepare_resource`` asks the SDK's own ``_resolve_depends_on_urns`` for the same
    list (components expanded to their children, as sent), keyed by (parent URN, type, name).
    """

    def __init__(self):
        self.by_key: dict[tuple[str, str, str], list[str]] = {}
        self._original = None

    def install(self) -> None:
        from pulumi.runtime import resource as rt

        original = self._original = rt.prepare_resource
        by_key = self.by_key

        async def prepare_resource(res, ty, custom, remote, props, opts, typ=None):
            result = await original(res, ty, custom, remote, props, opts, typ)
            if opts is not None and opts.depends_on is not None:
                urns = await rt._resolve_depends_on_urns(opts._depends_on_list(), from_resource=res)
                by_key[(result.parent_urn or "", ty, res._name)] = sorted(urns)
            return result

        rt.prepare_resource = prepare_resource

    def uninstall(self) -> None:
        from pulumi.runtime import resource as rt

        if self._original is not None:
            rt.prepare_resource = self._original
            self._original = None


class RecordingMonitor(pmocks.MockMonitor):
    """The SDK's mock monitor, keeping each register request as the engine would receive it,
    and refusing what the engine refuses (a URN registered twice)."""

    def __init__(self, mocks: pmocks.Mocks, depends_on: _ExplicitDependsOn | None = None):
        super().__init__(mocks)
        self.records: list[Resource] = []
        self.stack_outputs: dict[str, Any] = {}
        self.urns: set[str] = set()
        self.depends_on = depends_on or _ExplicitDependsOn()

    def RegisterResource(self, request):
        if request.type == "pulumi:pulumi:Stack":
            # set_mocks registers a root stack of its own before the program's; not a program resource.
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        if urn in self.urns:
            raise DuplicateUrnError(urn)
        self.urns.add(urn)
        response = super().RegisterResource(request)
        deps = set(request.dependencies)
        prop_deps = {key: sorted(pd.urns) for key, pd in request.propertyDependencies.items() if pd.urns}
        for urns in prop_deps.values():
            deps.update(urns)
        inputs = wire_to_plain(json_format.MessageToDict(request.object)) if request.object else {}
        provider = request.provider.split("::")[0] if request.provider else None
        explicit = self.depends_on.by_key.get((request.parent, request.type, request.name), [])
        self.records.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent or None,
                custom=bool(request.custom),
                provider=provider or None,
                inputs=inputs,
                dependencies=sorted(deps),
                options=_options(request, explicit),
                id=response.id,
                property_dependencies=prop_deps,
            )
        )
        return response

    def RegisterResourceOutputs(self, request):
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack" and request.outputs:
            self.stack_outputs = wire_to_plain(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)


def stack_file(stack: str) -> Path:
    return ROOT / "stacks" / f"Pulumi.{stack}.yaml"


PROJECT_FILE = ROOT / "Pulumi.yaml"


def load_project(path: Path | None = None) -> cliconfig.Project:
    return cliconfig.load_project(path or PROJECT_FILE)


def _source(path: Path) -> str:
    """Files inside the project are named as the operator wrote them (relative), others as given."""
    return os.path.relpath(path, ROOT) if path.is_absolute() and ROOT in path.parents else str(path)


def stack_config_of(
    stack: str, path: Path, project: cliconfig.Project | None = None, source: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """The config the CLI hands the program for ``stack`` (read, merged and checked as the CLI
    does: tools/cliconfig.py) and its secret keys. Raises ConfigError naming the file and key."""
    project = project or load_project()
    source = source or _source(path)
    values = cliconfig.read_stack(path, project, source=source)
    merged = cliconfig.apply_project_config(stack, project, values, source)
    return cliconfig.program_config(merged)


def _flatten_config(doc: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """A stack document's config as the program receives it (project defaults merged, unchecked)."""
    project = load_project()
    values = {cliconfig.full_key(k, project.name): cliconfig.stack_value(v) for k, v in (doc.get("config") or {}).items()}
    for key, d in project.config.items():
        full = cliconfig.full_key(key, project.name)
        if full not in values and (d.default is not None or d.value is not None):
            values[full] = d.default if d.default is not None else d.value
    return cliconfig.program_config(values)


def read_stack_file(path: Path) -> dict[str, Any]:
    """A stack file as the CLI's YAML reader (go-yaml v3) decodes it."""
    doc = stackfile.load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a mapping")
    return doc


def referenced_stacks(config: dict[str, str]) -> list[str]:
    """Stacks a flattened config refers to: links.stacks (global) and brokers.cluster_with."""
    refs: list[str] = []
    for key, name in ((f"{PROJECT}:links", "stacks"), (f"{PROJECT}:brokers", "cluster_with")):
        try:
            section = json.loads(config.get(key) or "{}")
        except json.JSONDecodeError:
            continue
        value = section.get(name) if isinstance(section, dict) else None
        refs += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return refs


_OUTPUTS_CACHE: dict[tuple[str, float], dict[str, Any]] = {}


def resolve_references(config: dict[str, str], _seen: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Exported outputs of every stack this config references, from their own offline plans
    (as ``python -m tools.plan REF --json`` prints them: secrets are "[secret]")."""
    outputs: dict[str, dict[str, Any]] = {}
    for ref in referenced_stacks(config):
        path = stack_file(ref)
        if not path.exists() or ref in _seen:
            continue  # the program reports the missing stack (or the cycle), naming the key
        key = (ref, path.stat().st_mtime)
        if key not in _OUTPUTS_CACHE:
            ref_config, ref_secrets = stack_config_of(ref, path)
            nested = resolve_references(ref_config, (*_seen, ref))
            plan = run_program(ref, ref_config, ref_secrets, stack_outputs=nested)
            _OUTPUTS_CACHE[key] = plan.outputs
        outputs[ref] = copy.deepcopy(_OUTPUTS_CACHE[key])  # callers may edit their copy
    return outputs


def _drain() -> None:
    """After a failed run, cancel the registrations still queued so they fail here, not in the next run."""
    import asyncio

    loop = asyncio.get_event_loop()
    with psettings.SETTINGS.lock:  # output tasks the SDK keeps across runs
        tracked = list(psettings.SETTINGS.outputs)
        psettings.SETTINGS.outputs.clear()
    pending = [t for t in {*asyncio.all_tasks(loop), *tracked} if not t.done()]
    for task in pending:
        task.cancel()
    if pending and not loop.is_running():
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    psettings._get_rpc_manager().clear()


def run_program(
    stack: str,
    config: dict[str, str],
    secret_keys: list[str] | None = None,
    *,
    source: str | None = None,
    stack_outputs: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    """Run __main__.py for ``stack`` with ``config`` under mocks; raise what the program raises."""
    if stack_outputs is None:
        stack_outputs = resolve_references(config, (stack,))
    plan, seen = _run_once(stack, config, secret_keys, source, stack_outputs, None)
    # The SDK registers resources as their inputs resolve, and its RPCs complete on worker threads:
    # instances in one subnet arrive in a different order from run to run. Their addresses follow
    # the order of their names instead, so two plans of one configuration are equal (a pull
    # request's plan diff shows no address swaps). A run that met them in another order runs again.
    order = {subnet: sorted(names) for subnet, names in seen.items()}
    if order != seen:
        plan, _ = _run_once(stack, config, secret_keys, source, stack_outputs, order)
    return plan


def _run_once(
    stack: str,
    config: dict[str, str],
    secret_keys: list[str] | None,
    source: str | None,
    stack_outputs: dict[str, dict[str, Any]],
    host_order: dict[str, list[str]] | None,
) -> tuple[Plan, dict[str, list[str]]]:
    region = config.get("aws:region")
    mocks = ProgramMocks(stack, region, stack_outputs, host_order)
    depends_on = _ExplicitDependsOn()
    monitor = RecordingMonitor(mocks, depends_on)
    psettings.set_root_resource(None)
    # A program that raised leaves its outstanding RPCs and output tasks behind; they belong to no
    # later run (else the next plan re-raises the old error).
    psettings._get_rpc_manager().clear()  # noqa: SLF001
    with psettings.SETTINGS.lock:
        for task in psettings.SETTINGS.outputs:
            task.cancel()
        psettings.SETTINGS.outputs.clear()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor, organization="organization")
    psettings.set_root_resource(None)  # Stack() below makes the real root, as the language host does
    pulumi.runtime.set_all_config(config, secret_keys or [])
    hostfiles.reset()
    old_source = os.environ.get("MQTT_CLUSTER_CONFIG_SOURCE")
    os.environ["MQTT_CLUSTER_CONFIG_SOURCE"] = source or os.path.relpath(stack_file(stack), ROOT)
    psettings._get_rpc_manager().clear()  # an earlier failed run may leave RPCs and their error behind
    depends_on.install()
    try:
        # As the language host does: a root stack, the program inside it, outputs registered, then
        # every outstanding RPC and Output awaited. Sync invokes run on the not-yet-running loop.
        Stack(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
        _sync_await(wait_for_rpcs())
    except BaseException:
        _drain()
        raise
    finally:
        depends_on.uninstall()
        psettings._get_rpc_manager().clear()
        if old_source is None:
            os.environ.pop("MQTT_CLUSTER_CONFIG_SOURCE", None)
        else:
            os.environ["MQTT_CLUSTER_CONFIG_SOURCE"] = old_source
    plan = Plan(stack=stack, resources=monitor.records, outputs=monitor.stack_outputs, files=hostfiles.rendered())
    return plan, mocks.hosts_seen


def plan_stack(stack: str, config_file: Path | None = None, project_file: Path | None = None) -> Plan:
    """Plan ``stack`` from its stack file (or ``config_file``) under Pulumi.yaml (or ``project_file``)."""
    path = config_file or stack_file(stack)
    source = _source(path)
    project = load_project(project_file)
    config, secret_keys = stack_config_of(stack, path, project, source)
    return run_program(stack, config, secret_keys, source=source)
