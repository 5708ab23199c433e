"""Models: ModelMixin + ConfigMixin networks, loadable with `from_pretrained`."""

from .unet_1d_condition import UNet1DConditionModel, UNet1DConditionOutput

__all__ = ["UNet1DConditionModel", "UNet1DConditionOutput"]
