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
LOCAL_WAIT = 900
"""Seconds a host's broker may take to answer (first boot: packages, image pull), and a restart or
a users load may take."""
JOIN_WAIT = 600
"""Seconds the seed may take to accept a join and show the membership."""
RETRY_EVERY = 5
"""Seconds between two rounds of any wait in the node script."""


def node_script_bound(*, local_wait: int = LOCAL_WAIT, join_wait: int = JOIN_WAIT) -> int:
    """The longest the node script (templates/node.sh.j2) can run, in seconds: each mode's bounded
    waits, plus the broker CLI calls (each up to CLI_TIMEOUT) and the pause a round can start just
    before its deadline is checked. What a host command's timeout must leave it."""
    cli, pause = CLI_TIMEOUT, RETRY_EVERY
    return max(
        # join: `until alive` (a CLI call a round); then rounds of in_cluster, join, in_cluster,
        # `continue` to in_cluster again and the members of the log line
        local_wait + pause + cli + join_wait + pause + 5 * cli,
        # apply: the bootstrap (bounded by local_wait), the health gate (alive, members, stopped
        # members a round) and the members of its log line
        local_wait + HEALTH_WAIT + pause + 4 * cli,
        # leave (VerneMQ): alive, the leave (bounded by LEAVE_WAIT), rounds of `gone` (alive,
        # members) past its deadline, then docker update and docker stop
        cli + LEAVE_WAIT + pause + 2 * cli + 2 * cli,
        # users: the users script (bounded by local_wait)
        local_wait,
    )


def node_script(
    engine: str,
    node: NodeSpec,
    seed: NodeSpec,
    *,
    container: str,
    seed_container: str | None = None,
    local_wait: int = LOCAL_WAIT,
    join_wait: int = JOIN_WAIT,
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
        retry_every=RETRY_EVERY,
        users_cmd=f"bash {USERS_SCRIPT}",
    )
