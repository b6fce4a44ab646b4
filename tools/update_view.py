"""What `pulumi up` would do to a running stack when its config changes, from two offline plans.

    python -m tools.update_view STACK --head-config FILE [--base-config FILE] [--json]

Base: the stack file (or --base-config), head: --head-config. Resources are matched by URN; a
changed resource is replaced when a changed input is in REPLACE_ON for its type, else updated.
Dependency-only changes do nothing; ignore_changes inputs are kept; a removed resource with
retain_on_delete is forgotten, not deleted (options from the offline plan). Secrets are "[secret]".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from components.config import ConfigError
from components.local_cluster import DATA_DIRS, ROLE_LABEL
from tools import mockengine
from tools.plan_diff import diff_inputs

# Inputs whose change makes the provider replace the resource. Sources: the installed SDK
# docstrings where they say so (pulumi_aws 7.51.1), else the Terraform AWS provider schema the
# bridged provider follows (ForceNew attributes), named as such.
REPLACE_ON: dict[str, set[str]] = {
    # pulumi_aws ec2/instance.py:127, :788 (userData with userDataReplaceOnChange: destroy and
    # recreate); ami, subnet, key, private IP, public IP association: ForceNew in the provider schema.
    "aws:ec2/instance:Instance": {
        "userData",
        "userDataBase64",
        "ami",
        "subnetId",
        "keyName",
        "availabilityZone",
        "privateIp",
        "associatePublicIpAddress",
    },
    "aws:ebs/volume:Volume": {"availabilityZone", "encrypted", "kmsKeyId", "snapshotId"},  # ForceNew
    "aws:ec2/volumeAttachment:VolumeAttachment": {"deviceName", "instanceId", "volumeId"},  # ForceNew
    "aws:ssm/parameter:Parameter": {"name"},  # ForceNew; value, type, tier update in place
    "aws:route53/record:Record": {"name", "type", "zoneId"},  # ForceNew (records, ttl: in place)
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": {"targetGroupArn", "targetId", "port", "availabilityZone"},  # ForceNew
    "aws:iam/rolePolicy:RolePolicy": {"name", "role"},  # ForceNew; the policy document updates in place
    # pulumi_command local/command.py:136 triggers replace unless an update command is given (:143);
    # create/update/delete/environment changes run the update command.
    "command:local:Command": {"triggers"},
    "command:remote:Command": {"triggers", "connection"},
    # pulumi-docker: a new image name pulls a new image; a container's image forces a new container.
    "docker:index/remoteImage:RemoteImage": {"name"},
    "docker:index/container:Container": {"image", "name"},
}

# What a resource does when a resource it reads outputs from is replaced (new id, new outputs):
# the offline plan's mock keeps ids stable, so this follows the dependency edges instead.
FOLLOWS = {  # type -> (dependency types whose id it holds in a replace-forcing input)
    "docker:index/container:Container": {"docker:index/remoteImage:RemoteImage", "docker:index/image:Image"},  # image
    "aws:ec2/volumeAttachment:VolumeAttachment": {INSTANCE_TYPE := "aws:ec2/instance:Instance"},  # instanceId
    "aws:lb/targetGroupAttachment:TargetGroupAttachment": {INSTANCE_TYPE},  # targetId
    # instanceId, ForceNew (hashicorp/terraform-provider-aws 01c08000 internal/service/ec2/ec2_eip_association.go:40-45)
    "aws:ec2/eipAssociation:EipAssociation": {INSTANCE_TYPE},
}

INSTANCE = "aws:ec2/instance:Instance"


def _stable_inputs(plan: mockengine.Plan) -> dict[str, dict[str, Any]]:
    """Inputs by URN, with the mock's private addresses of broker hosts named after their node: the
    mock hands out addresses in registration order, a running host keeps its address."""
    addresses, nodes = plan.outputs.get("node_addresses", []), plan.outputs.get("node_names", [])
    names = {ip: f"<address of {node}>" for ip, node in zip(addresses, nodes, strict=True)} if len(addresses) == len(nodes) else {}
    out = {}
    for r in plan.resources:
        text = json.dumps(r.inputs)
        for ip, name in names.items():
            text = re.sub(rf"(?<![\d.]){re.escape(ip)}(?![\d.])", name, text)
        out[r.urn] = json.loads(text)
    return out


def actions(base: mockengine.Plan, head: mockengine.Plan) -> list[dict[str, Any]]:
    """One row per resource that `pulumi up` would touch: create, update, replace or delete."""
    old = {r.urn: r for r in base.resources if r.custom}
    new = {r.urn: r for r in head.resources if r.custom}
    old_in, new_in = _stable_inputs(base), _stable_inputs(head)
    rows: list[dict[str, Any]] = []
    for urn in sorted(set(old) | set(new)):
        o, n = old.get(urn), new.get(urn)
        if o is None:
            rows.append({"action": "create", "type": n.type, "name": n.name, "inputs": []})
            continue
        if n is None:
            # retain_on_delete: Pulumi forgets the resource, the cloud keeps it
            action = "forget" if o.options.get("retainOnDelete") else "delete"
            rows.append({"action": action, "type": o.type, "name": o.name, "inputs": [], "dependencies": o.dependencies})
            continue
        changed = diff_inputs(old_in[urn], new_in[urn])
        ignored = set(n.options.get("ignoreChanges", []))  # the engine keeps the old value of these
        tops = {path.split(".")[0].split("[")[0] for path, _, _ in changed} - ignored
        if not tops:
            continue
        forcing = tops & REPLACE_ON.get(n.type, set())
        if n.type == INSTANCE and not n.inputs.get("userDataReplaceOnChange"):
            forcing -= {"userData", "userDataBase64"}
        rows.append(
            {
                "action": "replace" if forcing else "update",
                "type": n.type,
                "name": n.name,
                "inputs": sorted(tops),
                "forced_by": sorted(forcing),
            }
        )
    return _follow_replacements(rows, new)


def _follow_replacements(rows: list[dict[str, Any]], new: dict[str, mockengine.Resource]) -> list[dict[str, Any]]:
    """Resources that read outputs of a replaced resource follow it (the mock keeps ids stable)."""
    by_name = {r["name"]: r for r in rows}
    replaced = {urn for urn, r in new.items() if by_name.get(r.name, {}).get("action") == "replace"}
    changed = True
    while changed:
        changed = False
        for urn, r in new.items():
            if urn in replaced or by_name.get(r.name, {}).get("action") == "create":
                continue
            # Only inputs read from a replaced resource change (its new id, new outputs); an ordering
            # edge alone (dependsOn) changes nothing.
            keys = {k for k, urns in r.property_dependencies.items() if replaced & set(urns)}
            if not keys:
                continue
            deps = [d for k in sorted(keys) for d in r.property_dependencies[k] if d in replaced]
            if r.type in FOLLOWS:
                deps = [d for d in deps if new[d].type in FOLLOWS[r.type]]
                if not deps:
                    continue
                action = "replace"
            else:
                action = "replace" if _replaces_on(r, keys) else "update"
            cause = f"follows {new[deps[0]].name}"
            row = by_name.get(r.name)
            if row is None:
                row = {"action": action, "type": r.type, "name": r.name, "inputs": [], "forced_by": []}
                rows.append(row)
                by_name[r.name] = row
            elif not (action == "replace" and row["action"] == "update"):
                continue
            row["action"] = action
            if action == "replace":
                row["forced_by"] = sorted({*row["forced_by"], cause})
                replaced.add(urn)
            else:
                row["inputs"] = sorted({*row["inputs"], cause})
            changed = True
    order = {r.name: i for i, r in enumerate(new.values())}
    return sorted(rows, key=lambda r: (r["action"] in ("delete", "forget"), order.get(r["name"], 0), r["name"]))


def delete_order_ok(rows: list[dict[str, Any]]) -> list[str]:
    """Deleted hosts whose leave would not run first (Pulumi deletes a condemned resource only after
    its condemned dependents: pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:2766, :2791)."""
    deleted = [r for r in rows if r["action"] in ("delete", "forget")]
    leaves = [r for r in deleted if r["name"].startswith("ops-member-")]
    problems = []
    for host in (r for r in deleted if r["type"] == INSTANCE):
        short = host["name"].removeprefix("brokers-")
        leave = next((r for r in leaves if r["name"] == f"ops-member-{short}"), None)
        if leave is None or not any(d.endswith(f"::{host['name']}") for d in leave["dependencies"]):
            problems.append(host["name"])
    return problems


# The provider asks the engine to delete before it creates the replacement (the engine honours it:
# pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:2044-2047).
PROVIDER_DELETES_FIRST = {
    "docker:index/container:Container",  # pulumi/pulumi-docker 237b789 provider/resources.go:112-114
}
# Updates that stop and start an EC2 instance: pulumi_aws 7.51.1 ec2/instance.py:99 (instance_type),
# :125-126 (user data without user_data_replace_on_change).
STOP_START = {INSTANCE: {"instanceType", "userData", "userDataBase64"}}


def deletes_first(r: mockengine.Resource) -> bool:
    if "deleteBeforeReplace" in r.options:
        return bool(r.options["deleteBeforeReplace"])
    return r.type in PROVIDER_DELETES_FIRST


def _replaces_on(r: mockengine.Resource, keys: set[str]) -> bool:
    """Would the provider replace ``r`` if these inputs became unknown? Its table, or replaceOnChanges."""
    forcing = REPLACE_ON.get(r.type, set()) | {k.split("[")[0].split(".")[0] for k in r.options.get("replaceOnChanges", [])}
    return bool(keys & forcing)


def deleted_first(rows: list[dict[str, Any]], base: mockengine.Plan) -> list[dict[str, Any]]:
    """What the engine deletes before a delete-before-replace replacement of a resource: its
    dependents whose inputs read the replaced resource's outputs and would be replaced for it,
    transitively (pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:2048-2069, the rule
    :3220-3287 — an edge from dependsOn alone, or an input that updates in place, deletes nothing).
    Judged on the old state's dependencies, as the engine does. One row per such dependent."""
    old = {r.urn: r for r in base.resources if r.custom}
    by_name = {r.name: r for r in old.values()}
    out: list[dict[str, Any]] = []
    for row in rows:
        root = by_name.get(row["name"])
        if row["action"] != "replace" or root is None or not deletes_first(root):
            continue
        replace_set = {root.urn}
        for r in old.values():  # registration order is dependency order
            keys = {k for k, urns in r.property_dependencies.items() if replace_set & set(urns)}
            if r.urn not in replace_set and keys and _replaces_on(r, keys):
                replace_set.add(r.urn)
                out.append({"name": r.name, "type": r.type, "before": root.name, "inputs": sorted(keys)})
    return out


def _ancestors(plan: mockengine.Plan) -> dict[str, set[str]]:
    deps = {r.urn: set(r.dependencies) for r in plan.resources}
    memo: dict[str, set[str]] = {}

    def walk(urn: str) -> set[str]:
        if urn not in memo:
            memo[urn] = set()
            for d in deps.get(urn, ()):
                memo[urn] |= {d} | walk(d)
        return memo[urn]

    for urn in deps:
        walk(urn)
    return memo


def serving_group(r: mockengine.Resource) -> str | None:
    """broker | proxy for what carries client traffic: EC2 hosts by their tags, local containers by
    their role label; None for everything else."""
    if r.type == INSTANCE:
        tags = r.inputs.get("tags") or {}
        return "proxy" if tags.get("Role") == "proxy" else "broker" if "Node" in tags else None
    if r.type == "docker:index/container:Container":
        labels = {la.get("label"): la.get("value") for la in r.inputs.get("labels") or []}
        if labels.get(ROLE_LABEL) in ("broker", "proxy"):
            return labels[ROLE_LABEL]
        mounts = {v.get("containerPath") for v in r.inputs.get("volumes") or []}
        return "broker" if mounts & set(DATA_DIRS.values()) else None  # a plan from before the label
    return None


def disruptions(rows: list[dict[str, Any]], head: mockengine.Plan) -> list[dict[str, Any]]:
    """Rows that take a broker or proxy out while `pulumi up` runs: a replacement, or an update that
    stops and starts the instance. Scale-in deletes are the leave steps' business (delete_order_ok)."""
    new = {r.name: r for r in head.resources if r.custom}
    out = []
    for row in rows:
        r = new.get(row["name"])
        if r is None or serving_group(r) is None:
            continue
        if row["action"] == "replace" or (row["action"] == "update" and set(row["inputs"]) & STOP_START.get(r.type, set())):
            out.append({**row, "group": serving_group(r), "urn": r.urn})
    return out


def concurrent_disruptions(rows: list[dict[str, Any]], head: mockengine.Plan) -> list[tuple[str, str]]:
    """Pairs of brokers (or of proxies) the update could take out at the same time: neither waits
    for the other through the dependency graph. The engine starts a resource's step only once the
    steps of its dependencies are done (the SDK registers it after their URNs resolve: pulumi/pulumi
    v3.259.0 sdk/python/lib/pulumi/runtime/resource.py:190-195, rpc.py:336; resolved when the engine
    answers the registration, resource.py:1223). Rollout commands are not here: they serialise
    themselves at run time (a lock and a health gate, templates/rollout.sh.j2)."""
    hits = disruptions(rows, head)
    before = _ancestors(head)
    pairs = []
    for i, a in enumerate(hits):
        for b in hits[i + 1 :]:
            if a["group"] == b["group"] and a["urn"] not in before[b["urn"]] and b["urn"] not in before[a["urn"]]:
                pairs.append((a["name"], b["name"]))
    return pairs


def render(stack: str, rows: list[dict[str, Any]]) -> str:
    counts = {a: sum(1 for r in rows if r["action"] == a) for a in ("create", "update", "replace", "delete", "forget")}
    mark = {"create": "+", "update": "~", "replace": "+-", "delete": "-", "forget": "-="}
    lines = [f"{stack}: " + ", ".join(f"{n} to {a}" for a, n in counts.items())]
    for r in rows:
        why = f"  ({', '.join(r['forced_by'])})" if r.get("forced_by") else (f"  [{', '.join(r['inputs'])}]" if r["inputs"] else "")
        lines.append(f"  {mark[r['action']]:>2} {r['action']:<7} {r['type']}  {r['name']}{why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.update_view", description=__doc__.splitlines()[0])
    ap.add_argument("stack")
    ap.add_argument("--head-config", type=Path, required=True)
    ap.add_argument("--base-config", type=Path)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        base = mockengine.plan_stack(a.stack, a.base_config)
        head = mockengine.plan_stack(a.stack, a.head_config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    rows = actions(base, head)
    if a.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(a.stack, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
