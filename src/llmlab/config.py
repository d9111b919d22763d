"""Frozen-dataclass configs: defaults < YAML file < `key=value` overrides.

Every command that runs work is configured by one frozen dataclass of primitives
(bool, int, float, str, None, tuples of those, `Literal` choices) and nested
dataclasses for sections (`model.*`, `train.*`, ...). This module turns a YAML
file and dotted overrides into that dataclass and refuses anything it cannot check:

- an unknown key names the key and the closest valid keys;
- a wrong type names the key and the expected type;
- a key given twice in one YAML mapping names the key and its line (PyYAML alone keeps the last);
- a float field refuses inf and nan (`train.lr=.inf` would otherwise fail only at step 2). No
  field takes an infinite value today; one that must would need its own sentinel, not `.inf`;
- cross-field checks live in each dataclass's `__post_init__` (via `check`), so an
  impossible config fails at load time, not deep inside training.

Overrides are parsed as YAML scalars (`train.lr=1e-3`, `tie=false`, `ops=[+,-]`), except
that a `str` field keeps the raw text (`name=007` stays "007"), and a tuple field also
accepts a comma-separated list (`families=arithmetic,reverse`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

from llmlab.errors import ConfigError

T = TypeVar("T")


_REQUIRING = [True]  # False inside `without_required()`


def check(condition: bool, message: str) -> None:
    """Cross-field validation for `__post_init__`: raise a ConfigError unless `condition`."""
    if not condition:
        raise ConfigError(message)


def require(condition: bool, message: str) -> None:
    """A setting the command cannot run without (--model, --tokenizer, --text, ...): a ConfigError unless
    `condition`, except inside `without_required()`."""
    if not condition and _REQUIRING[-1]:
        raise ConfigError(message)


@contextlib.contextmanager
def without_required() -> Iterator[None]:
    """Build configs before their required settings are given: for `--print-config`, which shows every
    setting of a command. Keys, types and every other check still apply."""
    _REQUIRING.append(False)
    try:
        yield
    finally:
        _REQUIRING.pop()


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), *,
                flags: Mapping[str, str | Sequence[str]] | None = None) -> T:
    """Build `cls` from its defaults, then the YAML file at `path`, then `flags`, then `key=value` overrides.

    `flags` maps dotted keys to command-line flag values: a string is read like an override,
    a list (a flag that takes several values) is used as it is.
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    for key, value in (flags or {}).items():
        if isinstance(value, str):
            data = merge(data, parse_overrides([f"{key}={value}"], cls))
        else:
            node: dict[str, Any] = {}
            *sections, leaf = key.split(".")
            cursor = node
            for part in sections:
                cursor = cursor.setdefault(part, {})
            cursor[leaf] = list(value)
            data = merge(data, node)
    data = merge(data, parse_overrides(overrides, cls))
    return from_dict(cls, with_preset(cls, data))


def with_preset(cls: type, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config class with a `PRESETS` table (name -> nested values) takes the named preset's values
    below everything given: `preset=quick seed=3` is the quick preset with seed 3, and a saved
    config.yaml (every value resolved) loads back to itself."""
    presets: Mapping[str, Mapping[str, Any]] | None = getattr(cls, "PRESETS", None)
    name = data.get("preset")
    if not presets or name is None:
        return data
    if name not in presets:
        raise ConfigError(f"preset: unknown preset {name!r}; presets: {', '.join(presets)}")
    return merge(presets[name], data)


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 at byte offset {e.start}") from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values, got {type(data).__name__}")
    return data


@functools.cache
def _unique_key_loader() -> type:
    """A yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last, silently).

    Built on first use so that importing this module does not import yaml.
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            # subtle: check before the merge keys (`<<: *base`) are flattened in, since a key that
            # overrides a merged one is allowed; only keys written twice in this mapping are refused.
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it below
                    continue
                seen.setdefault(key, key_node.start_mark.line)
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def parse_overrides(overrides: Sequence[str], cls: type | None = None) -> dict[str, Any]:
    """`["model.n_layers=4", "train.lr=1e-3"]` -> `{"model": {"n_layers": 4}, "train": {"lr": 0.001}}`.

    With `cls`, a value meant for a `str` field is kept as the raw text.
    """
    import yaml

    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parts = key.split(".")
        value: Any = _raw_text(_field_type(cls, parts), raw) if cls is not None else _PARSE
        if value is _PARSE:
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
        node = nested
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {p!r}")
            node = child
        node[parts[-1]] = value
    return nested


_PARSE = object()  # "read this override as YAML"


def _raw_text(t: Any, raw: str) -> Any:
    """The override's value for text-typed fields, which YAML would mangle (`007`, `on`, `-`); else _PARSE."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is str:
        return raw
    if origin in (Union, types.UnionType) and set(args) == {str, type(None)}:
        return None if raw.strip() in ("null", "~") else raw
    if origin is tuple and args[:1] == (str,) and not raw.lstrip().startswith("["):
        return [v.strip() for v in raw.split(",") if v.strip()]
    return _PARSE


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "", root: type | None = None) -> T:
    """Build the dataclass `cls` from a nested mapping, checking every key and type.

    `root` is the top-level config class when `cls` is a section of it, so that a key
    put in the wrong section is still matched to where it belongs.
    """
    root = root or cls
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _over_section_defaults(data, fields)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(cls, root, prefix, str(key)))
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}", root)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        section = prefix.rstrip(".")
        raise ConfigError(f"{section}: {e}" if section else str(e)) from None


def _over_section_defaults(data: Mapping[str, Any], fields: dict[str, dataclasses.Field]) -> Mapping[str, Any]:
    """A section given in part keeps its parent's defaults for the rest: `model.d_model=128` on a
    config whose `model` defaults to a small preset changes d_model only, not the preset."""
    out = dict(data)
    for name, f in fields.items():
        if isinstance(out.get(name), Mapping):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                out[name] = merge(to_dict(default), out[name])
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def to_yaml(cfg: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, s: str) -> Any:
        # subtle: with allow_unicode PyYAML writes NEL (U+0085) raw, and reads it back as a line break.
        style = '"' if "\x85" in s or "\u2028" in s or "\u2029" in s else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(to_dict(cfg), Dumper=Dumper, sort_keys=False, allow_unicode=True)


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key that `cls` accepts, sections included."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        if _is_dataclass_type(hints[f.name]):
            keys.extend(valid_keys(hints[f.name], f"{name}."))
    return keys


# --------------------------------------------------------------------------- internals


def _unknown_key_message(cls: type, root: type, prefix: str, key: str) -> str:
    full = f"{prefix}{key}"
    names = [f.name for f in dataclasses.fields(cls)]
    elsewhere = [c for c in valid_keys(root) if c.rsplit(".", 1)[-1] == key and c != full]
    close = (elsewhere + [prefix + m for m in difflib.get_close_matches(key, names, n=3, cutoff=0.6)])[:3]
    if not close:  # perhaps a key put in the wrong section: match on the last component
        by_leaf: dict[str, list[str]] = {}
        for c in valid_keys(root):
            by_leaf.setdefault(c.rsplit(".", 1)[-1], []).append(c)
        close = [c for m in difflib.get_close_matches(key, list(by_leaf), n=3, cutoff=0.6) for c in by_leaf[m]][:3]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    section = f" under {prefix.rstrip('.')}" if prefix else ""
    return f"unknown config key '{full}'{hint} (valid keys{section}: {', '.join(names)})"


def _field_type(cls: type, parts: list[str]) -> Any:
    """The annotated type at a dotted path, or None when the path is not a field."""
    t: Any = cls
    for p in parts:
        if not _is_dataclass_type(t):
            return None
        hints = typing.get_type_hints(t)
        if p not in hints:
            return None
        t = hints[p]
    return t


def _is_dataclass_type(t: Any) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(t))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(t)[0])}"
    if t is type(None):
        return "null"
    return getattr(t, "__name__", str(t))


class _NotFinite(ConfigError):
    """inf or nan for a float field: reported as such, not as "expects float or null"."""


def _coerce(value: Any, t: Any, key: str, root: type) -> Any:
    """Check `value` against the annotation `t`; convert only where it loses nothing."""
    origin = typing.get_origin(t)
    if _is_dataclass_type(t):
        return from_dict(t, value if value is not None else {}, prefix=f"{key}.", root=root)
    if origin in (Union, types.UnionType):
        args = typing.get_args(t)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, root)
            except _NotFinite:
                raise
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' expects {_type_name(t)}, got {_describe(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(t)
        if value in choices:
            return value
        raise ConfigError(f"config key '{key}' expects {_type_name(t)}, got {_describe(value)}")
    if origin is tuple:
        (item_t, *_rest) = typing.get_args(t)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects {_type_name(t)}, got {_describe(value)}")
        return tuple(_coerce(v, item_t, f"{key}[{i}]", root) for i, v in enumerate(value))
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif t is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None:
            if not math.isfinite(number):
                raise _NotFinite(f"config key '{key}' must be a finite number, got {value!r}")
            return number
    elif t is str:
        if isinstance(value, str):
            return value
    elif t is Any:
        return value
    else:
        raise TypeError(f"config field '{key}' has an unsupported annotation {t!r}")
    raise ConfigError(f"config key '{key}' expects {_type_name(t)}, got {_describe(value)}")
