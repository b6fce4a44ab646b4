"""Pure renderers: model in, file text out. No Pulumi imports here (tests run them directly)."""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,  # a missing value is a bug, never an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # noqa: S701 - config files and shell, not HTML
)


def shq(value: object) -> str:
    """Single-quote a value for POSIX shell."""
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


_env.filters["shq"] = shq


def render(template: str, **values: object) -> str:
    return _env.get_template(template).render(**values)
