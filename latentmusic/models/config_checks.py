"""One place for what every latentmusic model adds to diffusers' `ModelMixin`/`ConfigMixin` loading.

diffusers warns about a config key a model does not take and carries on without it, and Python's own message for
a misspelled constructor argument does not list the right names. A typo in a config (`num_layer: 12`) then builds
a different model than the one asked for, silently. The `strict_config` class decorator turns both into errors that
name the unknown keys, the closest valid name and every valid one, and lets `from_pretrained` take the name of a
checkpoint that ships with the package (`"latentmusic/demo"`, with `subfolder="unet"`) as the pipelines do.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Mapping
from typing import Any, TypeVar

from ..checkpoints import resolve_pretrained

ModelClass = TypeVar("ModelClass", bound=type)


def config_parameters(model_cls: type) -> list[str]:
    """The constructor arguments (the config keys) of a model class.

    Args:
        model_cls: A `ConfigMixin` class decorated with `register_to_config`.

    Returns:
        Their names, in signature order.
    """
    return [name for name in inspect.signature(model_cls.__init__).parameters if name != "self"]


def unknown_keys_message(model_cls: type, unknown: list[str], what: str) -> str:
    """The message for keys `model_cls` does not take: each with its closest valid name, then every valid name.

    Args:
        model_cls: The model class.
        unknown: The keys it does not take.
        what: What they are ("config keys", "arguments").

    Returns:
        The message.
    """
    valid = config_parameters(model_cls)
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return f"{model_cls.__name__} got unknown {what} {', '.join(hints)}; valid ones: {', '.join(valid)}"


def strict_config(model_cls: ModelClass) -> ModelClass:
    """Class decorator: unknown constructor arguments and config keys are errors; shipped names load.

    - `Model(typo=1)` raises `TypeError` naming the closest and all valid arguments.
    - `Model.from_config(config)` and `Model.from_pretrained(folder)` raise `ValueError` for a config key the model
      does not take (keys starting with `_`, diffusers' bookkeeping, are ignored).
    - `Model.from_pretrained("latentmusic/demo", subfolder="unet")` loads the shipped checkpoint's component.
    - A model with an `upgrade_legacy_config(config)` classmethod gets each config through it first, so configs
      saved with renamed keys still load.

    Args:
        model_cls: A `ModelMixin, ConfigMixin` class whose `__init__` is decorated with `register_to_config`.

    Returns:
        The same class, changed in place.
    """
    init = model_cls.__init__
    valid = set(config_parameters(model_cls))

    @functools.wraps(init)
    def checked_init(self, *args: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise TypeError(unknown_keys_message(model_cls, unknown, "arguments"))
        init(self, *args, **kwargs)

    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs: Any):
        upgrade = getattr(model_cls, "upgrade_legacy_config", None)  # a model's one place for old config keys
        if upgrade is not None and isinstance(config, Mapping):
            config = upgrade(config)
        model, unused = super(model_cls, cls).from_config(config, return_unused_kwargs=True, **kwargs)
        unknown = sorted(key for key in unused if not key.startswith("_"))
        if unknown:
            raise ValueError(unknown_keys_message(model_cls, unknown, "config keys"))
        return (model, {}) if return_unused_kwargs else model

    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        return super(model_cls, cls).from_pretrained(resolve_pretrained(pretrained_model_name_or_path), **kwargs)

    from_config.__doc__ = "diffusers' `from_config`; a key the model does not take is an error, not a silent no-op."
    from_pretrained.__doc__ = (
        "diffusers' `ModelMixin.from_pretrained`, which also takes the name of a checkpoint that ships with the "
        'package (`from_pretrained("latentmusic/demo", subfolder="unet")`, see `latentmusic.checkpoints`).'
    )
    model_cls.__init__ = checked_init
    model_cls.from_config = classmethod(from_config)
    model_cls.from_pretrained = classmethod(from_pretrained)
    return model_cls
