"""LoRA adapters for the pipelines: load, save, weight, fuse and unload them as diffusers' LoRA loaders do.

The models take adapters through diffusers' `PeftAdapterMixin` (peft's LoRA layers injected into named
`nn.Linear` / `nn.Conv1d` modules); the pipelines get diffusers' `LoraBaseMixin` for `set_adapters`, `fuse_lora`,
`unfuse_lora`, `unload_lora_weights`, `disable_lora` / `enable_lora` and `delete_adapters`, and this module adds
what is specific to a folder on disk: `load_lora_weights`, `save_lora_weights` and `lora_state_dict`.

The weights file is diffusers' layout: `pytorch_lora_weights.safetensors` with keys
`<component>.<module>.lora_A.weight` / `.lora_B.weight` (`component` is `unet` or `lm`) and the adapter's
`LoraConfig` as JSON in the safetensors header (`lora_adapter_metadata`, keys prefixed the same way). A LoRA is
checked against the model before anything is injected, so one made for another model is refused with the
pipeline left as it was.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE, LoraBaseMixin
from torch import nn

from ..checkpoints import resolve_lora

if TYPE_CHECKING:
    from peft import LoraConfig

# What a LoRA adapts when the caller does not say: the attention projections (queries, keys, values and output of
# self- and cross-attention) of every attention block, as in diffusers' LoRA training scripts. Adding the
# feed-forward layers ("ff.net.0.proj", "ff.net.2" for the U-Net, "ffn.0", "ffn.3" for the LM) or the U-Net's
# convolutions ("conv1", "conv2") is a config change.
DEFAULT_TARGET_MODULES = {
    "UNet1DConditionModel": ("to_q", "to_k", "to_v", "to_out.0"),
    "TokenLM": ("to_q", "to_k", "to_v", "to_out"),
}

_LORA_PARTS = (".lora_A.", ".lora_B.")


def default_target_modules(model: nn.Module) -> list[str]:
    """The module names a LoRA adapts by default in `model` (see `DEFAULT_TARGET_MODULES`).

    Returns:
        The names, as peft's `LoraConfig(target_modules=...)` takes them (a name matches every module ending in it).

    Raises:
        ValueError: If the model's class has no default.
    """
    name = type(model).__name__
    if name not in DEFAULT_TARGET_MODULES:
        raise ValueError(
            f"no default LoRA target modules for {name}; pass target_modules explicitly "
            f"(defaults exist for {', '.join(DEFAULT_TARGET_MODULES)})"
        )
    return list(DEFAULT_TARGET_MODULES[name])


def make_lora_config(
    model: nn.Module,
    rank: int = 8,
    alpha: float | None = None,
    target_modules: Sequence[str] | None = None,
    dropout: float = 0.0,
    init_lora_weights: bool = True,
) -> LoraConfig:
    """A peft `LoraConfig` for `model`, with the target modules checked to exist in it.

    Args:
        model: The U-Net or LM the adapter is for.
        rank: The rank `r` of each low-rank update.
        alpha: `lora_alpha`; the update is scaled by `alpha / rank`. `None` = `rank` (scale 1).
        target_modules: Module names (suffixes) to adapt; `None` or empty = `default_target_modules(model)`.
        dropout: Dropout on the adapter's input in training.
        init_lora_weights: peft's initialisation; `True` starts `lora_B` at zero (the adapter starts as a no-op).

    Returns:
        A `peft.LoraConfig`.

    Raises:
        ValueError: If `rank` is not positive, or a target names no `nn.Linear` / `nn.Conv1d` of the model.
    """
    from peft import LoraConfig  # imported when needed: `import latentmusic` does not pay for peft

    if rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
    targets = list(target_modules) if target_modules else default_target_modules(model)
    adaptable = _adaptable_modules(model)
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in adaptable):
            examples = sorted({name.rsplit(".", 1)[-1] for name in adaptable})
            raise ValueError(
                f"LoRA target module {target!r} matches no nn.Linear or nn.Conv1d of {type(model).__name__}; "
                f"module names end in one of {examples}"
            )
    return LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        target_modules=targets,
        lora_dropout=dropout,
        init_lora_weights=init_lora_weights,
    )


def _adaptable_modules(model: nn.Module) -> list[str]:
    """Names of the `nn.Linear` / `nn.Conv1d` modules of `model`, counting one already adapted by peft as its
    original layer (and not the layers inside the adapter)."""
    names = []
    for name, module in model.named_modules():
        if name.endswith(".base_layer") or ".lora_" in name:
            continue
        if isinstance(getattr(module, "base_layer", module), (nn.Linear, nn.Conv1d)):
            names.append(name)
    return names


def get_lora_layers(model: nn.Module, adapter_name: str = "default") -> tuple[dict[str, torch.Tensor], dict]:
    """The weights and `LoraConfig` (as a dict) of one adapter of `model`, as `save_lora_weights` takes them.

    Returns:
        `(state_dict, metadata)`: keys `<module>.lora_A.weight` / `.lora_B.weight` and the config.

    Raises:
        ValueError: If the model has no adapter of that name.
    """
    from peft.utils import get_peft_model_state_dict

    configs = getattr(model, "peft_config", {})
    if adapter_name not in configs:
        raise ValueError(
            f"{type(model).__name__} has no LoRA adapter named {adapter_name!r}; it has {sorted(configs) or 'none'}"
        )
    state_dict = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {key: value.detach().clone() for key, value in state_dict.items()}, configs[adapter_name].to_dict()


def _module_of(key: str) -> str:
    for part in _LORA_PARTS:
        if part in key:
            return key.split(part)[0]
    raise ValueError(f"{key!r} is not a LoRA weight (its name has no '.lora_A.' or '.lora_B.')")


def check_lora_fits(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, metadata: dict | None = None
) -> None:
    """Raise a `ValueError` unless every LoRA weight names a module of `model` and has its shape, and (with the
    adapter's config) every module the config targets in `model` has weights in the file.

    `lora_A` must take the module's input (`in_features`, or `in_channels` and kernel for a convolution) and `lora_B`
    give its output; both must agree on the rank. Nothing is changed, so a failed check leaves the model as it was
    (diffusers' own loader would leave peft layers behind after a shape error, and would load weights for modules
    the model lacks with only a warning).

    Args:
        model: The U-Net or LM (with or without adapters already).
        state_dict: The adapter's weights, keys relative to the model (no `unet.` prefix).
        source: Where the weights came from, for the message.
        metadata: The adapter's `LoraConfig` as a dict (from the file), if known.
    """
    modules = dict(model.named_modules())
    for key, tensor in state_dict.items():
        name = _module_of(key)
        module = modules.get(name)
        base = getattr(module, "base_layer", module)  # a module already adapted by peft wraps the original
        if not isinstance(base, (nn.Linear, nn.Conv1d)):
            found = "does not exist" if module is None else f"is a {type(base).__name__}"
            raise ValueError(
                f"LoRA {source} does not fit this {type(model).__name__}: weight {key!r} is for module {name!r}, "
                f"which {found} in it (it needs an nn.Linear or nn.Conv1d there). The LoRA was trained on a model "
                "with other blocks; load it into the pipeline it was made for"
            )
        weight = base.weight
        rank_dim = 0 if ".lora_A." in key else 1
        if ".lora_A." in key:
            expected = (tensor.shape[0], *weight.shape[1:])
        else:
            expected = (weight.shape[0], tensor.shape[1], *([1] * (weight.ndim - 2)))
        if key.endswith(".weight") and tuple(tensor.shape) != tuple(expected):
            raise ValueError(
                f"LoRA {source} does not fit this {type(model).__name__}: {key!r} has shape {tuple(tensor.shape)}, "
                f"but module {name!r} (weight {tuple(weight.shape)}) needs {tuple(expected)} for rank "
                f"{tensor.shape[rank_dim]}. The LoRA was trained on a model of another width; load it into the "
                "pipeline it was made for"
            )
    for key, tensor in state_dict.items():
        if ".lora_A." in key and key.endswith(".weight"):
            partner = state_dict.get(key.replace(".lora_A.", ".lora_B."))
            if partner is None or partner.shape[1] != tensor.shape[0]:
                raise ValueError(
                    f"LoRA {source}: {key!r} has rank {tensor.shape[0]} but its lora_B "
                    f"{'is missing' if partner is None else f'has rank {partner.shape[1]}'}; the file is damaged"
                )
    targets = (metadata or {}).get("target_modules")
    if targets:
        in_file = {_module_of(key) for key in state_dict}
        missing = [name for name in _adaptable_modules(model) if _is_target(name, targets) and name not in in_file]
        if missing:
            raise ValueError(
                f"LoRA {source} does not fit this {type(model).__name__}: its config targets {sorted(targets)}, "
                f"which here include {len(missing)} module(s) it has no weights for, such as {missing[0]!r}. The "
                "LoRA was trained on a model with other blocks; load it into the pipeline it was made for"
            )


def _is_target(name: str, targets: str | Sequence[str]) -> bool:
    """Whether peft's `target_modules` (a regular expression, or names a module's name ends in) selects `name`."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == target or name.endswith(f".{target}") for target in targets)


def read_lora_file(path: str | os.PathLike, weight_name: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and metadata of a LoRA safetensors file, or of the one in a folder.

    Args:
        path: A `.safetensors` file or a folder holding `weight_name`.
        weight_name: The file's name in the folder (defaults to `pytorch_lora_weights.safetensors`).

    Returns:
        `(state_dict, metadata)`; the metadata is `{}` when the file has none.

    Raises:
        FileNotFoundError: If there is no such file.
    """
    path = Path(path)
    file = path / (weight_name or LORA_WEIGHT_NAME_SAFE) if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no LoRA weights at {file}: pass the folder save_lora_weights wrote (it holds "
            f"{LORA_WEIGHT_NAME_SAFE}), the .safetensors file itself, or weight_name= for another file name"
        )
    with safetensors.safe_open(str(file), framework="pt") as handle:
        header = handle.metadata() or {}
    metadata = json.loads(header[LORA_ADAPTER_METADATA_KEY]) if LORA_ADAPTER_METADATA_KEY in header else {}
    return safetensors.torch.load_file(str(file)), metadata


def _strip_prefix(mapping: dict, prefix: str) -> dict:
    return {key.removeprefix(f"{prefix}."): value for key, value in mapping.items() if key.startswith(f"{prefix}.")}


class MusicLoraLoaderMixin(LoraBaseMixin):
    """LoRA loading and saving for `LatentMusicPipeline` (adapts the `unet`) and `TokenMusicPipeline` (the `lm`).

    Everything else is diffusers' `LoraBaseMixin`: `set_adapters(names, adapter_weights)`,
    `fuse_lora(lora_scale=...)` / `unfuse_lora()`, `unload_lora_weights()`, `disable_lora()` / `enable_lora()`,
    `delete_adapters(names)`, `get_active_adapters()` and `get_list_adapters()`.

    Examples:

        ```py
        >>> pipe = LatentMusicPipeline.from_pretrained("latentmusic/demo")  # doctest: +SKIP
        >>> pipe.load_lora_weights("outputs/lora-demo/lora", adapter_name="folk")  # doctest: +SKIP
        >>> pipe.set_adapters("folk", adapter_weights=0.5)  # half strength  # doctest: +SKIP
        >>> pipe.fuse_lora()  # no adapter overhead when sampling; unfuse_lora() undoes it  # doctest: +SKIP
        ```
    """

    _lora_loadable_modules: list[str] = []

    @classmethod
    def lora_state_dict(
        cls,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        weight_name: str | None = None,
        return_lora_metadata: bool = False,
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict]:
        """The LoRA weights (and metadata) of a local folder or file, or a state dict given directly.

        Args:
            pretrained_model_name_or_path_or_dict: A folder written by `save_lora_weights`, a `.safetensors`
                file, the name of a shipped adapter (`SHIPPED_LORAS`), or a state dict with
                `<component>.`-prefixed keys.
            weight_name: The file's name inside the folder (defaults to `pytorch_lora_weights.safetensors`).
            return_lora_metadata: Also return the metadata (`{}` for a state dict).

        Returns:
            The state dict, or `(state_dict, metadata)`.

        Raises:
            FileNotFoundError: If there is no such file.
            ValueError: If a key is not a LoRA weight.
        """
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            state_dict, metadata = dict(pretrained_model_name_or_path_or_dict), {}
        else:
            state_dict, metadata = read_lora_file(resolve_lora(pretrained_model_name_or_path_or_dict), weight_name)
        for key in state_dict:
            _module_of(key)
        return (state_dict, metadata) if return_lora_metadata else state_dict

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        weight_name: str | None = None,
    ) -> None:
        """Add a LoRA adapter to the pipeline's model; it is active (with weight 1) after loading.

        Args:
            pretrained_model_name_or_path_or_dict: A folder written by `save_lora_weights` (or the recipe
                `recipes/finetune_lora.py`), a `.safetensors` file, a shipped adapter's name
                (`latentmusic.checkpoints.SHIPPED_LORAS`), or a state dict with prefixed keys.
            adapter_name: Name of the adapter, for `set_adapters` and friends; `None` = peft's next free name
                (`default_0`, `default_1`, ...).
            weight_name: The file's name inside the folder.

        Raises:
            FileNotFoundError: If there is no such file.
            ValueError: If the LoRA holds no weights for this pipeline's model, does not fit it (other module names
                or shapes: a LoRA for another model), or the adapter name is taken. The pipeline is unchanged then.
        """
        state_dict, metadata = self.lora_state_dict(
            pretrained_model_name_or_path_or_dict, weight_name=weight_name, return_lora_metadata=True
        )
        given = pretrained_model_name_or_path_or_dict
        source = "state dict" if isinstance(given, dict) else str(given)
        components = {key.split(".", 1)[0] for key in state_dict}
        loadable = [c for c in self._lora_loadable_modules if c in components]
        if not loadable or components - set(self._lora_loadable_modules):
            raise ValueError(
                f"LoRA {source} has weights for {sorted(components)}, but {type(self).__name__} takes LoRA weights "
                f"only for {self._lora_loadable_modules} (keys such as "
                f"'{self._lora_loadable_modules[0]}.<module>.lora_A.weight'); it was made for another pipeline"
            )
        # check every component before touching any, so a bad file changes nothing
        parts = {c: (_strip_prefix(state_dict, c), _strip_prefix(metadata, c) or None) for c in loadable}
        for component, (weights, component_metadata) in parts.items():
            model = getattr(self, component)
            check_lora_fits(model, weights, source, metadata=component_metadata)
            if adapter_name is not None and adapter_name in getattr(model, "peft_config", {}):
                raise ValueError(
                    f"adapter_name={adapter_name!r} is already loaded in the {component}; pick another name, or "
                    "delete_adapters it first"
                )
        for component, (weights, component_metadata) in parts.items():
            model = getattr(self, component)
            had_adapters = bool(getattr(model, "peft_config", {}))
            try:
                model.load_lora_adapter(
                    weights, prefix=None, adapter_name=adapter_name, metadata=component_metadata, _pipeline=self
                )
            except Exception:
                if not had_adapters and getattr(model, "peft_config", {}):
                    model.unload_lora()  # take out the half-injected layers; the model is as it was
                raise

    @classmethod
    def save_lora_weights(
        cls,
        save_directory: str | os.PathLike,
        unet_lora_layers: dict[str, torch.Tensor] | None = None,
        lm_lora_layers: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        weight_name: str | None = None,
        unet_lora_adapter_metadata: dict | None = None,
        lm_lora_adapter_metadata: dict | None = None,
    ) -> None:
        """Write LoRA weights (and their `LoraConfig`) as `pytorch_lora_weights.safetensors` in a folder.

        Get the layers and metadata of a trained adapter with `get_lora_layers(pipe.unet)` (or `pipe.lm`).

        Args:
            save_directory: The folder (created if missing).
            unet_lora_layers: The U-Net adapter's state dict (for `LatentMusicPipeline`).
            lm_lora_layers: The LM adapter's state dict (for `TokenMusicPipeline`).
            is_main_process: Only the main process writes (in distributed training).
            weight_name: File name (defaults to `pytorch_lora_weights.safetensors`).
            unet_lora_adapter_metadata: The U-Net adapter's `LoraConfig.to_dict()`.
            lm_lora_adapter_metadata: The LM adapter's `LoraConfig.to_dict()`.

        Raises:
            ValueError: If no layers are given, or layers for a model this pipeline does not have.
        """
        given = {
            "unet": (unet_lora_layers, unet_lora_adapter_metadata),
            "lm": (lm_lora_layers, lm_lora_adapter_metadata),
        }
        given = {component: pair for component, pair in given.items() if pair[0]}
        wrong = sorted(set(given) - set(cls._lora_loadable_modules))
        if not given or wrong:
            raise ValueError(
                f"{cls.__name__}.save_lora_weights takes {cls._lora_loadable_modules[0]}_lora_layers "
                f"(got {'nothing' if not given else f'{wrong[0]}_lora_layers'}); pass the adapter's weights from "
                f"get_lora_layers(pipe.{cls._lora_loadable_modules[0]})"
            )
        if not is_main_process:
            return
        cls._save_lora_weights(
            save_directory=save_directory,
            lora_layers={component: layers for component, (layers, _) in given.items()},
            lora_metadata={component: metadata for component, (_, metadata) in given.items()},
            weight_name=weight_name,
        )

    def fuse_lora(
        self,
        components: list[str] | None = None,
        lora_scale: float = 1.0,
        safe_fusing: bool = False,
        adapter_names: list[str] | None = None,
    ) -> None:
        """Merge the active adapters into the model's weights (`unfuse_lora` subtracts them again).

        Args:
            components: Which models (defaults to all the pipeline adapts).
            lora_scale: Strength of the merged update.
            safe_fusing: Refuse to fuse an adapter whose merged weights would hold NaNs.
            adapter_names: Adapters to merge (defaults to the active ones).
        """
        super().fuse_lora(
            components=components or list(self._lora_loadable_modules),
            lora_scale=lora_scale,
            safe_fusing=safe_fusing,
            adapter_names=adapter_names,
        )

    def unfuse_lora(self, components: list[str] | None = None) -> None:
        """Undo `fuse_lora`.

        Args:
            components: Which models (defaults to all the pipeline adapts).
        """
        super().unfuse_lora(components=components or list(self._lora_loadable_modules))
