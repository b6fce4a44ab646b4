"""The join/leave script: the same text on an EC2 host (over SSH) and on local Docker."""

from __future__ import annotations

from components.renderers import render
from components.renderers.nodes import NodeSpec


def node_script(engine: str, node: NodeSpec, seed: NodeSpec, *, container: str, local_wait: int = 900, join_wait: int = 600) -> str:
    """``bash -s -- join|leave`` with this text on stdin. ``container`` names the broker container."""
    return render(
        "node.sh.j2",
        engine=engine,
        self_node=node.node_name,
        seed_node=seed.node_name,
        role=node.role,
        exec_prefix=f"docker exec {container}",
        local_wait=local_wait,
        join_wait=join_wait,
    )
