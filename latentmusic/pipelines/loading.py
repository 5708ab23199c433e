"""Loading the pipelines the diffusers way: by their own class, or by `DiffusionPipeline.from_pretrained`.

`DiffusionPipeline.from_pretrained(folder)` reads the pipeline class's name from `model_index.json` and looks it up
in the `diffusers` module. Its only other routes to a class diffusers does not ship run code from the folder
(`custom_pipeline`, `trust_remote_code=True`). So importing latentmusic makes its pipelines visible to diffusers
by that name (`register_with_diffusers`), as a plug-in would be, and a plain `DiffusionPipeline.from_pretrained`
then loads a saved latentmusic pipeline with no extra argument.

`check_pipeline_folder` answers a folder that cannot hold the pipeline asked for (no `model_index.json`, another
pipeline's folder, a component whose subfolder is missing) with what is wrong and how to fix it, before diffusers
fails deep inside loading with a message about a `config.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import diffusers
from diffusers.utils import logging

from ..checkpoints import SHIPPED

logger = logging.get_logger(__name__)


def register_with_diffusers(*pipeline_classes: type) -> None:
    """Make `diffusers.<Name>` (and so `DiffusionPipeline.from_pretrained`) find these pipeline classes.

    Args:
        pipeline_classes: `DiffusionPipeline` subclasses, registered under their class names.
    """
    for cls in pipeline_classes:
        try:
            existing = getattr(diffusers, cls.__name__)
        except AttributeError:
            existing = None
        if existing is not None and existing is not cls:
            # a diffusers release that ships a class of this name keeps it; only our class's own loader finds ours
            logger.warning(f"diffusers already has a {cls.__name__}; DiffusionPipeline.from_pretrained loads that")
            continue
        setattr(diffusers, cls.__name__, cls)


def check_pipeline_folder(
    folder: str | os.PathLike, pipeline_cls: type, passed: set[str] | frozenset = frozenset()
) -> None:
    """Check that a local folder holds a saved `pipeline_cls` whose components are all there.

    Args:
        folder: The folder passed to `from_pretrained`; a Hub-style id (`"org/name"`) that is no local folder is
            left to diffusers.
        pipeline_cls: The class `from_pretrained` was called on.
        passed: Components given to `from_pretrained` directly, which need no subfolder.

    Raises:
        FileNotFoundError: No such folder, no `model_index.json`, or a component's subfolder is missing.
        ValueError: The folder holds another pipeline, or its `model_index.json` is not valid JSON.
    """
    text = os.fspath(folder)
    folder = Path(folder)
    if not folder.is_dir():
        hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not folder.exists()
        if hub_id:
            return
        raise FileNotFoundError(
            f"no pipeline folder at {text!r}; pass a folder written by save_pretrained, "
            f"or a shipped checkpoint's name ({', '.join(sorted(SHIPPED))})"
        )
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(
            f"{folder} has no model_index.json, so it is not a saved pipeline; pass the folder that "
            "save_pretrained wrote (it holds model_index.json and one subfolder per component)"
        )
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{index_file} is not valid JSON ({error}); save the pipeline again") from None
    saved_class = index.get("_class_name")
    expected = set(pipeline_cls._get_signature_keys(pipeline_cls)[0])
    saved = {name for name in index if not name.startswith("_")}
    if saved_class != pipeline_cls.__name__ and saved != expected:
        raise ValueError(
            f"{folder} holds a {saved_class} (components {sorted(saved)}), not a {pipeline_cls.__name__} "
            f"(components {sorted(expected)}); load it with {saved_class}.from_pretrained or "
            "diffusers.DiffusionPipeline.from_pretrained"
        )
    for name, entry in index.items():
        if name.startswith("_") or name in passed or not isinstance(entry, list) or None in entry:
            continue
        subfolder = folder / name
        if not subfolder.is_dir() or not any(subfolder.iterdir()):
            raise FileNotFoundError(
                f"model_index.json in {folder} names the component {name!r} ({entry[1]} from {entry[0]}), but "
                f"{subfolder} is missing or empty; copy the whole folder that save_pretrained wrote, or pass the "
                f"component itself: from_pretrained(..., {name}=...)"
            )
