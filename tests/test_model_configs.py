"""Every model refuses a constructor argument or config key it does not take, and loads shipped checkpoints by name."""

from __future__ import annotations

import json

import pytest
import torch

from latentmusic import AudioAutoencoder, TokenLM, UNet1DConditionModel
from latentmusic.checkpoints import shipped_path

from .conftest import tiny_vae

TINY = {
    AudioAutoencoder: dict(sample_rate=8000, strides=(4, 8), latent_channels=4, encoder_kwargs=dict(base_channels=4)),
    UNet1DConditionModel: dict(
        in_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_levels=(False, True),
    ),
    TokenLM: dict(num_codebooks=2, codebook_size=16, hidden_size=16, num_layers=1, num_heads=2, ffn_dim=32),
}
# a real argument of each model, and a misspelling of it
TYPOS = {
    AudioAutoencoder: ("latent_channels", "latent_chanels"),
    UNet1DConditionModel: ("layers_per_block", "layer_per_block"),
    TokenLM: ("num_layers", "num_layer"),
}


@pytest.mark.parametrize("model_cls", list(TINY), ids=lambda c: c.__name__)
def test_a_misspelled_constructor_argument_names_the_right_one(model_cls):
    right, wrong = TYPOS[model_cls]
    message = rf"{model_cls.__name__} got unknown arguments '{wrong}' \(did you mean '{right}'\?\)"
    with pytest.raises(TypeError, match=message) as error:
        model_cls(**{**TINY[model_cls], wrong: 1})
    assert "valid ones: " in str(error.value) and right in str(error.value).split("valid ones: ")[1]


@pytest.mark.parametrize("model_cls", list(TINY), ids=lambda c: c.__name__)
def test_an_unknown_config_key_is_an_error_in_from_config_and_from_pretrained(model_cls, tmp_path):
    right, wrong = TYPOS[model_cls]
    with pytest.raises(ValueError, match=rf"unknown config keys '{wrong}' \(did you mean '{right}'\?\)"):
        model_cls.from_config({**TINY[model_cls], wrong: 2})
    model_cls(**TINY[model_cls]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[wrong] = config.pop(right)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=wrong):
        model_cls.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bogus'"):
        model_cls.from_config(model_cls(**TINY[model_cls]).config, bogus=3)


def test_a_valid_config_still_round_trips(tmp_path):
    vae = tiny_vae().eval()
    vae.save_pretrained(tmp_path)
    loaded = AudioAutoencoder.from_pretrained(tmp_path).eval()
    audio = torch.randn(1, 1, 256, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(audio).sample, vae(audio).sample)
    assert AudioAutoencoder.from_config(vae.config).config == vae.config


@pytest.mark.parametrize(
    ("model_cls", "name", "subfolder"),
    [
        (UNet1DConditionModel, "latentmusic/demo", "unet"),
        (AudioAutoencoder, "latentmusic/demo", "vae"),
        (TokenLM, "latentmusic/demo-token-lm", "lm"),
        (AudioAutoencoder, "latentmusic/demo-token-lm", "codec"),
    ],
)
def test_a_shipped_component_loads_by_name_and_subfolder(model_cls, name, subfolder):
    model = model_cls.from_pretrained(name, subfolder=subfolder)
    same = model_cls.from_pretrained(shipped_path(name) / subfolder)
    assert model.dtype == torch.float32  # shipped in float16, loaded as diffusers loads: float32
    assert {k: v for k, v in model.config.items() if k != "_name_or_path"} == {
        k: v for k, v in same.config.items() if k != "_name_or_path"
    }
    for (key, a), b in zip(model.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), key
