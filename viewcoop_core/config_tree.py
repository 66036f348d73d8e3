"""Nested dicts <-> typed config dataclasses: building with field-named errors, and the
dotted ``key=value`` overrides of the command line.

Generic: it knows nothing of the experiment's sections (``viewcoop_core.config``). No
torch import.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config field holds a value outside what it allows."""


REMOVED_FIELDS: dict[str, str] = {
    "model.synthetic_pretrain": "use model.pretrained: synthetic (the tiny CLIP's weights "
    "now ship with the project)",
    "model.synthetic_pretrain_seconds": "remove it: the shipped weights need no pretraining "
    "at run time (viewcoop pretrain-tiny is bounded by steps)",
}
"""Fields of earlier versions -> what to write instead (named in the error)."""


def build_dataclass(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a nested dict, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        hints_for_removed = "".join(
            f"; {prefix + u} was removed: {REMOVED_FIELDS[prefix + u]}"
            for u in unknown
            if prefix + u in REMOVED_FIELDS
        )
        raise ConfigError(
            f"unknown config field(s) {[prefix + u for u in unknown]}; "
            f"{prefix.rstrip('.') or 'the top level'} has {sorted(names)}{hints_for_removed}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # a component's own validation (e.g. SyntheticSpec)
        raise ConfigError(str(exc)) from exc


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, path + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}={value!r} matches none of {hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} must be a list")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be an int")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "5e-5" (no dot) as a string; accept the number it means.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}={value!r} must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}={value!r} must be a string")
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ("train.epochs", 3); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like dotted.key=value (e.g. train.epochs=3)"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    if not raw.strip():
        return key, None
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({yaml_problem(exc)}); quote "
            "strings with spaces or brackets, e.g. graph.tau=[1,2] or name='a b'"
        ) from exc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The one-line gist of a YAML error (PyYAML's message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{context}: {problem}" if context else str(problem)


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for key "a.b", creating nested dicts."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """A copy of ``tree`` with dotted overrides (a mapping or ``key=value`` strings) applied."""
    tree = copy.deepcopy(tree)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(tree, key, value)
    return tree


def _require(ok: bool, field_path: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field_path}={value!r} is not allowed; expected {allowed}")


def _require_choice(value: Any, choices: tuple, field_path: str) -> None:
    _require(value in choices, field_path, value, f"one of {choices}")


def _require_text(value: str, field_path: str) -> None:
    _require(bool(value.strip()), field_path, value, "a non-empty string")
