"""Any `transformers` text encoder conditions the pipeline: T5, BERT-like and CLAP's text tower load from local
folders with their weights, and a pipeline built on them generates, listens to its prompt and reloads exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    ClapConfig,
    ClapModel,
    ClapTextConfig,
    ClapTextModel,
    T5Config,
    T5EncoderModel,
)

from latentmusic import LatentMusicPipeline, UNet1DConditionModel
from latentmusic.training.objectives import make_training_scheduler
from latentmusic.training.text_conditioning import load_text_encoder
from latentmusic.training.tokenizer import build_caption_tokenizer

from .conftest import CAPTIONS, perturb_, tiny_vae

WIDTH = 16
TEXT = dict(hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def tiny_encoder(kind: str, vocab_size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """`(saved model, its text encoder)`: they differ only for a whole CLAP model, whose text tower is used."""
    torch.manual_seed(0)
    if kind == "t5":
        model = T5EncoderModel(
            T5Config(vocab_size=vocab_size, d_model=WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
        )
        return model, model
    if kind == "bert":
        model = BertModel(BertConfig(vocab_size=vocab_size, max_position_embeddings=64, **TEXT))
        return model, model
    text = dict(vocab_size=vocab_size, max_position_embeddings=64, projection_dim=8, **TEXT)
    if kind == "clap-text":
        model = ClapTextModel(ClapTextConfig(**text))
        return model, model
    audio = dict(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2],
                 window_size=4, spec_size=64, num_mel_bins=16, projection_dim=8, patch_stride=(4, 4))  # fmt: skip
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8))
    return model, model.text_model


KINDS = ["t5", "bert", "clap-text", "clap"]


@pytest.mark.parametrize("kind", KINDS)
def test_local_encoders_load_with_their_weights(kind, tmp_path):
    tokenizer = build_caption_tokenizer(CAPTIONS, model_max_length=16)
    saved, encoder = tiny_encoder(kind, len(tokenizer))
    saved.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded_tokenizer, loaded = load_text_encoder(tmp_path)
    assert type(loaded) is type(encoder)
    batch = loaded_tokenizer(CAPTIONS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = encoder.eval()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
        got = loaded.eval()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    assert got.shape == (2, batch.input_ids.shape[1], WIDTH)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["bert", "clap"])
def test_a_pipeline_on_another_encoder_follows_its_prompt_and_reloads_exactly(kind, tmp_path):
    tokenizer = build_caption_tokenizer(CAPTIONS, model_max_length=16)
    _, encoder = tiny_encoder(kind, len(tokenizer))
    unet = UNet1DConditionModel(in_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                attention_levels=(False, True), attention_head_dim=8, cross_attention_dim=WIDTH,
                                norm_num_groups=4, max_seconds=2.0)  # fmt: skip
    scheduler = make_training_scheduler("v_prediction")
    pipe = LatentMusicPipeline(vae=tiny_vae().eval(), text_encoder=encoder.eval(), tokenizer=tokenizer,
                               unet=perturb_(unet).eval(), scheduler=scheduler)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)

    def generate(p, prompt):
        return p(
            prompt, audio_length_in_s=0.5, num_inference_steps=3, generator=torch.Generator().manual_seed(0)
        ).audios

    first = generate(pipe, CAPTIONS[0])
    assert np.isfinite(first).all()
    assert not np.allclose(first, generate(pipe, CAPTIONS[1]))  # the prompt reaches the U-Net
    pipe.save_pretrained(tmp_path)
    reloaded = LatentMusicPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.text_encoder) is type(encoder)
    np.testing.assert_array_equal(generate(reloaded, CAPTIONS[0]), first)
