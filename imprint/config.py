"""Stage configs from dataclass defaults, an optional YAML file, and `section.key=value` overrides.

The convention follows torchtune / LLaMA-Factory: `imprint train --config my.yaml --set train.lr=5e-4
--set lora.r=16`. Values are coerced to the field's type; an unknown key or a bad value is a ConfigError that
names it. The resolved config is saved with each artifact.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from imprint.errors import ConfigError


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """`value` as the field's type. Numbers are ASCII and finite: `int('١')` is 1 and `float('nan')` passes every
    `x <= 0` check, so neither may reach a config (a NaN learning rate trains nothing, after data was stored)."""
    if isinstance(value, float) and not math.isfinite(value):  # from YAML: .nan, .inf
        raise ConfigError(f"bad value for {key}: {value} is not a finite number")
    if not isinstance(value, str):
        return value
    kind = (
        kind if isinstance(kind, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(str(kind), str)
    )
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in (int, float) and not value.isascii():
            raise ValueError(value)
        coerced = kind(value)
    except ValueError:
        raise ConfigError(f"bad value for {key}: {value!r} is not a {kind.__name__}") from None
    if isinstance(coerced, float) and not math.isfinite(coerced):
        raise ConfigError(f"bad value for {key}: {value!r} is not a finite number")
    return coerced


def build(cls: type, section: str, values: dict[str, Any]):
    """Instantiate dataclass `cls` from `values`, checking names and types; validation errors become ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting {section}.{unknown[0]}: known are {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(v, fields[k].type, f"{section}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {section} settings: {exc}") from None


def parse_overrides(pairs: list[str] | None, config_file: str | None = None) -> dict[str, dict[str, Any]]:
    """Merge a YAML file ({section: {key: value}}) and `section.key=value` strings into nested dicts."""
    merged: dict[str, dict[str, Any]] = {}
    if config_file:
        import yaml

        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ConfigError(f"config file {config_file} must map sections to settings, e.g. 'train: {{lr: 1e-3}}'")
        for section, values in data.items():
            merged.setdefault(section, {}).update(values)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {pair!r} must look like section.key=value (e.g. train.lr=5e-4)")
        merged.setdefault(section.strip(), {})[name.strip()] = value.strip()
    return merged


def check_sections(overrides: dict[str, dict], allowed: set[str]) -> None:
    extra = sorted(set(overrides) - allowed)
    if extra:
        raise ConfigError(f"unknown config section {extra[0]!r}: this command takes {', '.join(sorted(allowed))}")
