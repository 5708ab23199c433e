"""UNet1DConditionModel: shapes, conditioning, masking, serialisation and training behave as documented."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from latentmusic.models import UNet1DConditionModel
from latentmusic.models.unet_1d_condition import UNet1DConditionOutput

IN_CHANNELS = 4
TEXT_DIM = 12
TEXT_LEN = 6
BATCH = 2


def tiny_config(**overrides) -> dict:
    config = {
        "in_channels": IN_CHANNELS,
        "block_out_channels": (8, 16, 32),
        "layers_per_block": 1,
        "attention_levels": (False, True, True),
        "attention_head_dim": 8,
        "cross_attention_dim": TEXT_DIM,
        "norm_num_groups": 4,
        "max_seconds": 10.0,
    }
    return {**config, **overrides}


def perturbed(model: UNet1DConditionModel, seed: int = 0) -> UNet1DConditionModel:
    """Move every weight off its initial value, so zero-initialised layers no longer hide behaviour."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def make_unet(**overrides) -> UNet1DConditionModel:
    torch.manual_seed(0)
    return perturbed(UNet1DConditionModel(**tiny_config(**overrides)))


@pytest.fixture(scope="module")
def unet() -> UNet1DConditionModel:
    return make_unet()


def inputs(frames: int = 21, channels: int = IN_CHANNELS) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(BATCH, channels, frames, generator=generator),
        "timestep": torch.tensor([100.0, 700.0]),
        "encoder_hidden_states": torch.randn(BATCH, TEXT_LEN, TEXT_DIM, generator=generator),
    }


def predict(model: UNet1DConditionModel, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs).sample


# -- shapes and outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 17, 50, 63, 64, 100])
def test_output_is_as_long_as_the_input_for_any_length(unet, frames):
    out = predict(unet, **inputs(frames))
    assert out.shape == (BATCH, IN_CHANNELS, frames)
    assert torch.isfinite(out).all()


def test_out_channels_can_differ_from_in_channels():
    model = make_unet(out_channels=2 * IN_CHANNELS)
    assert predict(model, **inputs()).shape == (BATCH, 2 * IN_CHANNELS, 21)


def test_a_fresh_model_predicts_zero():
    model = UNet1DConditionModel(**tiny_config())
    out = predict(model, **inputs())
    assert torch.equal(out, torch.zeros_like(out))


def test_return_dict_false_gives_a_tuple(unet):
    args = inputs()
    with torch.no_grad():
        as_tuple = unet(**args, return_dict=False)
        as_output = unet(**args)
    assert isinstance(as_output, UNet1DConditionOutput)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert torch.equal(as_tuple[0], as_output.sample)


def test_examples_in_a_batch_are_independent(unet):
    args = inputs()
    batched = predict(unet, **args)
    for i in range(BATCH):
        alone = predict(unet, **{name: value[i : i + 1] for name, value in args.items()})
        torch.testing.assert_close(alone, batched[i : i + 1], rtol=1e-5, atol=1e-5)


# -- conditioning ----------------------------------------------------------------------------------------


def test_the_text_changes_the_output(unet):
    args = inputs()
    other_text = {**args, "encoder_hidden_states": torch.randn_like(args["encoder_hidden_states"])}
    assert not torch.allclose(predict(unet, **args), predict(unet, **other_text), atol=1e-4)


def test_padded_text_tokens_do_not_change_the_output(unet):
    args = inputs()
    mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    mask[0, 4:] = 0
    mask[1, 2:] = 0
    changed = args["encoder_hidden_states"].clone()
    changed[mask == 0] = 100 * torch.randn(int((mask == 0).sum()), TEXT_DIM)
    masked = predict(unet, **args, encoder_attention_mask=mask)
    assert torch.equal(
        predict(unet, **{**args, "encoder_hidden_states": changed}, encoder_attention_mask=mask), masked
    )
    # without the mask those tokens do matter, and a boolean mask means the same as an integer one
    assert not torch.allclose(predict(unet, **args), masked, atol=1e-4)
    torch.testing.assert_close(predict(unet, **args, encoder_attention_mask=mask.bool()), masked)


def test_an_all_ones_mask_is_the_same_as_no_mask(unet):
    args = inputs()
    ones = torch.ones(BATCH, TEXT_LEN)
    torch.testing.assert_close(predict(unet, **args, encoder_attention_mask=ones), predict(unet, **args))


def test_seconds_total_and_seconds_start_change_the_output(unet):
    args = inputs()
    short = predict(unet, **args, seconds_total=2.0)
    assert not torch.allclose(short, predict(unet, **args, seconds_total=8.0), atol=1e-4)
    assert not torch.allclose(short, predict(unet, **args, seconds_total=2.0, seconds_start=3.0), atol=1e-4)


def test_missing_seconds_default_to_the_start_and_max_seconds(unet):
    args = inputs()
    defaults = {"seconds_start": torch.zeros(BATCH), "seconds_total": torch.full((BATCH,), 10.0)}
    explicit = predict(unet, **args, **defaults)
    assert torch.equal(predict(unet, **args), explicit)


def test_seconds_beyond_max_seconds_are_clamped(unet):
    args = inputs()
    assert torch.equal(predict(unet, **args, seconds_total=10.0), predict(unet, **args, seconds_total=25.0))


def test_seconds_are_ignored_without_timing_conditioning():
    model = make_unet(use_timing_conditioning=False)
    args = inputs()
    assert torch.equal(predict(model, **args), predict(model, **args, seconds_total=3.0, seconds_start=1.0))


@pytest.mark.parametrize(
    "timestep",
    [500, 500.0, torch.tensor(500), torch.tensor(500.0), torch.tensor([500.0]), torch.tensor([500, 500])],
    ids=["int", "float", "0d-long", "0d-float", "length-1", "per-example"],
)
def test_every_form_of_the_same_timestep_gives_the_same_output(unet, timestep):
    args = inputs()
    reference = predict(unet, **{**args, "timestep": torch.full((BATCH,), 500.0)})
    assert torch.equal(predict(unet, **{**args, "timestep": timestep}), reference)


def test_fractional_timesteps_are_not_rounded(unet):
    args = inputs()
    whole = predict(unet, **{**args, "timestep": 500})
    assert not torch.allclose(predict(unet, **{**args, "timestep": 500.5}), whole, atol=1e-6)


def test_global_cond_changes_the_output_and_none_means_zeros():
    model = make_unet(global_cond_dim=3)
    args = inputs()
    assert torch.equal(predict(model, **args), predict(model, **args, global_cond=torch.zeros(BATCH, 3)))
    conditioned = predict(model, **args, global_cond=torch.ones(BATCH, 3))
    assert not torch.allclose(predict(model, **args), conditioned, atol=1e-4)


def test_pooled_text_conditioning_adds_the_masked_mean_of_the_text_to_every_block():
    model = make_unet(pooled_text_conditioning=True)
    args = inputs()
    mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    mask[0, 3:] = 0
    changed = args["encoder_hidden_states"].clone()
    changed[mask == 0] = 100.0
    masked = predict(model, **args, encoder_attention_mask=mask)
    # padding stays out of the pooled vector too
    assert torch.equal(
        predict(model, **{**args, "encoder_hidden_states": changed}, encoder_attention_mask=mask), masked
    )
    # the embedding sees the mean over real tokens only: undoing its contribution by hand gives the model without it
    seen = []
    handle = model.pooled_text_embedding.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    predict(model, **args, encoder_attention_mask=mask)
    handle.remove()
    expected = args["encoder_hidden_states"][0, :3].mean(0)
    torch.testing.assert_close(seen[0][0], expected)
    with torch.no_grad():
        model.pooled_text_embedding.linear_2.weight.zero_()
        model.pooled_text_embedding.linear_2.bias.zero_()
    assert not torch.allclose(predict(model, **args, encoder_attention_mask=mask), masked, atol=1e-4)
    plain = make_unet()
    plain.load_state_dict(model.state_dict(), strict=False)
    torch.testing.assert_close(
        predict(plain, **args, encoder_attention_mask=mask), predict(model, **args, encoder_attention_mask=mask)
    )


def test_conditioning_inputs_are_required_after_the_latents():
    model = make_unet(conditioning_inputs={"mask": 1, "known_latents": IN_CHANNELS})
    args = inputs(channels=2 * IN_CHANNELS + 1)
    assert model.extra_in_channels == IN_CHANNELS + 1
    assert predict(model, **args).shape == (BATCH, IN_CHANNELS, 21)
    with pytest.raises(ValueError, match=r"in_channels \+ extra_in_channels = 4 \+ 5 = 9"):
        model(**inputs(channels=IN_CHANNELS))


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (0, {}),
        (IN_CHANNELS + 1, {"mask": 1, "known_latents": IN_CHANNELS}),
        (12, {"melody_chroma": 12}),
        (IN_CHANNELS + 13, {"mask": 1, "known_latents": IN_CHANNELS, "melody_chroma": 12}),
    ],
)
def test_a_legacy_config_with_extra_in_channels_loads_with_named_inputs(tmp_path, extra, named):
    model = make_unet(conditioning_inputs=named)
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    del config["conditioning_inputs"]
    config_file.write_text(json.dumps({**config, "extra_in_channels": extra}))
    loaded = UNet1DConditionModel.from_pretrained(tmp_path).eval()
    assert dict(loaded.config.conditioning_inputs) == named and "extra_in_channels" not in loaded.config
    args = inputs(channels=IN_CHANNELS + extra)
    assert torch.equal(predict(loaded, **args), predict(model, **args))


def test_a_legacy_config_whose_width_names_no_layout_is_an_error():
    config = {**tiny_config(), "extra_in_channels": 3}
    with pytest.raises(ValueError, match="extra_in_channels=3 .* names no known layout"):
        UNet1DConditionModel.from_config(config)
    with pytest.raises(ValueError, match="names no known layout"):  # 11-channel latents: mask+known or melody?
        UNet1DConditionModel.from_config({**tiny_config(), "in_channels": 11, "extra_in_channels": 12})


# -- input validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sample": torch.randn(IN_CHANNELS, 21)}, r"\(batch, channels, frames\)"),
        ({"sample": torch.randn(BATCH, IN_CHANNELS + 1, 21)}, r"expects in_channels = 4"),
        ({"sample": torch.randn(BATCH, IN_CHANNELS, 0)}, r"0 frames"),
        ({"encoder_hidden_states": torch.randn(BATCH, TEXT_LEN, TEXT_DIM + 1)}, r"cross_attention_dim=12"),
        ({"encoder_hidden_states": torch.randn(BATCH + 1, TEXT_LEN, TEXT_DIM)}, r"batch size 3.*has 2"),
        ({"timestep": torch.tensor([1.0, 2.0, 3.0])}, r"`timestep` must be .* length 1 or batch size 2"),
        ({"timestep": torch.ones(BATCH, 1)}, r"`timestep` must be"),
        ({"encoder_attention_mask": torch.ones(BATCH, TEXT_LEN + 1)}, r"`encoder_attention_mask` must have"),
        ({"seconds_total": torch.ones(BATCH + 1)}, r"`seconds_total` must be"),
        ({"seconds_start": torch.ones(BATCH, 2)}, r"`seconds_start` must be"),
        ({"global_cond": torch.ones(BATCH, 3)}, r"global_cond_dim=0"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(unet, change, message):
    with pytest.raises(ValueError, match=message):
        unet(**{**inputs(), **change})


def test_a_global_cond_of_the_wrong_width_is_rejected():
    model = make_unet(global_cond_dim=3)
    with pytest.raises(ValueError, match=r"\(batch, global_cond_dim\) = \(2, 3\)"):
        model(**inputs(), global_cond=torch.ones(BATCH, 4))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attention_levels": (False, True)}, "one flag per level"),
        ({"norm_num_groups": 3}, "norm_num_groups=3 must divide"),
        ({"attention_head_dim": 12}, "attention_head_dim=12 must divide"),
        ({"block_out_channels": (9, 18, 36), "norm_num_groups": 9, "attention_head_dim": 9}, "must be even"),
        ({"layers_per_block": 0}, "layers_per_block must be at least 1"),
        ({"global_cond_dim": -1}, "must be >= 0"),
        ({"conditioning_inputs": {"mask": 1}}, "come together"),
        ({"conditioning_inputs": {"known_latents": 3, "mask": 1}}, "'known_latents' has 4 channels"),
        ({"conditioning_inputs": {"chroma": 12}}, "unknown conditioning input 'chroma'"),
        ({"max_seconds": 0.0}, "max_seconds must be positive"),
    ],
)
def test_inconsistent_configs_raise_a_clear_value_error(change, message):
    with pytest.raises(ValueError, match=message):
        UNet1DConditionModel(**tiny_config(**change))


# -- serialisation, attention processors, gradients ------------------------------------------------------


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = make_unet(conditioning_inputs={"melody_chroma": 12}, global_cond_dim=3)
    model.save_pretrained(tmp_path)
    loaded = UNet1DConditionModel.from_pretrained(tmp_path).eval()
    args = {**inputs(channels=IN_CHANNELS + 12), "global_cond": torch.randn(BATCH, 3)}
    assert torch.equal(predict(loaded, **args, seconds_total=4.0), predict(model, **args, seconds_total=4.0))


def test_the_attention_processor_can_be_swapped(unet):
    model = make_unet()
    args = inputs()
    mask = torch.tensor([[1] * TEXT_LEN, [1, 1, 1, 0, 0, 0]])
    reference = predict(model, **args, encoder_attention_mask=mask)
    # self- and cross-attention after each residual block of the levels with attention and the mid block
    assert len(model.attn_processors) == 2 * (2 + 1 + 2 * 2)
    model.set_attn_processor(AttnProcessor())
    torch.testing.assert_close(predict(model, **args, encoder_attention_mask=mask), reference)


def loss_and_grads(model: UNet1DConditionModel, args: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model(**args).sample
    out.square().mean().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    model = make_unet(global_cond_dim=3).train()
    args = {**inputs(), "global_cond": torch.randn(BATCH, 3), "seconds_total": torch.tensor([3.0, 7.0])}
    out, grads = loss_and_grads(model, args)
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    checkpointed_out, checkpointed_grads = loss_and_grads(model, args)
    torch.testing.assert_close(checkpointed_out, out)
    assert grads.keys() == checkpointed_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


def test_every_parameter_receives_a_gradient():
    model = make_unet(global_cond_dim=3).train()
    # (the Fourier frequencies of a duration get no gradient from a duration of 0, the default start)
    args = {
        **inputs(),
        "global_cond": torch.randn(BATCH, 3),
        "seconds_start": torch.tensor([1.0, 0.5]),
        "seconds_total": torch.tensor([3.0, 7.0]),
    }
    _, grads = loss_and_grads(model, args)
    without_gradient = [name for name, _ in model.named_parameters() if name not in grads or not grads[name].any()]
    assert without_gradient == []


def test_it_learns_a_different_target_for_each_text():
    torch.manual_seed(0)
    model = UNet1DConditionModel(**tiny_config()).train()
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, IN_CHANNELS, 24, generator=generator).expand(2, -1, -1)
    texts = torch.randn(2, TEXT_LEN, TEXT_DIM, generator=generator)
    targets = torch.randn(2, IN_CHANNELS, 24, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return (model(sample, 300, texts, seconds_total=5.0).sample - targets).square().mean()

    initial = loss().item()
    for _ in range(80):
        optimizer.zero_grad()
        step_loss = loss()
        step_loss.backward()
        optimizer.step()
    assert loss().item() < initial / 5
