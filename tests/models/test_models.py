import pytest
import torch

from compressor.errors import ConfigError, UnknownNameError
from compressor.models import create_model, list_models

# name -> (input shape, extra options); every reference model on the input it is meant for.
CASES = {
    "mlp": ((1, 28, 28), {}),
    "resnet8": ((1, 28, 28), {}),
    "resnet20": ((3, 32, 32), {}),
    "resnet56": ((1, 28, 28), {"width_mult": 0.5}),
    "resnet110": ((1, 28, 28), {"width_mult": 0.25}),
    "resnet18": ((3, 32, 32), {"width_mult": 0.25}),
    "resnet50": ((3, 32, 32), {"width_mult": 0.25}),
    "mobilenetv2": ((1, 28, 28), {"width_mult": 0.5, "squeeze_excitation": True}),
    "vit_tiny": ((3, 32, 32), {}),
}


def test_every_registered_model_is_covered():
    assert set(CASES) == set(list_models())


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_backward(name):
    shape, options = CASES[name]
    model = create_model(name, num_classes=7, in_channels=shape[0], image_size=shape[1], **options)
    inputs = torch.randn(3, *shape)
    logits = model(inputs)
    assert logits.shape == (3, 7)
    logits.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_width_multiplier_scales_channels():
    narrow = create_model("resnet20", width_mult=0.5)
    wide = create_model("resnet20", width_mult=2.0)
    assert narrow.conv1.out_channels == 8 and wide.conv1.out_channels == 32


def test_resnet18_widths():
    model = create_model("resnet18", in_channels=1)
    assert model.conv1.in_channels == 1
    assert [stage[0].conv1.out_channels for stage in model.layers] == [64, 128, 256, 512]


def test_mobilenetv2_has_depthwise_and_squeeze_excitation():
    from compressor.models.mobilenetv2 import SqueezeExcitation

    model = create_model("mobilenetv2", squeeze_excitation=True)
    depthwise = [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert depthwise
    assert any(isinstance(m, SqueezeExcitation) for m in model.modules())


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError, match="Valid values: mlp, mobilenetv2"):
        create_model("resnet21")


def test_unknown_option_lists_options():
    with pytest.raises(ConfigError, match="Its options are: width_mult"):
        create_model("resnet20", depth=3)


@pytest.mark.parametrize("kwargs, match", [
    ({"width_mult": 0}, "width_mult"),
    ({"num_classes": 0}, "num_classes"),
])
def test_invalid_numbers(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model("resnet8", **kwargs)


def test_vit_patch_size_must_divide_image():
    with pytest.raises(ConfigError, match="patch_size"):
        create_model("vit_tiny", image_size=30, patch_size=4)
