"""Pictures and sounds that people look at during training: spectrograms, audio samples, loss curves.

Everything is written to the run's folder (PNG and FLAC, so it can be read without TensorBoard) and,
when a TensorBoard tracker is active, logged there too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from ..audio import mel_spectrogram, save_audio  # noqa: E402


def spectrogram_figure(audios: Mapping[str, torch.Tensor], sample_rate: int, title: str = "") -> plt.Figure:
    """Stack log-mel spectrograms of several clips (e.g. "input" and "reconstruction") in one figure.

    Args:
        audios: Name → audio of shape `(samples,)` or `(channels, samples)`; the first channel is shown.
        sample_rate: Sample rate of all clips.
        title: Figure title.

    Returns:
        The matplotlib figure (close it with `plt.close(fig)` when done).
    """
    fig, axes = plt.subplots(len(audios), 1, figsize=(8, 2.2 * len(audios)), squeeze=False)
    for ax, (name, audio) in zip(axes[:, 0], audios.items()):
        mel = mel_spectrogram(audio.detach().float().cpu(), sample_rate)[0]
        seconds = audio.shape[-1] / sample_rate
        ax.imshow(mel.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[0]), cmap="magma")
        ax.set_ylabel(f"{name}\nmel bin")
    axes[-1, 0].set_xlabel("seconds")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def log_audio_samples(
    accelerator: Accelerator,
    step: int,
    audios: Mapping[str, torch.Tensor],
    sample_rate: int,
    out_dir: str | Path,
    tag: str = "samples",
) -> Path:
    """Save clips as FLAC and their spectrograms as one PNG, and log both to TensorBoard if active.

    Returns:
        The path of the PNG.
    """
    folder = Path(out_dir) / tag / f"step-{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in audios.items():
        save_audio(folder / f"{name}.flac", audio.detach().float().cpu().clamp(-1, 1), sample_rate)
    fig = spectrogram_figure(audios, sample_rate, title=f"{tag} at step {step}")
    png = folder / "spectrograms.png"
    fig.savefig(png, dpi=100)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_figure(tag, fig, global_step=step)
            for name, audio in audios.items():
                mono = audio.detach().float().cpu().reshape(-1, audio.shape[-1])[0]
                tracker.writer.add_audio(f"{tag}/{name}", mono.clamp(-1, 1), step, sample_rate=sample_rate)
    plt.close(fig)
    return png


class LossHistory:
    """Keeps logged scalars in a JSON-lines file and plots them as loss curves."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, step: int, values: Mapping[str, float]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")

    def read(self) -> list[dict[str, float]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop entries logged after `step` (a resumed run re-logs them)."""
        kept = [row for row in self.read() if row["step"] <= step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def plot(self, png: str | Path, keys: list[str] | None = None) -> Path:
        """Plot each key against the step on a log scale; returns the PNG path."""
        rows = self.read()
        keys = keys or sorted({k for row in rows for k in row if k != "step"})
        fig, ax = plt.subplots(figsize=(8, 4))
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if key in row and row[key] > 0]
            if points:
                ax.plot(*zip(*points), label=key)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
        return Path(png)
