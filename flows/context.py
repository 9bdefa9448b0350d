"""``ctx.*`` paths and ``{{ $ctx.… }}`` templates (flows/README.md, "Context and templates")."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
REFERENCE = re.compile(r"\{\{\s*((?:(?!\}\}).)*?)\s*\}\}", re.S)
_INNER = re.compile(
    r"\$ctx\.(?P<path>[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)"
    r"(?P<filters>(?:\s*\|\s*[a-z]+(?::\s*\"[^\"]*\")?)*)\s*$"
)
_FILTER = re.compile(r"\|\s*(?P<name>[a-z]+)(?::\s*\"(?P<arg>[^\"]*)\")?")
FILTERS = ("json", "files", "lines", "default", "text")
_MISSING = object()


class ReferenceError_(ValueError):
    """A template or path that does not resolve (the step fails with this message)."""


def strip(path: str) -> str:
    """``ctx.a.b`` or ``a.b`` → ``a.b``."""
    return path[4:] if path.startswith("ctx.") else path


def check_path(path: str) -> str | None:
    """The problem with a ctx path's syntax, None when it is fine."""
    return None if PATH.fullmatch(strip(path)) else f"bad ctx path {path!r} (use ctx.a.b)"


def check_template(text: str) -> list[str]:
    """The problems of every ``{{ … }}`` in ``text`` (syntax only: values come at run time)."""
    problems = []
    for match in REFERENCE.finditer(text):
        inner = _INNER.match(match.group(1))
        if inner is None:
            problems.append(
                f"bad reference {match.group(0)!r} (use {{{{ $ctx.a.b }}}} with filters {', '.join(FILTERS)})"
            )
            continue
        for f in _FILTER.finditer(inner.group("filters")):
            if f.group("name") not in FILTERS:
                problems.append(
                    f"unknown filter {f.group('name')!r} in {match.group(0)!r} (one of {', '.join(FILTERS)})"
                )
    return problems


def get(ctx: Mapping[str, Any], path: str, default: Any = _MISSING) -> Any:
    value: Any = ctx
    walked = "ctx"
    for part in strip(path).split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            if default is not _MISSING:
                return default
            raise ReferenceError_(f"bad reference ctx.{strip(path)}: {walked} has no {part!r}")
        walked += f".{part}"
    return value


def put(ctx: dict[str, Any], path: str, value: Any) -> None:
    parts = strip(path).split(".")
    node = ctx
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def append(ctx: dict[str, Any], path: str, value: Any) -> None:
    current = get(ctx, path, None)
    items = list(current) if isinstance(current, list) else []
    items.append(value)
    put(ctx, path, items)


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def files_block(value: Any) -> str:
    if not isinstance(value, Mapping):
        raise ReferenceError_("the files filter needs a {path: content} map")
    blocks = []
    for path in sorted(value):
        content = value[path]
        if isinstance(content, Mapping):  # a patch result's {original, patched}
            content = content.get("patched", "")
        text = as_text(content)
        blocks.append(
            f"=== FILE {path} ===\n{text}{'' if text.endswith(chr(10)) else chr(10)}=== END FILE ==="
        )
    return "\n".join(blocks)


def _evaluate(inner: re.Match[str], ctx: Mapping[str, Any]) -> Any:
    filters = [(f.group("name"), f.group("arg")) for f in _FILTER.finditer(inner.group("filters"))]
    default = next((arg for name, arg in filters if name == "default"), None)
    value = get(ctx, inner.group("path"), _MISSING if default is None else default)
    for name, _arg in filters:
        if name == "json":
            value = json.dumps(value, ensure_ascii=False, indent=2)
        elif name == "files":
            value = files_block(value)
        elif name == "lines":
            value = "\n".join(as_text(v) for v in value) if isinstance(value, list) else as_text(value)
        elif name == "text":
            value = as_text(value)
    return value


def render(value: Any, ctx: Mapping[str, Any]) -> Any:
    """``value`` with every template filled in (dicts and lists recursively). A string that is one
    reference only gives the value itself; otherwise values are put into the text."""
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    whole = REFERENCE.fullmatch(value.strip())
    if whole is not None:
        inner = _INNER.match(whole.group(1))
        if inner is None:
            raise ReferenceError_(f"bad reference {whole.group(0)!r}")
        return _evaluate(inner, ctx)

    def fill(match: re.Match[str]) -> str:
        inner = _INNER.match(match.group(1))
        if inner is None:
            raise ReferenceError_(f"bad reference {match.group(0)!r}")
        return as_text(_evaluate(inner, ctx))

    return REFERENCE.sub(fill, value)


def references(value: Any) -> list[str]:
    """Every ctx path the templates in ``value`` read."""
    found: list[str] = []
    if isinstance(value, dict):
        for v in value.values():
            found += references(v)
    elif isinstance(value, list):
        for v in value:
            found += references(v)
    elif isinstance(value, str):
        for match in REFERENCE.finditer(value):
            inner = _INNER.match(match.group(1))
            if inner is not None:
                found.append(inner.group("path"))
    return found
