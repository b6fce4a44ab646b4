"""Stack lists for CI matrices: ``python -m tools.stacks`` prints
{"primary": [...], "regional": [...], "global": [...]} — the order deployments must follow.

``primary``: regional stacks other stacks take their cluster from (brokers.cluster_with); then the
other regional stacks; then the linking (global) stacks. ``local`` runs on a laptop's Docker and is
never previewed or deployed by CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

STACKS_DIR = Path(__file__).resolve().parent.parent / "stacks"


def stacks() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"primary": [], "regional": [], "global": []}
    primaries: set[str] = set()
    for path in sorted(STACKS_DIR.glob("Pulumi.*.yaml")):
        name = path.name[len("Pulumi.") : -len(".yaml")]
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        role = config.get("mqtt-cluster:role", "regional")
        primaries.add(str((config.get("mqtt-cluster:brokers") or {}).get("cluster_with") or ""))
        if role != "local":
            out["global" if role == "global" else "regional"].append(name)
    out["primary"] = [s for s in out["regional"] if s in primaries]
    out["regional"] = [s for s in out["regional"] if s not in primaries]
    return out


if __name__ == "__main__":
    print(json.dumps(stacks()))
