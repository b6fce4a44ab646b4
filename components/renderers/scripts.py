"""The join/leave script: the same text on an EC2 host (over SSH) and on local Docker."""

from __future__ import annotations

from components.renderers import render
from components.renderers.auth import USERS_SCRIPT
from components.renderers.nodes import NodeSpec

CLI_TIMEOUT = 120
"""Seconds any one broker CLI call may take. `emqx ctl` itself never gives up (emqx/emqx v5.8.6
bin/emqx:1332 rpc_infinity); an EMQX join restarts the node's applications, hence two minutes."""
HEALTH_WAIT = 300
"""Seconds the rollout's health gate waits for a restarted broker to be a running member again."""
LEAVE_WAIT = 900
"""Seconds a leave may take: VerneMQ migrates every offline queue first (vernemq/vernemq 2.1.1
apps/vmq_server/src/vmq_server_cli.erl:393-415)."""


def node_script(
    engine: str,
    node: NodeSpec,
    seed: NodeSpec,
    *,
    container: str,
    seed_container: str | None = None,
    local_wait: int = 900,
    join_wait: int = 600,
) -> str:
    """``bash -s -- join|leave`` with this text on stdin. ``container`` names the broker container;
    ``seed_container`` the seed's, where the host running the script can reach it (local Docker):
    then a stopped node is removed from the cluster by the seed instead of only naming the command."""
    return render(
        "node.sh.j2",
        engine=engine,
        self_node=node.node_name,
        seed_node=seed.node_name,
        role=node.role,
        container=container,
        exec_prefix=f"docker exec {container}",
        seed_exec=f"docker exec {seed_container}" if seed_container else "",
        local_wait=local_wait,
        join_wait=join_wait,
        leave_wait=LEAVE_WAIT,
        cli_timeout=CLI_TIMEOUT,
        health_wait=HEALTH_WAIT,
        users_cmd=f"bash {USERS_SCRIPT}",
    )
