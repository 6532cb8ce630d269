"""Typed run configs: YAML files under `configs/` loaded into frozen dataclasses.

A schema is a plain `@dataclass` whose fields are typed with str, int, float,
bool, `pathlib.Path`, `X | None`, `Literal[...]`, `list[X]`, `dict[str, X]`,
`tuple[X, ...]` or another dataclass. A field without a default is required.

What it promises:

- Unknown keys, missing keys and wrong types are `ConfigError`s that name the
  file, the line and the dotted key (`stages[2].lr`), with a suggestion for
  misspelt keys and the allowed values of a `Literal`.
- No silent coercion: an int fills a float field, nothing else converts
  (`true` is not an int, `1` is not a string).
- `extends: base.yaml` deep-merges the file over its parent; `${VAR}` and
  `${VAR:-default}` in strings read the environment.
- Relative paths written in a config file are relative to that file's
  directory, not to the working directory, so a config works from
  anywhere: every `Path` field, and every `str` field marked
  `field(metadata={"path": True})` (strings that may also be object-store
  URIs, which pass through untouched). A value that an environment
  variable supplied (`${R1F_STORE}`) was typed in a shell and stays
  relative to the working directory; so do defaults and `config_from_dict`
  values, which come from no file.
- Other strings are never rewritten.
- `config_hash` depends only on the resolved values, so it is stable across
  runs and can be written into lineage. Resolved paths are absolute, so the
  same config file in a checkout at another place hashes differently: the
  hash names what a run read and wrote, locations included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(ValueError):
    """A config that cannot be loaded; the message says where and why."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.line = line


@dataclass(frozen=True)
class _Node:
    """A raw value with the place it came from; mappings and lists hold `_Node`s."""

    value: Any
    file: str | None
    line: int | None
    # Set once `${...}` has been substituted, so a value is never expanded twice
    # and a number read from the environment may fill an int or float field.
    from_env: bool = False
    # The directory relative paths in this value are relative to: the config
    # file's, or None (no file, or an environment variable supplied the text).
    base: str | None = None


def _fail(node: _Node, key: str | None, reason: str) -> ConfigError:
    where = ""
    if node.file is not None:
        where = f"{node.file}:{node.line}: " if node.line is not None else f"{node.file}: "
    what = f"{key}: " if key else ""
    return ConfigError(where + what + reason, path=node.file, key=key or None, line=node.line)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f". Did you mean {close[0]!r}?" if close else ""


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp).replace("typing.", "")


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# --- reading YAML ------------------------------------------------------------


def _from_yaml(node: yaml.Node, loader: yaml.SafeLoader, file: str, line: int | None) -> _Node:
    if isinstance(node, yaml.SequenceNode):
        items = [_from_yaml(n, loader, file, n.start_mark.line + 1) for n in node.value]
        return _Node(items, file, line)
    if not isinstance(node, yaml.MappingNode):
        folder = os.path.dirname(os.path.abspath(file))
        return _Node(loader.construct_object(node), file, line, base=folder)
    entries: dict[str, _Node] = {}
    merged: dict[str, _Node] = {}
    for key_node, value_node in node.value:
        # Errors about a value point at its key: for a nested mapping that is
        # the line a reader looks at, not the line of the mapping's first child.
        key_line = key_node.start_mark.line + 1
        where = _Node(None, file, key_line)
        if key_node.tag == _MERGE_TAG:
            # `<<: *a` or `<<: [*a, *b]`: earlier sources win, the mapping's own keys win over all.
            many = isinstance(value_node, yaml.SequenceNode)
            for source in reversed(value_node.value if many else [value_node]):
                base = _from_yaml(source, loader, file, key_line)
                if not isinstance(base.value, dict):
                    raise _fail(where, "<<", "a merge key takes a mapping or a list of mappings")
                merged.update(base.value)
            continue
        key = loader.construct_object(key_node)
        if not isinstance(key, str):
            raise _fail(where, None, f"keys must be strings, got {_describe(key)}")
        if key in entries:
            raise _fail(where, key, "duplicate key")
        entries[key] = _from_yaml(value_node, loader, file, key_line)
    return _Node({**merged, **entries}, file, line)


def _parse(path: Path) -> _Node:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}", path=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}", path=file) from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if not isinstance(root, yaml.MappingNode):
            line = root.start_mark.line + 1 if root is not None else None
            got = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            got = "an empty file" if root is None else got
            raise _fail(
                _Node(None, file, line), None, f"the top level must be a mapping, got {got}"
            )
        return _from_yaml(root, loader, file, None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"invalid YAML: {exc.problem}"
        # The problem is often only noticed at the end of the file; the context
        # (an unclosed bracket or quote) says where it began.
        if exc.context and exc.context_mark is not None:
            reason += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise _fail(_Node(None, file, line), None, reason) from None
    except yaml.YAMLError as exc:
        raise _fail(_Node(None, file, None), None, f"invalid YAML: {exc}") from None
    except RecursionError:
        # An anchor used inside itself (`a: &x [*x]`) composes to a cyclic graph.
        raise _fail(_Node(None, file, None), None, "invalid YAML: recursive alias") from None
    finally:
        loader.dispose()


def _merge(base: _Node, over: _Node) -> _Node:
    if not (isinstance(base.value, dict) and isinstance(over.value, dict)):
        return over
    merged = dict(base.value)
    for key, child in over.value.items():
        merged[key] = _merge(merged[key], child) if key in merged else child
    return _Node(merged, over.file, over.line)


def _read(path: Path, chain: tuple[Path, ...]) -> _Node:
    node = _parse(path)
    entries = dict(node.value)
    ref = entries.pop("extends", None)
    if ref is None:
        return node
    if not isinstance(ref.value, str) or not ref.value:
        raise _fail(ref, "extends", f"expected a file name, got {_describe(ref.value)}")
    # Relative to the including file, so a config tree can be moved as a whole.
    parent = path.parent / ref.value
    chain = (*chain, path)
    if any(parent.resolve() == seen.resolve() for seen in chain):
        cycle = " -> ".join(str(p) for p in (*chain, parent))
        raise _fail(ref, "extends", f"cycle: {cycle}")
    if not parent.is_file():
        raise _fail(ref, "extends", f"config file not found: {parent}")
    return _merge(_read(parent, chain), _Node(entries, node.file, node.line))


# --- building typed objects --------------------------------------------------


def _interpolate(node: _Node, key: str) -> _Node:
    """The node with `${...}` substituted; relative to the working directory if the
    environment supplied any of it."""
    from_environment = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal from_environment
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        from_environment = from_environment or bool(value)
        # Shell semantics of `:-`: the default also covers a variable set to "".
        if not value and default is not None:
            value = default
        if value is None:
            hint = f"set it or write ${{{name}:-default}}"
            raise _fail(node, key, f"environment variable {name} is not set; {hint}")
        return value

    text: str = node.value
    if "${" in _ENV_REF.sub("", text):
        raise _fail(node, key, f"malformed ${{...}} reference in {text!r}; write ${{NAME}}")
    value = _ENV_REF.sub(substitute, text)
    base = None if from_environment else node.base
    return _Node(value, node.file, node.line, from_env=True, base=base)


def _resolve_path(text: str, node: _Node) -> str:
    """A relative path written in a config file, made relative to that file's directory."""
    if node.base is None or not text or _URI.match(text) or os.path.isabs(text):
        return text
    return os.path.normpath(os.path.join(node.base, os.path.expanduser(text)))


def _scalar(node: _Node, tp: Any, key: str, path: bool = False) -> Any:
    value = node.value
    if node.from_env and tp in (int, float, bool) and isinstance(value, str):
        # The environment only holds text; read it as YAML would have.
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if tp is bool and isinstance(value, bool):
        return value
    # bool is a subclass of int in Python, but `true` for a count is a mistake.
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return _resolve_path(value, node) if path else value
    if tp is Path and isinstance(value, str | PurePath) and str(value):
        return Path(_resolve_path(str(value), node))
    if tp not in (bool, int, float, str, Path):
        raise TypeError(f"{key}: unsupported field type {tp!r} in config schema")
    raise _fail(node, key, f"expected {_type_name(tp)}, got {_describe(value)}")


def _build_dataclass(node: _Node, cls: Any, key: str) -> Any:
    if not isinstance(node.value, dict):
        raise _fail(node, key, f"expected a mapping ({cls.__name__}), got {_describe(node.value)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    for name, child in node.value.items():
        if name not in fields:
            allowed = ", ".join(fields)
            hint = _suggest(name, list(fields))
            raise _fail(child, _join(key, name), f"unknown key; allowed keys: {allowed}{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in node.value:
            path = bool(f.metadata.get("path"))
            kwargs[name] = _build(node.value[name], hints[name], _join(key, name), path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            doc = f.metadata.get("doc")
            reason = f"missing required key ({doc})" if doc else "missing required key"
            raise _fail(node, _join(key, name), reason)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        # A schema's __post_init__ checks get the same file:line as type errors.
        raise _fail(node, key, str(exc)) from exc


def _build(node: _Node, tp: Any, key: str, path: bool = False) -> Any:
    """`path`: the field holds file-system paths (see the module docstring)."""
    if isinstance(node.value, str) and not node.from_env and "${" in node.value:
        node = _interpolate(node, key)
    value, origin, args = node.value, get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _build(node, options[0], key, path)
        for option in options:
            try:
                return _build(node, option, key, path)
            except ConfigError:
                continue
        raise _fail(node, key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        allowed = ", ".join(repr(a) for a in args)
        names = [a for a in args if isinstance(a, str)]
        hint = _suggest(value, names) if isinstance(value, str) else ""
        raise _fail(node, key, f"expected one of {allowed}, got {_describe(value)}{hint}")
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(node, tp, key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _fail(node, key, f"expected a list, got {_describe(value)}")
        if origin is list or args[1:] == (Ellipsis,):
            items = [_build(n, args[0], f"{key}[{i}]", path) for i, n in enumerate(value)]
            return items if origin is list else tuple(items)
        if len(value) != len(args):
            raise _fail(node, key, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(
            _build(n, a, f"{key}[{i}]", path)
            for i, (n, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict and args[0] is str:
        if not isinstance(value, dict):
            raise _fail(node, key, f"expected a mapping, got {_describe(value)}")
        return {k: _build(n, args[1], _join(key, k), path) for k, n in value.items()}
    return _scalar(node, tp, key, path)


def _check_schema(schema: Any) -> None:
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"a config schema must be a dataclass type, got {schema!r}")


# --- public API --------------------------------------------------------------


def load_config(path: str | Path, schema: type[T]) -> T:
    """Read a YAML config file (following `extends`) into an instance of `schema`."""
    _check_schema(schema)
    result: T = _build(_read(Path(path), ()), schema, "")
    return result


def config_from_dict(data: Mapping[str, Any], schema: type[T], *, source: str | None = None) -> T:
    """Build `schema` from an in-memory mapping; `source` names it in errors."""
    _check_schema(schema)

    def wrap(value: Any, key: str) -> _Node:
        if isinstance(value, Mapping):
            for k in value:
                if not isinstance(k, str):
                    raise _fail(_Node(None, source, None), key, f"keys must be strings, got {k!r}")
            return _Node({k: wrap(v, _join(key, k)) for k, v in value.items()}, source, None)
        if isinstance(value, list | tuple):
            return _Node([wrap(v, f"{key}[{i}]") for i, v in enumerate(value)], source, None)
        return _Node(value, source, None)

    result: T = _build(wrap(data, ""), schema, "")
    return result


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: _plain(getattr(value, f.name)) for f in fields if f.init}
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (Paths as str, tuples as lists), keys in field order."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a config dataclass instance, got {cfg!r}")
    result: dict[str, Any] = _plain(cfg)
    return result


def dump_config(cfg: Any) -> str:
    """YAML of the fully resolved config; `load_config` reads it back to an equal object."""
    return yaml.safe_dump(
        config_to_dict(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def config_hash(cfg: Any) -> str:
    """First 16 hex digits of the sha256 of the canonical JSON of the resolved config."""
    canonical = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


_NO_DEFAULT = object()


def _declared_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def _set_fields(cfg: Any) -> dict[str, Any]:
    """The fields of a config dataclass that differ from their declared defaults, as plain
    data; a nested config contributes only its own differing fields."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        default = _declared_default(f)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested = _set_fields(value)
            same_kind = type(default) is type(value)
            # A section present where the default is none, or set apart from a default that
            # is itself set apart from its class's defaults, counts even when empty.
            if not same_kind or nested != _set_fields(default):
                out[f.name] = nested
        elif default is _NO_DEFAULT or _plain(value) != _plain(default):
            out[f.name] = _plain(value)
    return out


def settings_hash(cfg: Any) -> str:
    """First 16 hex digits of the sha256 of the fields that differ from their defaults.

    Unlike `config_hash`, a field added later with a default leaves it as it was, so a cache
    keyed by it (the recipe's toy base) survives new options. What it cannot see is a changed
    default value of an existing field: a cache that must notice one keys by more.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a config dataclass instance, got {cfg!r}")
    canonical = json.dumps(_set_fields(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
