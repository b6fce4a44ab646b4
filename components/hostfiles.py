"""Every file the program puts on a host, kept for the offline plan's ``--render DIR``.

Components call :func:`put` with the text (or an Output of it) they hand to cloud-init or a
container; the registry only records, it never creates resources.
"""

from __future__ import annotations

import pulumi

_FILES: dict[tuple[str, str], str] = {}


def put(host: str, name: str, content: pulumi.Input[str]) -> None:
    def keep(text: str) -> None:
        _FILES[(host, name)] = text

    pulumi.Output.from_input(content).apply(keep)


def rendered() -> dict[tuple[str, str], str]:
    return dict(_FILES)


def reset() -> None:
    _FILES.clear()
