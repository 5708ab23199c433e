"""TokenLM (causality, text masking, KV cache, sampling, CFG, prefixes) and the RVQ codec its tokens come from."""

from __future__ import annotations

import pytest
import torch

from latentmusic import AudioAutoencoder, TokenLM
from latentmusic.models.codebook_patterns import PATTERNS
from latentmusic.models.token_lm import sample_tokens
from latentmusic.pipelines.common import PromptEmbeddings
from latentmusic.training.token_lm import masked_lm_loss

from .conftest import tiny_vae
from .test_autoencoder import tone

K, SIZE, WIDTH = 3, 16, 16


def tiny_lm(pattern: str = "delay", seed: int = 0) -> TokenLM:
    torch.manual_seed(seed)
    config = dict(num_codebooks=K, codebook_size=SIZE, hidden_size=32, num_layers=2, num_heads=4, ffn_dim=64)
    return TokenLM(pattern=pattern, cross_attention_dim=WIDTH, **config).eval()


def text(rows: int = 2, tokens: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.randn(rows, tokens, WIDTH, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(rows, tokens, dtype=torch.long)
    mask[:, 3:] = 0
    return hidden, mask


def generate(lm, seed=0, **kwargs):
    hidden, mask = text(kwargs.pop("rows", 2))
    kwargs.setdefault("num_frames", 6)
    return lm.generate(hidden, encoder_attention_mask=mask, generator=torch.Generator().manual_seed(seed), **kwargs)


# -- the model ------------------------------------------------------------------------------------------


def test_logits_shape_and_causality():
    lm = tiny_lm()
    hidden, mask = text()
    tokens = torch.randint(0, SIZE + 1, (2, K, 7), generator=torch.Generator().manual_seed(1))
    logits = lm(tokens, hidden, mask).logits
    assert logits.shape == (2, K, 7, SIZE)
    changed = tokens.clone()
    changed[..., 4] = (changed[..., 4] + 1) % SIZE
    after = lm(changed, hidden, mask).logits
    torch.testing.assert_close(after[:, :, :4], logits[:, :, :4])  # earlier steps do not see step 4
    assert not torch.allclose(after[:, :, 4:], logits[:, :, 4:])


def test_a_target_never_reaches_its_own_logits():
    """The loss input is the sequence shifted right: editing step s of the sequence leaves the logits of steps <= s."""
    lm = tiny_lm()
    hidden, mask = text()
    sequence = lm.pattern.build(torch.randint(0, SIZE, (2, K, 5)), lm.special_token)
    logits = lm(lm.shift_right(sequence), hidden, mask).logits
    sequence[..., 3] = (sequence[..., 3] + 1) % SIZE
    edited = lm(lm.shift_right(sequence), hidden, mask).logits
    torch.testing.assert_close(edited[:, :, :4], logits[:, :, :4])


def test_padded_text_tokens_are_ignored():
    lm = tiny_lm()
    hidden, mask = text()
    tokens = torch.randint(0, SIZE, (2, K, 4))
    noisy = hidden.clone()
    noisy[:, 3:] += 5.0  # only padding positions change
    torch.testing.assert_close(lm(tokens, noisy, mask).logits, lm(tokens, hidden, mask).logits)
    assert not torch.allclose(lm(tokens, noisy).logits, lm(tokens, hidden).logits)


def test_cached_forward_matches_the_full_forward():
    lm = tiny_lm()
    hidden, mask = text()
    tokens = torch.randint(0, SIZE + 1, (2, K, 6))
    full = lm(tokens, hidden, mask).logits
    first = lm(tokens[..., :3], hidden, mask, use_cache=True)
    rest = lm(tokens[..., 3:], cache=first.cache, use_cache=True)  # several new steps after cached ones
    assert rest.cache.length == 6
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=2), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_training_loss_is_a_finite_cross_entropy_over_real_frames_and_trains(pattern):
    lm = tiny_lm(pattern).train()
    hidden, mask = text()
    codes = torch.randint(0, SIZE, (2, K, 5), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-2)
    text_embeds = PromptEmbeddings(hidden, mask)
    frames = torch.ones(2, 5, dtype=torch.bool)
    losses = []
    for _ in range(15):
        loss = masked_lm_loss(lm, codes, frames, text_embeds)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert abs(losses[0] - torch.log(torch.tensor(float(SIZE))).item()) < 1.5
    assert losses[-1] < 0.5 * losses[0]
    # frames marked as padding are not predicted: the last codebook's codes there (which, in every pattern, only
    # later padded positions see) do not change the loss
    frames[1, 3:] = False
    changed = codes.clone()
    changed[1, -1, 3:] = (changed[1, -1, 3:] + 1) % SIZE
    lm.eval()
    with torch.no_grad():
        padded = masked_lm_loss(lm, codes, frames, text_embeds)
        torch.testing.assert_close(masked_lm_loss(lm, changed, frames, text_embeds), padded)
        assert not torch.allclose(masked_lm_loss(lm, changed, torch.ones_like(frames), text_embeds), padded)


def test_save_and_load_give_identical_logits(tmp_path):
    lm = tiny_lm("flatten")
    lm.save_pretrained(tmp_path)
    loaded = TokenLM.from_pretrained(tmp_path).eval()
    assert loaded.config.pattern == "flatten"
    hidden, mask = text()
    tokens = torch.randint(0, SIZE, (2, K, 4))
    assert torch.equal(lm(tokens, hidden, mask).logits, loaded(tokens, hidden, mask).logits)


def test_bad_configs_are_answered_clearly():
    with pytest.raises(ValueError, match="unknown codebook pattern"):
        TokenLM(pattern="zigzag")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TokenLM(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match=r"shape \(batch, 3, steps\)"):
        tiny_lm()(torch.zeros(1, 2, 3, dtype=torch.long), text()[0])


# -- generation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_kv_cached_generation_gives_the_uncached_tokens(pattern, guidance_scale):
    lm = tiny_lm(pattern)
    rows = 4 if guidance_scale > 1 else 2
    cached = generate(lm, rows=rows, guidance_scale=guidance_scale, use_cache=True)
    uncached = generate(lm, rows=rows, guidance_scale=guidance_scale, use_cache=False)
    assert cached.shape == (2, K, 6) and cached.dtype == torch.long
    assert cached.min() >= 0 and cached.max() < SIZE  # never the special token
    assert torch.equal(cached, uncached)


def test_a_seed_reproduces_and_another_differs():
    lm = tiny_lm()
    assert torch.equal(generate(lm, seed=1), generate(lm, seed=1))
    assert not torch.equal(generate(lm, seed=1), generate(lm, seed=2))


def test_a_generator_per_sequence_makes_each_row_independent():
    lm = tiny_lm()
    hidden, mask = text()
    hidden[1] = hidden[0]
    mask[1] = mask[0]
    pair = lm.generate(hidden, 6, mask, generator=[torch.Generator().manual_seed(5) for _ in range(2)])
    assert torch.equal(pair[0], pair[1])  # same text, same seed, same tokens
    with pytest.raises(ValueError, match="3 generators for 2 sequences"):
        lm.generate(hidden, 6, mask, generator=[torch.Generator() for _ in range(3)])


def test_guidance_changes_the_tokens():
    lm = tiny_lm()
    hidden, mask = text(4)
    plain = lm.generate(hidden[2:], 6, mask[2:], generator=torch.Generator().manual_seed(0), temperature=0)
    guided = lm.generate(
        hidden, 6, mask, guidance_scale=5.0, generator=torch.Generator().manual_seed(0), temperature=0
    )
    assert not torch.equal(plain, guided)
    with pytest.raises(ValueError, match="halves"):
        lm.generate(hidden[:3], 6, mask[:3], guidance_scale=3.0)


def test_top_k_1_and_tiny_top_p_are_greedy():
    lm = tiny_lm()
    greedy = generate(lm, temperature=0)
    assert torch.equal(generate(lm, seed=3, top_k=1), greedy)
    assert torch.equal(generate(lm, seed=4, top_k=None, top_p=1e-6), greedy)


def test_sample_tokens_respects_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, -1)
    generator = torch.Generator().manual_seed(0)
    assert set(sample_tokens(logits, top_k=2, generator=generator).tolist()) == {0, 1}
    assert set(sample_tokens(logits, top_p=0.7, generator=generator).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(sample_tokens(logits, top_p=0.9, generator=generator).tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top_p": 0.0}, "top_p must be in"), ({"top_p": 1.5}, "top_p must be in"), ({"top_k": -1}, "top_k"),
     ({"temperature": -1.0}, "temperature")],
)  # fmt: skip
def test_bad_sampling_settings_are_answered_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_lm(), **kwargs)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_prefix_is_kept_and_continued(pattern):
    lm = tiny_lm(pattern)
    prefix = torch.randint(0, SIZE, (2, K, 3), generator=torch.Generator().manual_seed(9))
    cached = generate(lm, prefix=prefix)
    assert torch.equal(cached[..., :3], prefix)
    assert torch.equal(cached, generate(lm, prefix=prefix, use_cache=False))
    with pytest.raises(ValueError, match="prefix"):
        generate(lm, prefix=torch.zeros(2, K, 7, dtype=torch.long))


def test_callback_sees_every_step_can_edit_and_interruption_returns_complete_frames():
    lm = tiny_lm("delay")
    seen = []

    def force_code_7(step, sequence):
        seen.append((step, sequence.shape[-1]))
        edited = sequence.clone()
        edited[:, 0, -1] = 7  # codebook 0 of the newest step is always a real code with the delay pattern
        return edited if step < 6 else None

    codes = generate(lm, callback=force_code_7)
    assert seen == [(s, s + 1) for s in range(6 + K - 1)]
    assert (codes[:, 0] == 7).all()

    steps = []
    partial = generate(lm, interrupted=lambda: len(steps) == 4, callback=lambda step, sequence: steps.append(step))
    # 4 delay steps complete frames 0 and 1 of all 3 codebooks, and they match the uninterrupted run
    assert steps == [0, 1, 2, 3] and partial.shape == (2, K, 2)
    assert torch.equal(partial, generate(lm)[..., :2])


# -- the RVQ codec ---------------------------------------------------------------------------------------


def tiny_codec(**overrides) -> AudioAutoencoder:
    torch.manual_seed(0)
    return tiny_vae(bottleneck_type="rvq", bottleneck_kwargs={"num_quantizers": 4, "codebook_size": 16, **overrides})


@pytest.mark.parametrize("cosine_sim", [False, True])
def test_codec_codes_have_the_right_shapes_and_decode_to_the_reconstruction(cosine_sim):
    codec = tiny_codec(codebook_cosine_sim=cosine_sim)
    x = torch.cat([tone(700, seed=s) for s in range(2)])
    codec.train()
    posterior = codec.encode(x).latent_dist  # training pass: k-means init and a commitment loss
    assert posterior.commitment_loss.requires_grad and posterior.commitment_loss > 0
    codec.eval()
    codes = codec.encode_codes(x)
    assert codes.shape == (2, 4, 700 // codec.hop_length + 1) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 16
    audio = codec.decode_codes(codes)
    assert audio.shape == (2, 1, codes.shape[-1] * codec.hop_length)
    torch.testing.assert_close(audio[..., :700], codec(x).sample)
    assert codec.decode_codes(codes[:, :2]).shape == audio.shape
    with pytest.raises(ValueError, match="1 <= k <= 4"):
        codec.decode_codes(codes[:, :0])
    with pytest.raises(ValueError, match="another codec"):
        codec.decode_codes(codes + 16)


def test_fewer_quantizers_reconstruct_worse_after_a_short_training():
    codec = tiny_codec(codebook_size=4, codebook_decay=0.8).train()
    x = tone(1024)
    optimizer = torch.optim.Adam(codec.parameters(), lr=5e-3)
    for _ in range(150):
        posterior = codec.encode(x).latent_dist
        loss = (codec.decode(posterior.sample()).sample[..., :1024] - x).pow(2).mean() + posterior.commitment_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    codec.eval()
    with torch.no_grad():
        codes = codec.encode_codes(x)
        errors = [(codec.decode_codes(codes[:, :k])[..., :1024] - x).pow(2).mean().item() for k in range(1, 5)]
    assert errors[0] == max(errors) and errors[0] > 1.2 * errors[-1], errors


def test_codebook_usage_from_codes_and_from_ema_counts():
    codec = tiny_codec().eval()
    codes = torch.zeros(2, 4, 32, dtype=torch.long)
    codes[:, 1] = torch.arange(16).repeat(2)  # quantizer 1 uses every code equally
    codes[:, 2, :16] = 3  # quantizer 2 uses codes 3 and 5 half the time each
    codes[:, 2, 16:] = 5
    usage = codec.codebook_usage(codes)
    torch.testing.assert_close(usage.perplexity, torch.tensor([1.0, 16.0, 2.0, 1.0]))
    torch.testing.assert_close(usage.dead_fraction, torch.tensor([15 / 16, 0.0, 14 / 16, 15 / 16]))
    logs = usage.as_logs()
    assert logs["codebook/perplexity_q1"] == pytest.approx(16.0) and len(logs) == 8

    codec.train()
    for seed in range(3):
        codec.encode(torch.cat([tone(640, seed=seed + s) for s in range(4)]))
    running = codec.codebook_usage()
    assert running.perplexity.shape == running.dead_fraction.shape == (4,)
    assert ((running.perplexity >= 1) & (running.perplexity <= 16)).all()
    assert ((running.dead_fraction >= 0) & (running.dead_fraction <= 1)).all()


def test_codec_save_and_load_give_identical_codes(tmp_path):
    codec = tiny_codec().train()
    x = tone(640)
    codec.encode(x)  # k-means init and EMA updates live in buffers; they must be saved
    codec.eval().save_pretrained(tmp_path)
    loaded = AudioAutoencoder.from_pretrained(tmp_path).eval()
    assert torch.equal(codec.encode_codes(x), loaded.encode_codes(x))
    assert torch.equal(codec(x).sample, loaded(x).sample)


def test_continuous_autoencoders_refuse_code_methods():
    with pytest.raises(ValueError, match="bottleneck_type='rvq'"):
        tiny_vae().encode_codes(tone(64))
    with pytest.raises(ValueError, match="codebook_size >= 2"):
        tiny_codec(codebook_size=1)
