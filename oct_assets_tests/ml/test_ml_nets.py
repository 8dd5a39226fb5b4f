"""Networks: shapes, the seed port's layout, pooling."""

import pytest
import torch

from oct_assets.contracts.errors import OctMLError
from oct_assets.ml.config import TrainConfig
from oct_assets.ml.nets import build_net, centre_crop, generalised_mean, min_image_size
from oct_assets.ml.predict import class_activation_maps


@pytest.mark.parametrize(("blocks", "size"), [(3, 8), (5, 32), (6, 64), (6, 192)])
def test_compact_net_takes_its_minimum_and_larger(blocks, size):
    config = TrainConfig(blocks=blocks, image_size=size, width=4)
    assert min_image_size(config) <= size
    net = build_net(config, 4).eval()
    assert net(torch.rand(2, 1, size, size)).shape == (2, 4)


def test_seed_net_is_the_keras_layout():
    net = build_net(TrainConfig(architecture="seed", image_size=224), 4).eval()
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 64, (3, 3), (0, 0)),
        (64, 64, (3, 3), (0, 0)),
        (64, 128, (3, 3), (0, 0)),
        (128, 128, (3, 3), (0, 0)),
        (128, 256, (3, 3), (0, 0)),
    ]
    assert net.features(torch.rand(1, 3, 224, 224)).shape == (1, 256, 51, 51)
    assert net(torch.rand(1, 3, 224, 224)).shape == (1, 4)


def test_unknown_architecture_is_refused():
    config = TrainConfig()
    object.__setattr__(config, "architecture", "vgg")  # bypass validation on purpose
    with pytest.raises(OctMLError, match="valid: compact, seed, plain"):
        build_net(config, 4)


@pytest.mark.parametrize("p", [1.0, 3.0, 8.0])
def test_generalised_mean_matches_definition(p):
    f = torch.rand(2, 3, 5, 5) * 4
    assert torch.allclose(generalised_mean(f, p), f.pow(p).mean((2, 3)).pow(1 / p), rtol=1e-5)


def test_generalised_mean_has_finite_gradient_for_tiny_activations():
    f = torch.full((1, 2, 3, 3), 1e-7, requires_grad=True)
    generalised_mean(f, 8.0).sum().backward()
    assert torch.isfinite(f.grad).all()


def plain(**kw) -> TrainConfig:
    return TrainConfig(**{"architecture": "plain", "width": 8, "blocks": 4, **kw})


def test_plain_net_is_vgg_blocks_with_a_strided_first_conv():
    net = build_net(plain(image_size=64), 4).eval()
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.stride) for c in convs] == [
        (8, (2, 2)), (8, (1, 1)), (16, (1, 1)), (16, (1, 1)),
        (32, (1, 1)), (32, (1, 1)), (64, (1, 1)), (64, (1, 1)),
    ]  # fmt: skip
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.body) == 3
    assert net.features(torch.rand(2, 1, 64, 64)).shape == (2, 64, 4, 4)


def test_plain_net_sees_the_centre_crop_of_a_larger_input():
    net = build_net(plain(image_size=72, crop_size=64), 4).eval()
    x = torch.rand(3, 1, 72, 72)
    assert torch.equal(net(x), net(x[..., 4:68, 4:68]))
    assert torch.equal(centre_crop(x, 0), x) and torch.equal(centre_crop(x, 72), x)


def test_cams_of_a_cropping_net_sit_on_the_region_it_saw():
    net = build_net(plain(image_size=72, crop_size=48), 4).eval()
    images = (torch.rand(2, 72, 72) * 255).to(torch.uint8).numpy()
    cams = class_activation_maps(net, images)
    assert cams.shape == (2, 4, 72, 72)
    margin = cams[..., :12, :]  # the rows above the centre crop: never seen, no evidence
    assert (margin == cams[..., 12:60, 12:60].min(axis=(2, 3), keepdims=True)).all()
