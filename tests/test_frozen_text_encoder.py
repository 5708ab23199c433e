"""The diffusion recipe on a pretrained BERT-like text encoder from a local folder (as all-MiniLM-L6-v2 is used in
benchmarks/text_encoders.py): frozen with `text_encoder.train=false`, it ships bit for bit as it was loaded,
with its own tokenizer, while the U-Net trains on its hidden states; with `train=true` the same run changes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import BertConfig, BertModel, BertTokenizer, ClapConfig, GPT2Config, T5Config

from latentmusic import LatentMusicPipeline
from latentmusic.training import diffusion
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainer, DiffusionTrainingConfig
from latentmusic.training.text_conditioning import TextEncoderConfig, check_prompt_length

from .conftest import CAPTIONS, tiny_vae

SAMPLE_RATE = 8000


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A BERT folder (random weights, a word-piece vocabulary of the captions), a tiny autoencoder and a folder of
    captioned tones (one pitch per caption, so the text says something about the audio)."""
    root = tmp_path_factory.mktemp("frozen-text")
    words = sorted({word for caption in CAPTIONS for word in caption.lower().replace(",", " ").split()})
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *words])}
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))  # fmt: skip
    bert.save_pretrained(root / "bert")
    BertTokenizer(vocab=vocab).save_pretrained(root / "bert")
    tiny_vae().save_pretrained(root / "vae")
    data = root / "data"
    data.mkdir()
    records, t = [], np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for i in range(12):
        kind = i % len(CAPTIONS)
        sf.write(data / f"clip{i}.wav", 0.5 * np.sin(2 * np.pi * 220 * (1 + kind) * t), SAMPLE_RATE)
        records.append(
            {"path": f"clip{i}.wav", "split": "valid" if i >= 10 else "train", "captions": [CAPTIONS[kind]]}
        )
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.mark.parametrize("train", [False, True])
def test_a_local_bert_encoder_stays_frozen_unless_trained(folders, tmp_path, train):
    overrides = [f"vae={folders / 'vae'}", f"data.root={folders / 'data'}", f"run.output_dir={tmp_path}",
                 f"text_encoder.pretrained={folders / 'bert'}", f"text_encoder.train={str(train).lower()}",
                 "text_encoder.max_length=16", "data.segment_seconds=0.5", "data.batch_size=4",
                 "data.caption_dropout=0", "optim.lr=1e-2", "optim.warmup_steps=0", "run.max_steps=3",
                 "run.eval_every=3", "run.sample_every=0", "run.report_to=none", "run.progress_bar=false",
                 "unet.block_out_channels=[8,16]", "unet.attention_head_dim=8", "unet.norm_num_groups=4"]  # fmt: skip
    trainer = DiffusionTrainer(load_config(DiffusionTrainingConfig, "recipes/configs/diffusion/tiny.yaml", overrides))
    folder = trainer.fit()

    # frozen: no gradients, eval mode (BERT's dropout off, so a prompt always encodes the same), not optimised
    encoder = trainer.unwrap(trainer.text_encoder)
    assert all(p.requires_grad == train for p in encoder.parameters())
    assert encoder.training == train
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert any(id(p) in optimised for p in encoder.parameters()) == train

    pipe = LatentMusicPipeline.from_pretrained(folder)
    assert isinstance(pipe.text_encoder, BertModel) and isinstance(pipe.tokenizer, BertTokenizer)
    assert pipe.tokenizer.get_vocab() == BertTokenizer.from_pretrained(folders / "bert").get_vocab()
    assert pipe.unet.config.cross_attention_dim == 16  # the U-Net attends to BERT's hidden states
    original = BertModel.from_pretrained(folders / "bert").state_dict()
    changed = [
        name for name, value in pipe.text_encoder.state_dict().items() if not torch.equal(value, original[name])
    ]
    # three AdamW steps at lr 1e-2 move every trained weight that gets a gradient; a frozen encoder ships as loaded
    assert (len(changed) > 0) == train, changed
    rows = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["valid_loss"])


def test_a_prompt_length_the_pretrained_encoder_cannot_read_is_refused_before_the_latent_cache(
    folders, tmp_path, monkeypatch
):
    encoded = []
    monkeypatch.setattr(diffusion, "encode_latent_cache", lambda *args, **kwargs: encoded.append(args))
    output_dir = tmp_path / "run"
    overrides = [f"vae={folders / 'vae'}", f"data.root={folders / 'data'}", f"run.output_dir={output_dir}",
                 f"text_encoder.pretrained={folders / 'bert'}", "text_encoder.max_length=64"]  # fmt: skip
    config = load_config(DiffusionTrainingConfig, "recipes/configs/diffusion/tiny.yaml", overrides)
    with pytest.raises(ValueError, match=r"max_length=64 is longer .* \(32 positions\).*max_length<=32"):
        DiffusionTrainer(config)  # at construction, not after minutes of encoding nor deep inside BERT
    assert encoded == [] and not output_dir.exists()


@pytest.mark.parametrize(
    "model_config, limit",
    [
        (GPT2Config(n_positions=24, n_layer=1, n_embd=8, n_head=2), 24),
        (ClapConfig(text_config={"max_position_embeddings": 20}), 20),
    ],
)
def test_the_prompt_length_check_reads_each_config_s_position_table(tmp_path, model_config, limit):
    model_config.save_pretrained(tmp_path)
    check_prompt_length(TextEncoderConfig(pretrained=str(tmp_path), max_length=limit))  # the limit itself is fine
    with pytest.raises(ValueError, match=rf"max_length={limit + 1} is longer .* \({limit} positions\)"):
        check_prompt_length(TextEncoderConfig(pretrained=str(tmp_path), max_length=limit + 1))


def test_an_encoder_with_relative_positions_takes_any_prompt_length(tmp_path):
    T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    check_prompt_length(TextEncoderConfig(pretrained=str(tmp_path), max_length=100_000))
