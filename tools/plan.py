"""The offline plan: ``python -m tools.plan STACK [--config-file PATH] [--json] [--render DIR]``.

Runs the program under the mock engine with the stack's config and prints what it would register.
Exit 0 on success; exit 2 with one line on stderr for invalid config (including what the Pulumi
CLI refuses before the program runs: tools/cliconfig.py); exit 1 for anything else, e.g. a
duplicate resource URN, which the engine refuses.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from components.config import ConfigError
from tools import mockengine


def _key_inputs(inputs: dict, limit: int = 3) -> str:
    keys = ("cidrBlock", "availabilityZone", "instanceType", "fromPort", "port", "protocol", "name", "create")
    shown = [f"{k}={inputs[k]}" for k in keys if k in inputs and not isinstance(inputs[k], (dict, list))]
    text = " ".join(shown[:limit])
    return text if len(text) <= 60 else text[:57] + "..."


def table(plan: mockengine.Plan) -> str:
    rows = [("TYPE", "NAME", "PARENT", "KEY INPUTS")]
    for r in plan.resources:
        parent = r.parent.split("::")[-1] if r.parent else "-"
        rows.append((r.type, r.name, parent, _key_inputs(r.inputs)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(3)) + "  " + row[3] for row in rows]
    counts = Counter(r.type for r in plan.resources)
    lines.append("")
    lines.append(f"{len(plan.resources)} resources in stack {plan.stack}:")
    lines += [f"  {n:4d}  {t}" for t, n in sorted(counts.items())]
    if plan.outputs:
        lines.append("outputs:")
        lines += [f"  {k} = {json.dumps(v)}" for k, v in sorted(plan.outputs.items())]
    return "\n".join(lines)


def render(plan: mockengine.Plan, out: Path) -> int:
    for (host, name), text in sorted(plan.files.items()):
        target = out / host / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return len(plan.files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.splitlines()[0])
    ap.add_argument("stack")
    ap.add_argument("--config-file", type=Path, help="a stack file to use instead of stacks/Pulumi.STACK.yaml")
    ap.add_argument("--project-file", type=Path, help="a project file to use instead of Pulumi.yaml")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument("--render", type=Path, metavar="DIR", help="write every host file under DIR/<host>/<file>")
    args = ap.parse_args(argv)

    path = args.config_file or mockengine.stack_file(args.stack)
    if not path.exists():
        print(f"{path}: no such stack file", file=sys.stderr)
        return 2
    try:
        plan = mockengine.plan_stack(args.stack, args.config_file, args.project_file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except mockengine.DuplicateUrnError as exc:  # a program defect, not bad input: exit 1
        print(f"{mockengine._source(path)}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the plan reports, it does not crash with a traceback
        msg = str(exc).strip().splitlines()
        print(f"{path}: {msg[0] if msg else type(exc).__name__}", file=sys.stderr)
        return 1
    if args.render:
        n = render(plan, args.render)
        print(f"wrote {n} files under {args.render}", file=sys.stderr)
    if args.json:
        json.dump(plan.as_json(), sys.stdout, indent=1, sort_keys=False)
        sys.stdout.write("\n")
    elif not args.render:
        print(table(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
