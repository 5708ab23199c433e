"""Checkpoints that ship inside the package, loadable by name like a Hub repository id.

Nothing can be downloaded from a model hub in an offline setting, so the demo models trained on the rendered
corpus (see `docs/model-card.md`) live in this folder, one `save_pretrained` folder each. The pipelines'
`from_pretrained` accepts their names, so ``LatentMusicPipeline.from_pretrained("latentmusic/demo")`` works
right after ``pip install``; any other name or path is passed to diffusers unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
# name -> folder under this package (a pipeline's `save_pretrained` output)
SHIPPED = {
    "latentmusic/demo": "demo",
    "latentmusic/demo-token-lm": "demo-token-lm",
}
DEFAULT_PIPELINE = "latentmusic/demo"
# name -> folder of a LoRA adapter (a `save_lora_weights` folder) for a shipped pipeline, for `load_lora_weights`;
# none ships with demo v4: the guidance-distilled "latentmusic/demo-turbo" was v3's, and distilled again for v4 it
# did not lower the few-step FD (docs/model-card.md)
SHIPPED_LORAS: dict[str, str] = {}


def shipped_path(name: str) -> Path:
    """The folder of a shipped checkpoint.

    Args:
        name: One of :data:`SHIPPED` (e.g. ``"latentmusic/demo"``).

    Returns:
        The folder.

    Raises:
        KeyError: If no checkpoint of that name ships with the package.
        FileNotFoundError: If the package was installed without its checkpoint files.
    """
    if name not in SHIPPED:
        raise KeyError(f"no checkpoint named {name!r} ships with latentmusic; known: {sorted(SHIPPED)}")
    folder = FOLDER / SHIPPED[name]
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the {name!r} checkpoint is missing from {folder}: reinstall latentmusic from a full checkout "
            "(its weights are package data)"
        )
    return folder


def resolve_pretrained(name_or_path: str | os.PathLike) -> str | os.PathLike:
    """A shipped checkpoint's folder for its name (unless a local folder of that name exists); anything else
    unchanged."""
    if isinstance(name_or_path, str) and name_or_path in SHIPPED and not Path(name_or_path).exists():
        return str(shipped_path(name_or_path))
    return name_or_path


def resolve_lora(name_or_path: str | os.PathLike) -> str | os.PathLike:
    """A shipped LoRA's folder for its name (unless a local folder of that name exists); anything else unchanged.

    Args:
        name_or_path: One of :data:`SHIPPED_LORAS`, or a path.

    Returns:
        The folder, or ``name_or_path`` as given.
    """
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_LORAS and not Path(name_or_path).exists():
        return str(FOLDER / SHIPPED_LORAS[name_or_path])
    return name_or_path
