"""Recipe configuration: a typed schema in the package, YAML files on top, `key=value` overrides last.

Each recipe declares its configuration as dataclasses (the schema documents every key). A YAML file
only states what differs from the schema's defaults, and command-line overrides in OmegaConf's dotted
form (`optim.lr=3e-4 data.segment_seconds=2`) come last. A key the schema does not know is an error
that names the key and lists the valid ones, never a silently ignored typo.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError


def _valid_keys(schema: DictConfig, dotted_key: str) -> list[str]:
    node: Any = schema
    for part in dotted_key.split(".")[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            break
        node = node[part]
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _merge(schema: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, other)
    except (ConfigKeyError, ConfigAttributeError) as error:
        key = getattr(error, "full_key", None) or str(error)
        raise ValueError(
            f"{source}: unknown config key {key!r}. Valid keys here: {', '.join(_valid_keys(schema, key))}. "
            "Check the spelling, or see the recipe's config schema for what each key does."
        ) from None
    except ValidationError as error:
        key = getattr(error, "full_key", "?")
        raise ValueError(f"{source}: invalid value for {key!r}: {str(error.msg).splitlines()[0]}") from None


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Turn `["a.b=1", "c=x"]` into a config, rejecting anything that is not `key=value`."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ValueError(f"override {item!r} is not of the form key=value (for example optim.lr=1e-4)")
    return OmegaConf.from_dotlist(list(overrides))


def load_config(schema: type, path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Build a recipe configuration.

    Args:
        schema: The recipe's dataclass; its defaults are the base layer and its fields the valid keys.
        path: Optional YAML file whose values override the defaults.
        overrides: `key=value` strings applied last (OmegaConf dotted keys).

    Returns:
        A read-only `DictConfig` with every key of the schema.

    Raises:
        FileNotFoundError: The YAML file does not exist.
        ValueError: A key is unknown, a value has the wrong type, or an override is malformed.
    """
    config = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        config = _merge(config, OmegaConf.load(path), str(path))
    if overrides:
        config = _merge(config, parse_overrides(overrides), "command-line override")
    OmegaConf.set_readonly(config, True)
    return config


def save_config(config: DictConfig, path: str | Path) -> None:
    """Write the resolved configuration next to a run's outputs, so the run can be reproduced."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(config, resolve=True))


def run_recipe(
    schema: type, train: Callable[[DictConfig], Any], description: str, argv: Sequence[str] | None = None
) -> Any:
    """The command line every recipe shares: `--config file.yaml` then `key=value` overrides.

    Args:
        schema: The recipe's configuration dataclass.
        train: The training function, called with the merged configuration.
        description: Shown by `--help` (the recipe's docstring).
        argv: Arguments (defaults to `sys.argv[1:]`).

    Returns:
        Whatever `train` returns.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with the values that differ from the schema's defaults")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 run.max_steps=500")
    args = parser.parse_args(argv)
    try:
        config = load_config(schema, args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return train(config)
