"""Stack lists for CI matrices: ``python -m tools.stacks`` prints
{"primary": [...], "regional": [...], "global": [...]} — the order deployments must follow.

``primary``: regional stacks other stacks take their cluster from (brokers.cluster_with); then the
other regional stacks; then the linking (global) stacks. ``local`` runs on a laptop's Docker and is
never previewed or deployed by CI.

``python -m tools.stacks --github-output`` prints the same lists as ``KEY=JSON`` lines for
``$GITHUB_OUTPUT``, each with a ``has_KEY=true|false`` flag: a matrix over an empty list fails the
job ("Matrix vector 'stack' does not contain any values"), so the workflows run a matrix job only
when its flag is true.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"
KEYS = ("primary", "regional", "global")


def stacks(stacks_dir: Path = STACKS_DIR) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {k: [] for k in KEYS}
    primaries: set[str] = set()
    for path in sorted(Path(stacks_dir).glob("Pulumi.*.yaml")):
        name = path.name[len("Pulumi.") : -len(".yaml")]
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        role = config.get("mqtt-cluster:role", "regional")
        primaries.add(str((config.get("mqtt-cluster:brokers") or {}).get("cluster_with") or ""))
        if role != "local":
            out["global" if role == "global" else "regional"].append(name)
    out["primary"] = [s for s in out["regional"] if s in primaries]
    out["regional"] = [s for s in out["regional"] if s not in primaries]
    return out


def github_output(lists: dict[str, list[str]]) -> str:
    lines = []
    for key in KEYS:
        lines.append(f"{key}={json.dumps(lists[key], separators=(',', ':'))}")
        lines.append(f"has_{key}={'true' if lists[key] else 'false'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    lists = stacks()
    if argv[1:] == ["--github-output"]:
        sys.stdout.write(github_output(lists))
    elif argv[1:]:
        print("usage: python -m tools.stacks [--github-output]", file=sys.stderr)
        return 2
    else:
        print(json.dumps(lists))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
