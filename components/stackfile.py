"""Read a Pulumi stack file (or Pulumi.yaml) the way the Pulumi CLI does: go-yaml v3.

The CLI decodes stack files with gopkg.in/yaml.v3 into ``any``
(# pulumi/pulumi v3.259.0 sdk/go/common/encoding/marshal.go:111-122, sdk/go.mod:34 yaml.v3 v3.0.1).
go-yaml v3 resolves plain scalars by the YAML 1.2 core schema, not YAML 1.1 as PyYAML does:
``on``/``off``/``yes``/``no``/``y``/``n`` stay strings, only ``true``/``True``/``TRUE`` (and false)
are booleans, and duplicate mapping keys are an error. This module is a PyYAML SafeLoader with
go-yaml v3's resolution (# go-yaml/yaml v3.0.1 resolve.go:35-68 the tables, :126-265 resolve()).
No Pulumi imports: tools and components can both read stack files with it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timezone
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"

# go-yaml/yaml v3.0.1 resolve.go:36-45: the first character decides which resolutions are tried.
_HINT = {**dict.fromkeys("+-", "S"), **dict.fromkeys("0123456789", "D"), **dict.fromkeys("yYnNtTfFoO~", "M"), ".": "."}
# go-yaml/yaml v3.0.1 resolve.go:52-59: the only words with a meaning of their own.
_WORDS: dict[str, tuple[str, Any]] = {
    **{w: (_BOOL, True) for w in ("true", "True", "TRUE")},
    **{w: (_BOOL, False) for w in ("false", "False", "FALSE")},
    **{w: (_NULL, None) for w in ("", "~", "null", "Null", "NULL")},
    **{w: (_FLOAT, math.nan) for w in (".nan", ".NaN", ".NAN")},
    **{w: (_FLOAT, math.inf) for w in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{w: (_FLOAT, -math.inf) for w in ("-.inf", "-.Inf", "-.INF")},
    "<<": (_MERGE, "<<"),
}
# go-yaml/yaml v3.0.1 resolve.go:124
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1


class StackFileError(ValueError):
    """What go-yaml (or the CLI reading its result) refuses; ``key`` names the offending key."""

    def __init__(self, message: str, key: str = ""):
        self.key = key
        super().__init__(message)


def _go_parse_int(text: str, *, signed: bool = True) -> int | None:
    """strconv.ParseInt(text, 0, 64) / ParseUint: sign, then 0x / 0o / 0b / leading-0 octal / decimal."""
    sign, body = 1, text
    if body[:1] in ("+", "-"):
        if not signed:
            return None
        sign, body = (-1 if body[0] == "-" else 1), body[1:]
    low = body.lower()
    if low.startswith(("0x", "0o", "0b")):
        base, digits = {"x": 16, "o": 8, "b": 2}[low[1]], body[2:]
    elif body.startswith("0") and len(body) > 1:
        base, digits = 8, body[1:]
    else:
        base, digits = 10, body
    if not digits or any(c not in "0123456789abcdef"[:base] for c in digits.lower()):
        return None
    value = sign * int(digits, base)
    if signed and not _INT64[0] <= value <= _INT64[1]:
        return None
    if not signed and value > _UINT64_MAX:
        return None
    return value


def _go_timestamp(text: str) -> datetime | None:
    """go-yaml/yaml v3.0.1 resolve.go:294-326: YYYY-… in four layouts (no other timestamp forms)."""
    if not re.match(r"\d{4}-", text):
        return None
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt ](\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?)?", text)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, zone = m.groups()
    if h is not None and zone is None and text[10] != " ":
        return None  # "T" layouts need a zone; the space layout has none
    if h is not None and zone is not None and text[10] == " ":
        return None
    try:
        tz = UTC
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            from datetime import timedelta

            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        micro = int((frac or ".0")[1:].ljust(6, "0")[:6])
        return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro, tzinfo=tz)
    except ValueError:
        return None


def _go_time_string(t: datetime) -> str:
    """Go's time.Time.String(), which the CLI stores for a timestamp value
    (# pulumi/pulumi v3.259.0 sdk/go/common/resource/config/object.go:490-491)."""
    base = t.strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        base += f".{t.microsecond:06d}".rstrip("0")
    offset = t.strftime("%z")
    zone = "UTC" if offset == "+0000" else offset
    return f"{base} {offset} {zone}"


def resolve_plain(text: str) -> tuple[str, Any]:
    """(tag, value) of a plain (unquoted) scalar as go-yaml v3 resolves it (resolve.go:126-265)."""
    hint = _HINT.get(text[:1], "N" if text == "" else None)
    if hint is None:
        return _STR, text
    if text in _WORDS:
        return _WORDS[text]
    if hint == "." and "_" not in text:
        try:
            return _FLOAT, float(text)
        except ValueError:
            return _STR, text
    if hint in ("D", "S"):
        stamp = _go_timestamp(text)
        if stamp is not None:
            return _TIMESTAMP, stamp
        plain = text.replace("_", "")
        for signed in (True, False):
            value = _go_parse_int(plain, signed=signed) if plain else None
            if value is not None:
                return _INT, value
        if _YAML_FLOAT.fullmatch(plain):
            return _FLOAT, float(plain)
    return _STR, text


class GoYamlLoader(yaml.SafeLoader):
    """SafeLoader with go-yaml v3's scalar resolution and its duplicate-key refusal."""

    yaml_implicit_resolvers: dict = {}  # noqa: RUF012 - PyYAML's class-level table, emptied on purpose

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return resolve_plain(value)[0]
        return super().resolve(kind, value, implicit)

    def construct_mapping(self, node, deep=False):
        # go-yaml/yaml v3.0.1 decode.go:769-776: two keys of one mapping with the same kind and text.
        seen: dict[tuple[type, str], int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                ident = (type(key_node), key_node.value)
                line = key_node.start_mark.line + 1
                if ident in seen:
                    # A TypeError, which the CLI returns as is (marshal.go:115-118).
                    raise StackFileError(
                        f'yaml: unmarshal errors: line {line}: mapping key "{key_node.value}" already defined at line {seen[ident]}',
                        key=key_node.value,
                    )
                seen[ident] = line
        return super().construct_mapping(node, deep=deep)


def _scalar(loader: GoYamlLoader, node: yaml.ScalarNode) -> Any:
    tag, value = resolve_plain(node.value)
    wanted = node.tag
    if tag == wanted:
        return value
    if wanted == _FLOAT and tag == _INT:
        return float(value)
    short = lambda t: "!!" + t.rsplit(":", 1)[-1]  # noqa: E731
    raise StackFileError(f"invalid YAML file: yaml: cannot decode {short(tag)} `{node.value}` as a {short(wanted)}")


for _tag in (_BOOL, _NULL, _INT, _FLOAT, _TIMESTAMP):
    GoYamlLoader.add_constructor(_tag, _scalar)


def load(text: str) -> Any:
    """The document as go-yaml v3 decodes it into ``any``; raises StackFileError or yaml.YAMLError."""
    try:
        doc = yaml.load(text, Loader=GoYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        raise StackFileError(f"invalid YAML file: yaml: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise StackFileError(f"invalid YAML file: yaml: {exc}") from None
    return _simplify(doc, "")


def _simplify(value: Any, path: str) -> Any:
    """SimplifyMarshalledValue: string keys only (# pulumi/pulumi v3.259.0
    sdk/go/common/workspace/project.go:520-552); timestamps become Go's time string (object.go:490)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StackFileError(f"expected only string keys, got '{k}'", key=f"{path}.{k}" if path else str(k))
            out[k] = _simplify(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, list):
        return [_simplify(v, path) for v in value]
    if isinstance(value, datetime):
        return _go_time_string(value)
    return value
