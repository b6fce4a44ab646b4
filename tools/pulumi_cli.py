"""The Pulumi CLI the make targets run: ``python -m tools.pulumi_cli [--root DIR]`` prints its path.

The ``pulumi`` on PATH when there is one (the operator's choice). Otherwise the project-local copy
under DIR (default ``.pulumi-cli/``), installed on first use with the SDK's own installer,
``pulumi.automation.PulumiCommand.install(root=DIR, version=<the installed SDK's version>)``:
it runs get.pulumi.com's install script with ``--install-root DIR --version V`` and the CLI lands
in ``DIR/bin/pulumi`` (pulumi/pulumi v3.259.0 sdk/python/lib/pulumi/automation/_cmd.py:71 for the
``root/bin/pulumi`` path, :92-129 for ``install``, :109 for the SDK version as default; the same
lines in the installed 3.272.0). Messages go to stderr, so ``$(python -m tools.pulumi_cli)`` is
just the path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".pulumi-cli"


def sdk_version():
    """The installed Pulumi SDK's version (a semver VersionInfo, what ``install`` takes)."""
    from pulumi.automation._cmd import sdk_version as version

    return version


def _install(root: Path) -> None:
    from pulumi.automation import PulumiCommand

    PulumiCommand.install(root=str(root), version=sdk_version())


def resolve(
    root: Path = DEFAULT_ROOT, which: Callable[[str], str | None] = shutil.which, install: Callable[[Path], None] = _install
) -> str:
    on_path = which("pulumi")
    if on_path:
        return on_path
    local = Path(root) / "bin" / "pulumi"
    if not (local.is_file() and os.access(local, os.X_OK)):
        print(f"the Pulumi CLI is not on PATH: installing {sdk_version()} (the SDK's version) into {root}", file=sys.stderr)
        install(Path(root))
        if not (local.is_file() and os.access(local, os.X_OK)):
            raise SystemExit(f"installing the Pulumi CLI into {root} left no {local}")
    return str(local)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = ap.parse_args(argv)
    print(resolve(args.root.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
