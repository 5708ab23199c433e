"""TokenMusicPipeline with tiny random components: the arguments it shares with LatentMusicPipeline behave alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import T5Config, T5EncoderModel

from latentmusic import TokenLM, TokenMusicPipeline
from latentmusic.training.tokenizer import build_caption_tokenizer

from .conftest import CAPTIONS, tiny_vae

PROMPT = "a slow Bach chorale played by a string ensemble"
SECONDS = 0.05  # 400 samples, 13 codec frames


def make_tiny_token_pipe(pattern: str = "delay") -> TokenMusicPipeline:
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer(CAPTIONS, model_max_length=16)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).eval()
    codec = tiny_vae(
        bottleneck_type="rvq", bottleneck_kwargs=dict(num_quantizers=4, codebook_size=16, kmeans_init=False)
    ).eval()
    lm = TokenLM(
        num_codebooks=3,  # fewer than the codec's quantizers: the LM models the coarse codebooks
        codebook_size=16,
        pattern=pattern,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        cross_attention_dim=16,
    ).eval()
    pipe = TokenMusicPipeline(codec=codec, text_encoder=text_encoder, tokenizer=tokenizer, lm=lm)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny_pipe() -> TokenMusicPipeline:
    return make_tiny_token_pipe()


def run(pipe, prompt=PROMPT, seed=0, **kwargs):
    kwargs.setdefault("audio_length_in_s", SECONDS)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs).audios


def test_output_is_audio_of_the_requested_length(tiny_pipe):
    audio = run(tiny_pipe)
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32
    assert audio.shape == (1, 1, round(SECONDS * tiny_pipe.sample_rate))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


@pytest.mark.parametrize("seconds", [0.001, 0.037])
def test_any_length_is_honoured(tiny_pipe, seconds):
    assert run(tiny_pipe, audio_length_in_s=seconds).shape[-1] == round(seconds * tiny_pipe.sample_rate)


def test_output_types(tiny_pipe):
    as_np = run(tiny_pipe, output_type="np")
    as_pt = run(tiny_pipe, output_type="pt")
    codes = run(tiny_pipe, output_type="latent")
    assert isinstance(as_pt, torch.Tensor)
    np.testing.assert_array_equal(as_np, as_pt.numpy())
    assert codes.shape == (1, 3, tiny_pipe.num_frames(SECONDS)) and codes.dtype == torch.long
    with torch.no_grad():
        np.testing.assert_array_equal(as_np, tiny_pipe.decode_codes(codes, as_np.shape[-1]).numpy())


def test_return_dict_false_gives_a_tuple(tiny_pipe):
    (audio,) = tiny_pipe(PROMPT, audio_length_in_s=SECONDS, return_dict=False)
    assert audio.shape[0] == 1


def test_batching_by_prompts_and_waveforms_per_prompt(tiny_pipe):
    audio = run(tiny_pipe, prompt=[PROMPT, "a fast fiddle tune on flute"], num_waveforms_per_prompt=3)
    assert audio.shape[0] == 6
    assert not np.allclose(audio[0], audio[1])  # variations of one prompt differ from each other


def test_a_seed_reproduces_and_another_seed_differs(tiny_pipe):
    np.testing.assert_array_equal(run(tiny_pipe, seed=3), run(tiny_pipe, seed=3))
    assert not np.allclose(run(tiny_pipe, seed=3), run(tiny_pipe, seed=4))


def test_the_prompt_guidance_and_negative_prompt_change_the_output(tiny_pipe):
    greedy = {"temperature": 0.0}
    plain = run(tiny_pipe, guidance_scale=3.0, **greedy)
    assert not np.allclose(plain, run(tiny_pipe, prompt="fast flute fiddle tune", guidance_scale=3.0, **greedy))
    assert not np.allclose(plain, run(tiny_pipe, guidance_scale=1.0, **greedy))
    assert not np.allclose(plain, run(tiny_pipe, guidance_scale=3.0, negative_prompt="organ", **greedy))


def test_prompt_embeds_reproduce_the_prompt(tiny_pipe):
    text = tiny_pipe.encode_prompt([PROMPT], torch.device("cpu"), do_classifier_free_guidance=False)
    from_embeds = tiny_pipe(
        prompt_embeds=text.hidden_states,
        attention_mask=text.attention_mask,
        audio_length_in_s=SECONDS,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    ).audios
    np.testing.assert_array_equal(run(tiny_pipe, guidance_scale=1.0), from_embeds)


def test_the_kv_cache_changes_speed_not_tokens(tiny_pipe):
    with_cache = run(tiny_pipe, output_type="latent", top_k=None)
    without = run(tiny_pipe, output_type="latent", top_k=None, use_cache=False)
    assert torch.equal(with_cache, without)


def test_callback_sees_every_step_and_can_edit_the_sequence(tiny_pipe):
    seen = []

    def force_code_5(pipe, step, timestep, kwargs):
        seen.append(step)
        sequence = kwargs["sequence"].clone()
        sequence[:, 0, -1] = 5  # with the delay pattern, codebook 0 holds frame `step` at step `step`
        return {"sequence": sequence} if step < pipe.num_frames(SECONDS) else {}

    codes = run(tiny_pipe, output_type="latent", callback_on_step_end=force_code_5)
    assert seen == list(range(tiny_pipe.num_timesteps)) and tiny_pipe.num_timesteps == codes.shape[-1] + 2
    assert (codes[:, 0] == 5).all()


def test_callback_can_stop_the_loop(tiny_pipe):
    steps = []

    def stop_after_five(pipe, step, timestep, kwargs):
        steps.append(step)
        if step == 4:
            pipe._interrupt = True
        return {}

    audio = run(tiny_pipe, callback_on_step_end=stop_after_five)
    assert steps == [0, 1, 2, 3, 4]
    # five delay steps of three codebooks complete three frames; the clip ends there
    assert audio.shape == (1, 1, 3 * tiny_pipe.codec.hop_length)
    codes = run(tiny_pipe, callback_on_step_end=stop_after_five, output_type="latent")
    assert torch.equal(codes, run(tiny_pipe, output_type="latent")[..., :3])


def test_audio_prompt_is_continued(tiny_pipe):
    prompt_audio = torch.from_numpy(run(tiny_pipe, seed=7, audio_length_in_s=0.02))[0]  # (channels, samples)
    prompt_codes = tiny_pipe.codec.encode_codes(prompt_audio[None])[:, :3]
    whole = prompt_audio.shape[-1] // tiny_pipe.codec.hop_length
    rate = tiny_pipe.sample_rate
    codes = run(tiny_pipe, prompt=[PROMPT, "organ"], audio=prompt_audio, audio_sample_rate=rate, output_type="latent")
    assert codes.shape == (2, 3, tiny_pipe.num_frames(SECONDS))
    assert torch.equal(codes[:, :, :whole], prompt_codes[..., :whole].expand(2, -1, -1))
    audio = run(tiny_pipe, audio=prompt_audio.numpy(), audio_sample_rate=rate)  # NumPy works too
    assert audio.shape == (1, 1, round(SECONDS * tiny_pipe.sample_rate))


def test_save_and_load_give_identical_audio(tiny_pipe, tmp_path):
    before = run(tiny_pipe, seed=5)
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    loaded = TokenMusicPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.lm.config.pattern == "delay" and loaded.codec.config.bottleneck_type == "rvq"
    np.testing.assert_array_equal(before, run(loaded, seed=5))


@pytest.mark.parametrize("pattern", ["parallel", "flatten"])
def test_every_pattern_generates(pattern):
    pipe = make_tiny_token_pipe(pattern)
    audio = run(pipe, num_waveforms_per_prompt=2)
    assert audio.shape == (2, 1, round(SECONDS * pipe.sample_rate)) and np.isfinite(audio).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": []}, "empty list"),
        ({"prompt": "   "}, "is empty"),
        ({"audio_length_in_s": -1.0}, r"audio_length_in_s must be in \(0, 3600\]"),
        ({"audio_length_in_s": 1e-6}, "less than one sample"),
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"top_k": -3}, "top_k must be"),
        ({"temperature": -0.5}, "temperature must be"),
        ({"guidance_scale": 0.5, "negative_prompt": "noise"}, "guidance_scale > 1"),
        ({"num_waveforms_per_prompt": 0}, "positive integer"),
        ({"output_type": "wav"}, "output_type must be one of"),
        ({"callback_on_step_end_tensor_inputs": ["latents"]}, "not available"),
        ({"negative_prompt": ["a", "b"]}, "negative_prompt` has 2 entries"),
        ({"audio": torch.zeros(1, 10), "audio_sample_rate": 8000}, "less than one codec frame"),
        ({"audio": torch.zeros(1, 416), "audio_sample_rate": 8000}, "longer clip than the prompt"),
        ({"prompt_embeds": torch.zeros(1, 5, 17), "prompt": None}, "hidden size"),
    ],
)
def test_bad_input_is_answered_clearly(tiny_pipe, kwargs, message):
    kwargs = {"prompt": PROMPT, "audio_length_in_s": SECONDS, **kwargs}
    with pytest.raises(ValueError, match=message):
        tiny_pipe(**kwargs)


def test_a_codec_and_lm_that_do_not_fit_are_refused(tiny_pipe):
    components = dict(tiny_pipe.components)
    with pytest.raises(ValueError, match="bottleneck_type='rvq'"):
        TokenMusicPipeline(**{**components, "codec": tiny_vae()})
    with pytest.raises(ValueError, match="codebook_size=16"):
        TokenMusicPipeline(**{**components, "lm": TokenLM(num_codebooks=3, codebook_size=32, num_layers=0)})
