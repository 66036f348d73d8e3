"""Experiment configs: YAML files in ``experiments/`` plus dotted ``key=value`` overrides.

A YAML file may hold, beside the config fields, ``profiles: {name: {dotted.key: value}}``
(e.g. a ``smoke`` profile that shrinks a GPU config to a CPU run; a profile given as a
string names a YAML file of such keys, relative to the config, that several configs
share, and which may start from another such file with ``extends: other.yaml``) and
``sweep:`` (grid axes, read by ``orchestrator.sweep``). Precedence: dataclass defaults <
file < profile < command-line overrides. The resolved config is saved with
every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from viewcoop_core.config import (  # noqa: F401 - re-exported
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    parse_override,
    set_dotted,
)
from viewcoop_core.config_tree import yaml_problem

RESERVED_KEYS = ("profiles", "sweep")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {path} does not exist (configs live in experiments/*.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(path, exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def yaml_error_message(path: Path, exc: yaml.YAMLError) -> str:
    """``<file>:<line>:<column>: <problem>``; a tag that would build a Python object
    (``!!python/...``) is named as refused: safe_load never runs it."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = yaml_problem(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
        return (
            f"{where}: {problem.strip()}; configs hold plain YAML values only, and tags that "
            "build Python objects (!!python/...) are refused (nothing was executed)"
        )
    return f"{where}: invalid YAML: {problem}"


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    profile: str | None = None,
) -> ExperimentConfig:
    """Defaults, then the YAML file, then ``profiles[profile]``, then overrides; validated."""
    raw = read_yaml(path) if path else {}
    tree = {k: v for k, v in raw.items() if k not in RESERVED_KEYS}
    if profile:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            raise ConfigError(f"profile {profile!r} not in {path}; it has {sorted(profiles)}")
        tree = apply_overrides(tree, profile_values(path, profiles[profile]))
    tree = apply_overrides(tree, overrides or [])
    return ExperimentConfig.from_dict(tree)


EXTENDS_KEY = "extends"


def profile_values(config_path: str | Path, profile: dict[str, Any] | str | None) -> dict:
    """A profile's dotted overrides: inline, or read from a file next to the config."""
    if isinstance(profile, str):
        return profile_file_values(Path(config_path).parent / profile)
    return profile or {}


def profile_file_values(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A profile file's dotted overrides. ``extends: other.yaml`` (relative to the file)
    starts from another profile file, whose keys this file's own override."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"profile files extend each other in a loop: {chain}")
    values = read_yaml(path)
    base = values.pop(EXTENDS_KEY, None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {EXTENDS_KEY} must name one profile file, got {base!r}")
    return {**profile_file_values(path.parent / base, (*seen, path)), **values}


def save_resolved(config: ExperimentConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their string form (MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
