"""Readable differences between two offline plans of each stack (base and head of a pull request).

    python -m tools.plan_diff BASE_DIR HEAD_DIR > comment.md

Each directory holds ``<stack>.json`` files written by ``python -m tools.plan STACK --json`` (a
stack that fails to plan may leave ``<stack>.err`` instead). Resources are matched by URN; inputs
are compared key by key. Secrets are "[secret]" in both plans, so a changed secret shows as
unchanged and its value never appears.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MAX_VALUE = 80
MAX_LINES_PER_STACK = 60


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def diff_inputs(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(path, old, new) for every input that differs; a missing side is None."""
    a, b = _flatten(before), _flatten(after)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def diff_plans(base: dict[str, Any] | None, head: dict[str, Any] | None) -> dict[str, Any]:
    """Added, removed and changed resources (by URN) and changed outputs between two plans."""
    old = {r["urn"]: r for r in (base or {}).get("resources", [])}
    new = {r["urn"]: r for r in (head or {}).get("resources", [])}
    changed = []
    for urn in sorted(set(old) & set(new)):
        inputs = diff_inputs(old[urn]["inputs"], new[urn]["inputs"])
        deps = sorted(set(old[urn].get("dependencies", [])) ^ set(new[urn].get("dependencies", [])))
        # Resource options (ignoreChanges, deleteBeforeReplace, protect …) decide what an update does.
        options = diff_inputs(old[urn].get("options", {}), new[urn].get("options", {}))
        if inputs or deps or options:
            changed.append(
                {"urn": urn, "type": new[urn]["type"], "name": new[urn]["name"], "inputs": inputs, "dependencies": deps, "options": options}
            )
    return {
        "added": [{"urn": u, "type": new[u]["type"], "name": new[u]["name"]} for u in sorted(set(new) - set(old))],
        "removed": [{"urn": u, "type": old[u]["type"], "name": old[u]["name"]} for u in sorted(set(old) - set(new))],
        "changed": changed,
        "outputs": diff_inputs((base or {}).get("outputs", {}), (head or {}).get("outputs", {})),
    }


def render_stack(stack: str, d: dict[str, Any]) -> str:
    counts = f"+{len(d['added'])} added, -{len(d['removed'])} removed, ~{len(d['changed'])} changed"
    if not (d["added"] or d["removed"] or d["changed"] or d["outputs"]):
        return f"<details><summary><b>{stack}</b>: no changes</summary></details>\n"
    lines = [f"<details open><summary><b>{stack}</b>: {counts}</summary>", "", "```diff"]
    lines += [f"+ {r['type']}  {r['name']}" for r in d["added"]]
    lines += [f"- {r['type']}  {r['name']}" for r in d["removed"]]
    for r in d["changed"]:
        lines.append(f"~ {r['type']}  {r['name']}")
        lines += [f"    {path}: {_show(a)} → {_show(b)}" for path, a, b in r["inputs"]]
        lines += [f"    option {path}: {_show(a)} → {_show(b)}" for path, a, b in r.get("options", [])]
        if r["dependencies"]:
            lines.append(f"    dependencies changed: {len(r['dependencies'])}")
    lines += [f"~ output {path}: {_show(a)} → {_show(b)}" for path, a, b in d["outputs"]]
    if len(lines) > MAX_LINES_PER_STACK + 3:
        hidden = len(lines) - MAX_LINES_PER_STACK - 3
        lines = lines[: MAX_LINES_PER_STACK + 3] + [f"… {hidden} more lines (run the offline plan locally)"]
    lines += ["```", "</details>", ""]
    return "\n".join(lines)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def report(base_dir: Path, head_dir: Path) -> str:
    stacks = sorted({p.stem for d in (base_dir, head_dir) for p in d.glob("*.json")} | {p.stem for p in head_dir.glob("*.err")})
    parts = [
        "## Offline plan diff",
        "",
        "Resources and inputs per stack, base → head, from `python -m tools.plan STACK --json` "
        "(no cloud credentials; secrets shown as `[secret]`).",
        "",
    ]
    for stack in stacks:
        err = head_dir / f"{stack}.err"
        if err.exists():
            parts.append(f"**{stack}**: the head does not plan: `{err.read_text().strip()[:300]}`\n")
            continue
        base, head = _load(base_dir / f"{stack}.json"), _load(head_dir / f"{stack}.json")
        label = stack if base is not None else f"{stack} (new stack)"
        if head is None:
            label = f"{stack} (stack removed)"
        parts.append(render_stack(label, diff_plans(base, head)))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.plan_diff", description=__doc__.split("\n\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("head", type=Path)
    a = ap.parse_args(argv)
    sys.stdout.write(report(a.base, a.head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
