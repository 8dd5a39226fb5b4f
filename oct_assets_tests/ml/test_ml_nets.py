"""Networks: shapes, the seed port's layout, pooling."""

import pytest
import torch

from oct_assets.ml.config import TrainConfig
from oct_assets.ml.errors import OctMLError
from oct_assets.ml.nets import build_net, generalised_mean, min_image_size


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
    with pytest.raises(OctMLError, match="valid: compact, seed"):
        build_net(config, 4)


@pytest.mark.parametrize("p", [1.0, 3.0, 8.0])
def test_generalised_mean_matches_definition(p):
    f = torch.rand(2, 3, 5, 5) * 4
    assert torch.allclose(generalised_mean(f, p), f.pow(p).mean((2, 3)).pow(1 / p), rtol=1e-5)


def test_generalised_mean_has_finite_gradient_for_tiny_activations():
    f = torch.full((1, 2, 3, 3), 1e-7, requires_grad=True)
    generalised_mean(f, 8.0).sum().backward()
    assert torch.isfinite(f.grad).all()
