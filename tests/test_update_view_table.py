"""The update view's replacement table (tools/replace_facts.py): it holds every resource type the
program registers and no other, its inputs are the installed SDKs' own, and the view acts on it."""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from pathlib import Path

import pulumi
import pytest
import yaml

from tests.conftest import STACKS, plan_of
from tools import mockengine, update_view
from tools.replace_facts import FACTS

# Config that registers the types no shipped stack does: a built image (ECR and docker.Image), alarm
# e-mails (an SNS subscription), proxy protocol behind a classic ELB (backend server policies).
VARIANTS = {
    "dev": {"brokers": {"build_image": True}, "observability": {"alert_emails": ["ops@example.com"]}},
    "staging": {"load_balancer": {"proxy_protocol": True}},
    "local": {"brokers": {"build_image": True}},
}


def _variant(tmp_path: Path, stack: str, name: str = "head", **sections) -> Path:
    """The stack's file with some config sections merged."""
    doc = mockengine.read_stack_file(mockengine.stack_file(stack))
    for section, values in sections.items():
        key = f"mqtt-cluster:{section}"
        doc["config"][key] = {**doc["config"].get(key, {}), **values}
    path = tmp_path / f"{stack}-{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _view(stack: str, tmp_path: Path, **sections) -> dict[str, dict]:
    rows = update_view.actions(plan_of(stack), mockengine.plan_stack(stack, _variant(tmp_path, stack, **sections)))
    return {r["name"]: r for r in rows}


def _changed(plan: mockengine.Plan, resource: str, **inputs) -> mockengine.Plan:
    """A copy of the plan with some inputs of one resource replaced: what the config cannot reach."""
    out = copy.deepcopy(plan)
    r = out.named(resource)
    r.inputs = {**r.inputs, **inputs}
    return out


# --- the table ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> set[str]:
    tmp = tmp_path_factory.mktemp("variants")
    plans = [plan_of(s) for s in STACKS]
    plans += [mockengine.plan_stack(s, _variant(tmp, s, **sections)) for s, sections in VARIANTS.items()]
    return {r.type for p in plans for r in p.resources if r.custom}


def test_the_table_holds_every_registered_custom_type_and_no_other(registered):
    assert sorted(registered - FACTS.keys()) == [], "registered without replacement facts"
    assert sorted(FACTS.keys() - registered) == [], "facts for a type no stack registers"
    assert len(registered) >= 57


def _args_class(token: str) -> type:
    """The installed SDK's args class of a resource type token ("aws:ec2/instance:Instance")."""
    pkg, mod, name = token.split(":")
    module = importlib.import_module(f"pulumi_{pkg}" + ("" if mod.startswith("index") else f".{mod.split('/')[0]}"))
    home = importlib.import_module(getattr(module, name).__module__)
    # Where a nested type already took "<Name>Args", the resource's is "<Name>InitArgs".
    return getattr(home, f"{name}InitArgs", None) or getattr(home, f"{name}Args")


def _inputs(cls: type) -> dict[str, str]:
    """camelCase input name -> Python property name."""
    return {camel: py for py, camel in pulumi._types.input_type_py_to_pulumi_names(cls).items()}


def _nested(cls: type, prop: str) -> type:
    """The args class an input of ``cls`` takes (one object or a list of them)."""
    hint = str(inspect.signature(getattr(cls, prop).fget).return_annotation)
    (name,) = set(re.findall(r"'(\w+Args)'", hint))
    return getattr(importlib.import_module(cls.__module__.rsplit(".", 1)[0] + "._inputs"), name)


@pytest.mark.parametrize("token", sorted(FACTS))
def test_every_table_input_is_an_input_of_the_installed_sdk(token):
    cls = _args_class(token)
    inputs = _inputs(cls)
    facts = FACTS[token]
    for entry in sorted(facts.replace_on):
        top, _, field = entry.partition(".")
        assert top in inputs, f"{token}: {top} is no input of {cls.__name__}"
        if field:
            assert field in _inputs(_nested(cls, inputs[top])), f"{token}: {entry}"
    if facts.autoname is not None:
        # The bridge makes an auto-named input optional (pulumi-terraform-bridge v3.136.0
        # pkg/tfbridge/info/autonaming.go:32-33): a required one cannot be auto-named.
        param = inspect.signature(cls.__init__).parameters[inputs[facts.autoname]]
        assert param.default is None, f"{token}: {facts.autoname} is required, so not auto-named"


def test_a_plan_with_a_type_the_table_lacks_stops_the_view(monkeypatch, capsys):
    plan = plan_of("dev")
    odd = copy.deepcopy(plan)
    odd.resources[-1].type = "aws:example/thing:Thing"
    with pytest.raises(update_view.UnknownResourceType, match="aws:example/thing:Thing"):
        update_view.actions(plan, odd)
    # The command line says so and fails, rather than calling the change an update.
    monkeypatch.delitem(update_view.FACTS, "aws:sns/topic:Topic")
    assert update_view.main(["dev", "--head-config", str(mockengine.stack_file("dev"))]) == 2
    assert "aws:sns/topic:Topic" in capsys.readouterr().err


# --- the view, on real stacks ------------------------------------------------------------------
def test_a_new_bastion_instance_type_updates_it_in_place(tmp_path):
    # instance_type has no ForceNew (TF-AWS ec2/ec2_instance.go:457): an update (stop and start).
    rows = _view("dev", tmp_path, access={"bastion_instance_type": "t3.small"})
    assert {n: (r["action"], r["inputs"], r["forced_by"]) for n, r in rows.items()} == {"bastion-host": ("update", ["instanceType"], [])}


def test_a_new_proxy_or_bastion_image_is_ignored_and_would_otherwise_replace():
    for stack, hosts in (("dev", ["bastion-host"]), ("edge", ["lb-nginx-1", "lb-nginx-2"])):
        base = plan_of(stack)
        for host in hosts:
            assert base.named(host).options["ignoreChanges"] == ["ami"]
            head = _changed(base, host, ami="ami-0123456789abcdef0")
            assert update_view.actions(base, head) == [], host
            # Without ignore_changes: ami is ForceNew (TF-AWS ec2/ec2_instance.go:66), and a proxy's
            # public address moves with it (the association's instanceId is ForceNew too).
            head.named(host).options = {k: v for k, v in head.named(host).options.items() if k != "ignoreChanges"}
            rows = {r["name"]: r for r in update_view.actions(base, head)}
            assert (rows[host]["action"], rows[host]["forced_by"]) == ("replace", ["ami"])
            if host.startswith("lb-"):
                assert rows[f"{host}-eip-assoc"]["forced_by"] == [f"follows {host}"]


def test_a_new_vpc_cidr_replaces_the_network_and_what_stands_in_it_but_not_the_data_volumes(tmp_path):
    rows = _view("dev", tmp_path, network={"cidr": "10.20.0.0/16"})
    act = {n: r["action"] for n, r in rows.items()}
    assert rows["net-vpc"]["forced_by"] == ["cidrBlock"]
    subnets = [n for n in act if re.fullmatch(r"net-(public|private)-\d", n)]
    assert len(subnets) == 6 and all(rows[s]["forced_by"] == ["cidrBlock"] for s in subnets)
    # Route tables and security groups hold the VPC's id in a ForceNew vpcId; the internet gateway
    # attaches to the new VPC in place; the zone's VPC list is ignore_changes.
    assert {act[n] for n in act if n.endswith("-rt") or n.startswith("sg-")} == {"replace"}
    assert act["net-igw"] == "update" and "brokers-zone" not in act
    # Hosts follow their subnet; their data volumes stay (same AZ), re-attached, old attachment first.
    for i in (1, 2, 3):
        assert act[f"brokers-emqx-{i}"] == "replace" and f"brokers-emqx-{i}-data" not in act
        attach = rows[f"brokers-emqx-{i}-data-attach"]
        assert attach["action"] == "replace" and attach["deletes_first"] is True
    assert not [n for n, r in rows.items() if r["type"] == "aws:ebs/volume:Volume"]


def test_a_new_local_subnet_replaces_the_named_network_and_its_containers_deleting_first(tmp_path):
    rows = _view("local", tmp_path, local={"subnet": "172.29.0.0/24"})
    net = rows["local-net"]
    # docker_network's ipam_config is ForceNew (KW resource_docker_network.go:104); the program names
    # the network, so the bridge deletes it before creating the new one.
    assert (net["action"], net["forced_by"], net["deletes_first"]) == ("replace", ["ipamConfigs"], True)
    containers = [r for r in rows.values() if r["type"] == "docker:index/container:Container"]
    assert containers and all(r["action"] == "replace" and r["deletes_first"] for r in containers)
    assert not [r for r in rows.values() if r["type"] == "docker:index/volume:Volume"], "the data volumes stay"


def test_which_replacements_delete_first_on_a_shipped_stack():
    by_type: dict[str, list[bool]] = {}
    for r in plan_of("dev").resources:
        if r.custom:
            by_type.setdefault(r.type, []).append(update_view.deletes_first(r))
    # The program names these itself: an auto-named input set explicitly.
    assert set(by_type["aws:cloudwatch/logGroup:LogGroup"]) == {True}
    assert set(by_type["aws:ssm/parameter:Parameter"]) == {True}
    assert set(by_type["aws:route53/zone:Zone"]) == {True}
    # Left to the auto-namer: create first.
    assert set(by_type["aws:iam/role:Role"]) == set(by_type["aws:ec2/securityGroup:SecurityGroup"]) == {False}
    # The provider (pulumi-aws DeleteBeforeReplace) and the program's own option.
    assert set(by_type["aws:iam/rolePolicyAttachment:RolePolicyAttachment"]) == {True}
    assert set(by_type["aws:ec2/volumeAttachment:VolumeAttachment"]) == {True}
    assert set(by_type["random:index/randomPassword:RandomPassword"]) == {False}


def test_a_root_volume_grows_in_place_but_its_encryption_replaces_the_host(tmp_path):
    rows = _view("dev", tmp_path, brokers={"root_volume_gb": 32})
    hosts = {n: r for n, r in rows.items() if n.startswith("brokers-emqx-") and r["type"] == update_view.INSTANCE}
    assert len(hosts) == 3 and all((r["action"], r["inputs"]) == ("update", ["rootBlockDevice"]) for r in hosts.values())
    base = plan_of("dev")
    root = base.named("brokers-emqx-1").inputs["rootBlockDevice"]
    head = _changed(base, "brokers-emqx-1", rootBlockDevice={**root, "encrypted": False})
    row = {r["name"]: r for r in update_view.actions(base, head)}["brokers-emqx-1"]
    assert (row["action"], row["forced_by"]) == ("replace", ["rootBlockDevice.encrypted"])


def test_commands_replace_on_their_triggers_only():
    base = plan_of("prod-global")
    join = next(r for r in base.resources if r.type == "command:remote:Command")
    # A new connection (another host, say; the plan shows it as a secret) re-runs the command in
    # place (CMD remote/command.go:46).
    assert join.inputs["connection"] == mockengine.SECRET
    (row,) = update_view.actions(base, _changed(base, join.name, connection={"host": "10.99.0.1"}))
    assert (row["name"], row["action"]) == (join.name, "update")
    # triggers: replaceOnChanges, from the SDK's own resource option.
    assert join.options["replaceOnChanges"] == ["triggers[*]"]
    (row,) = update_view.actions(base, _changed(base, join.name, triggers=["another"]))
    assert (row["action"], row["forced_by"]) == ("replace", ["triggers"])


def test_a_dns_record_changes_type_in_place():
    # type has no ForceNew (TF-AWS route53/record.go:244); name and zone do.
    base = plan_of("dev")
    rec = base.of_type("aws:route53/record:Record")[0]
    (row,) = update_view.actions(base, _changed(base, rec.name, type="AAAA"))
    assert (row["action"], row["inputs"]) == ("update", ["type"])
    (row,) = update_view.actions(base, _changed(base, rec.name, name="other." + rec.inputs["name"]))
    assert (row["action"], row["forced_by"]) == ("replace", ["name"])
