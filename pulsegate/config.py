"""Typed TOML configuration with ``PULSEGATE_…`` environment overrides.

Each part (gateway, central) describes its settings as nested dataclasses: the
top-level fields are TOML sections, their fields are keys. Every key can also
come from the environment as ``PULSEGATE_<SECTION>_<KEY>`` (upper case), which
wins over the file. Errors name the key, the source and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ConfigError", "load_config", "ENV_PREFIX"]

ENV_PREFIX = "PULSEGATE_"
T = TypeVar("T")

#: Sections that belong to another part; a part's loader skips them, so one
#: file can configure a whole machine (a gateway with its own central in the demo).
SHARED_FILE_SECTIONS = frozenset(
    {"gateway", "uplink", "serial", "metrics", "airpods", "voice", "cues", "control", "bundle",
     "central", "store", "amqp", "cassandra", "ingest", "incidents", "pagerduty", "runbooks",
     "detectors", "alertmanager", "fleet"}
)


class ConfigError(Exception):
    """The configuration is unusable; the message names the key and the fix."""


def load_config(cls: type[T], path: str | Path | None = None, env: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from defaults, then the TOML file at ``path``, then the environment.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown, or a
            value has the wrong type.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing file to --config") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    sections = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in data:
        if name not in sections and name not in SHARED_FILE_SECTIONS:
            raise ConfigError(
                f"unknown section [{name}] in {source}; known sections: {', '.join(sorted(sections))}"
            )
    _check_environment(cls, sections, env)
    # A relative path in a file means "beside this file", wherever the
    # command runs; one from the environment is relative to the working folder.
    base_dir = Path(path).resolve().parent if path is not None else None
    values = {}
    for name, section_field in sections.items():
        section_cls = section_field.type if isinstance(section_field.type, type) else _resolve(cls, name)
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"[{name}] in {source} must be a table, got {type(raw).__name__}")
        values[name] = _build_section(section_cls, name, raw, source, env, base_dir)
    return cls(**values)


#: Variables that share a section's prefix but are not settings: they are read
#: by other tools (the development service script).
_NOT_SETTINGS = frozenset({"PULSEGATE_CASSANDRA_JVM_OPTS"})


def _check_environment(cls: type, sections: dict[str, Any], env: Mapping[str, str]) -> None:
    # A misspelt PULSEGATE_<SECTION>_<KEY> would otherwise be ignored in
    # silence, leaving the default in force.
    for variable in env:
        if not variable.startswith(ENV_PREFIX) or variable in _NOT_SETTINGS:
            continue
        rest = variable[len(ENV_PREFIX):].lower()
        for section in sorted(sections, key=len, reverse=True):
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                known = {f.name for f in dataclasses.fields(_resolve(cls, section))}
                if key not in known:
                    raise ConfigError(
                        f"environment variable {variable} names no setting of [{section}]; "
                        f"known: {', '.join(f'{ENV_PREFIX}{section}_{k}'.upper() for k in sorted(known))}"
                    )
                break


def _resolve(cls: type, name: str) -> type:
    return typing.get_type_hints(cls)[name]


def _build_section(
    cls: type, section: str, raw: dict[str, Any], source: str, env: Mapping[str, str], base_dir: Path | None = None
) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"unknown key {section}.{key} in {source}; known keys in [{section}]: {', '.join(sorted(known))}"
            )
    kwargs = {}
    for key in known:
        env_name = f"{ENV_PREFIX}{section}_{key}".upper()
        if env_name in env:
            kwargs[key] = _coerce(env[env_name], hints[key], f"{section}.{key}", f"environment variable {env_name}", from_env=True)
        elif key in raw:
            kwargs[key] = _coerce(raw[key], hints[key], f"{section}.{key}", source, from_env=False, base_dir=base_dir)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ checks of ranges and combinations
        from_env = [f"{ENV_PREFIX}{section}_{key}".upper() for key in known
                    if f"{ENV_PREFIX}{section}_{key}".upper() in env]
        where = f"{source} with {', '.join(sorted(from_env))} from the environment" if from_env else source
        raise ConfigError(f"[{section}] in {where}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str, source: str, *, from_env: bool, base_dir: Path | None = None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if from_env and value == "" or value is None:
            return None
        return _coerce(value, non_none[0], key, source, from_env=from_env, base_dir=base_dir)
    if origin in (list, tuple) or hint in (list, tuple):
        item = args[0] if args else str
        if from_env:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} from {source} must be a list, got {value!r}")
        items = [_coerce(v, item, key, source, from_env=from_env, base_dir=base_dir) for v in value]
        return tuple(items) if (origin is tuple or hint is tuple) else items
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} from {source} must be a table, got {value!r}")
        return dict(value)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (not from_env and not isinstance(value, int)):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool) or (not from_env and not isinstance(value, (int, float))):
                raise ValueError
            return float(value)
        if hint is str:
            if not from_env and not isinstance(value, str):
                raise ValueError
            return value
        if hint is Path:
            if not isinstance(value, str):
                raise ValueError
            resolved = Path(value).expanduser()
            return base_dir / resolved if base_dir is not None and not resolved.is_absolute() else resolved
    except ValueError:
        raise ConfigError(
            f"{key} from {source} must be {_type_name(hint)}, got {value!r}"
        ) from None
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in a settings class


def _type_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def describe(cls: type) -> list[tuple[str, str, Any]]:
    """List ``(key, environment variable, default)`` for every setting of ``cls``."""
    rows = []
    for section in dataclasses.fields(cls):
        section_cls = _resolve(cls, section.name)
        for f in dataclasses.fields(section_cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            )
            rows.append((f"{section.name}.{f.name}", f"{ENV_PREFIX}{section.name}_{f.name}".upper(), default))
    return rows
