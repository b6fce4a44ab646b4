"""What `pulumi up` would do to a running stack when its config changes, from two offline plans.

    python -m tools.update_view STACK --head-config FILE [--base-config FILE] [--json]

Exit 0; 2 on a config error or an unknown resource type; 3 when the change could take two brokers
(or two proxies) out at the same time or the engine would delete a dependent before a replacement.

Base: the stack file (or --base-config), head: --head-config. Resources are matched by URN; a
changed resource is replaced when a changed input (or a field of it) is one its provider replaces
on, else updated. Those inputs come from tools/replace_facts.py: one cited entry per resource type
the program registers, read from each provider's schema (ForceNew, RequiresReplace) and the Pulumi
bridge over it; a type missing there stops the view. The resource option replaceOnChanges adds its
paths. A resource that reads an output of a replaced resource changes with it, through the inputs
that read it. A replacement deletes first when the resource option, the provider or an explicitly
set auto-named input says so. Dependency-only changes do nothing; ignore_changes inputs are kept;
a removed resource with retain_on_delete is forgotten, not deleted (options from the offline plan).
Secrets are "[secret]".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from components.config import ConfigError
from components.local_cluster import ROLE_LABEL
from tools import mockengine
from tools.plan_diff import diff_inputs
from tools.replace_facts import FACTS, REPLACE_ON

INSTANCE = "aws:ec2/instance:Instance"
# The instance's user data replaces it only with userDataReplaceOnChange (TF-AWS
# ec2/ec2_instance.go:902, :905 in tools/replace_facts.py); without it an update stops and starts it.
USER_DATA = {"userData", "userDataBase64"}


class UnknownResourceType(ValueError):
    """A plan holds a resource type tools/replace_facts.py has no entry for."""


def _check_known(*plans: mockengine.Plan) -> None:
    unknown = sorted({r.type for p in plans for r in p.resources if r.custom} - FACTS.keys())
    if unknown:
        raise UnknownResourceType(
            "no replacement facts for " + ", ".join(unknown) + ": add each type to tools/replace_facts.py, with its source"
        )


def _path(p: str) -> str:
    """An input path without list positions: "ebsBlockDevices[0].volumeSize" -> "ebsBlockDevices.volumeSize"."""
    return re.sub(r"\[(\d+|\*)\]", "", p)


def _touches(entry: str, path: str) -> bool:
    return path == entry or path.startswith(entry + ".")


def replace_entries(r: mockengine.Resource) -> set[str]:
    """The input paths whose change replaces ``r``: its type's facts and its replaceOnChanges option
    (the engine's own: pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:3122-3175)."""
    entries = set(REPLACE_ON[r.type]) | {_path(p) for p in r.options.get("replaceOnChanges", [])}
    if r.type == INSTANCE and not r.inputs.get("userDataReplaceOnChange"):
        entries -= USER_DATA
    return entries


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
    """One row per resource that `pulumi up` would touch: create, update, replace or delete. A
    replacement says whether it deletes first. UnknownResourceType for a type without facts."""
    _check_known(base, head)
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
        ignored = {_path(p) for p in n.options.get("ignoreChanges", [])}  # the engine keeps their old value
        paths = {_path(p) for p, _, _ in diff_inputs(old_in[urn], new_in[urn])}
        paths = {p for p in paths if not any(_touches(i, p) for i in ignored)}
        if not paths:
            continue
        forcing = {e for e in replace_entries(n) if any(_touches(e, p) for p in paths)}
        row = {
            "action": "replace" if forcing else "update",
            "type": n.type,
            "name": n.name,
            "inputs": sorted({p.split(".")[0] for p in paths}),
            "forced_by": sorted(forcing),
        }
        if forcing:
            row["deletes_first"] = deletes_first(n)
        rows.append(row)
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
            ignored = {_path(p) for p in r.options.get("ignoreChanges", [])}  # the engine keeps their old value
            keys = {k for k, urns in r.property_dependencies.items() if replaced & set(urns)} - ignored
            if not keys:
                continue
            # Those inputs take the replacement's new outputs: the resource is replaced when one of
            # them is (or holds) an input its provider replaces on.
            forcing = {k for k in keys if _replaces_on(r, {k})}
            action = "replace" if forcing else "update"
            dep = next(d for k in sorted(forcing or keys) for d in r.property_dependencies[k] if d in replaced)
            cause = f"follows {new[dep].name}"
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
                row["deletes_first"] = deletes_first(r)
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


# Updates that stop and start an EC2 instance: pulumi_aws 7.51.1 ec2/instance.py:99 (instance_type),
# :125-126 (user data without user_data_replace_on_change).
STOP_START = {INSTANCE: {"instanceType", *USER_DATA}}


def deletes_first(r: mockengine.Resource) -> bool:
    """Would a replacement of ``r`` delete it before creating the new one? The resource option
    decides when given (pulumi/pulumi v3.259.0 pkg/resource/deploy/step_generator.go:2044-2047),
    else the provider: always for some types, and for a bridged SDKv2 type when the program sets
    the auto-named input itself (tools/replace_facts.py)."""
    if "deleteBeforeReplace" in r.options:
        return bool(r.options["deleteBeforeReplace"])
    facts = FACTS[r.type]
    return facts.deletes_first or (facts.autoname is not None and facts.autoname in r.inputs)


def _replaces_on(r: mockengine.Resource, keys: set[str]) -> bool:
    """Would the provider replace ``r`` if these inputs became unknown? Any replacing path inside
    one of them counts: which field of it reads the replaced resource is not known."""
    return any(e.split(".")[0] in keys for e in replace_entries(r))


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
        return labels.get(ROLE_LABEL) if labels.get(ROLE_LABEL) in ("broker", "proxy") else None
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
        first = "  deletes first" if r.get("deletes_first") else ""
        lines.append(f"  {mark[r['action']]:>2} {r['action']:<7} {r['type']}  {r['name']}{why}{first}")
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
    try:
        rows = actions(base, head)
    except UnknownResourceType as exc:
        print(str(exc), file=sys.stderr)
        return 2
    findings = {
        "deleted_first": deleted_first(rows, base),
        "concurrent_disruptions": [list(p) for p in concurrent_disruptions(rows, head)],
        "disruptions": [d["name"] for d in disruptions(rows, head)],
    }
    if a.json:
        # the rows as before; the findings on stderr so the JSON contract stays a list
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        json.dump(findings, sys.stderr)
        sys.stderr.write("\n")
    else:
        print(render(a.stack, rows))
        if findings["disruptions"]:
            print("  out of service while it runs, one after another: " + ", ".join(findings["disruptions"]))
        for x in findings["deleted_first"]:
            print(f"  !! {x['name']} is deleted before {x['before']} is replaced (reads {', '.join(x['inputs'])})")
        for one, two in findings["concurrent_disruptions"]:
            print(f"  !! {one} and {two} could be out of service at the same time")
    # 3: the change would take two brokers (or proxies) out together or delete a dependent first
    return 3 if findings["deleted_first"] or findings["concurrent_disruptions"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
