"""Evaluation: reconstruction metrics, Fréchet audio distance, attribute accuracy and CLAP score.

See ``docs/evaluation.md`` for what each metric measures and how to run ``latentmusic evaluate``.
"""

from .attributes import (
    KeyEstimate,
    PitchRange,
    attribute_accuracy,
    estimate_key,
    estimate_note_density,
    estimate_pitch_range,
    estimate_tempo,
)
from .clap import clap_score, clap_similarities
from .cli import evaluate
from .continuity import seam_flux, spectral_flux
from .embeddings import AudioEmbedding, ClapEmbedding, EncodecEmbedding, MusicFeatureEmbedding, make_embedding
from .frechet import EmbeddingStatistics, compute_statistics, frechet_audio_distance, frechet_distance
from .reconstruction import mel_distance, mrstft_distance, reconstruction_metrics, si_sdr
from .scoring import (
    key_relation,
    level_corrected_tempo,
    parse_key,
    shuffled_target_rates,
    spearman,
    tempo_match,
    tempo_summary,
)

__all__ = [
    "AudioEmbedding",
    "ClapEmbedding",
    "EmbeddingStatistics",
    "EncodecEmbedding",
    "KeyEstimate",
    "MusicFeatureEmbedding",
    "PitchRange",
    "attribute_accuracy",
    "clap_score",
    "clap_similarities",
    "compute_statistics",
    "estimate_key",
    "estimate_note_density",
    "estimate_pitch_range",
    "estimate_tempo",
    "evaluate",
    "frechet_audio_distance",
    "frechet_distance",
    "key_relation",
    "level_corrected_tempo",
    "make_embedding",
    "mel_distance",
    "mrstft_distance",
    "parse_key",
    "reconstruction_metrics",
    "seam_flux",
    "shuffled_target_rates",
    "si_sdr",
    "spearman",
    "spectral_flux",
    "tempo_match",
    "tempo_summary",
]
