"""Batch augmentation: reproducible from the generator alone, shapes, value range."""

import torch

from oct_assets.ml.augment import augment, flip_and_jitter, random_crop, training_batch


def test_light_augmentation_crops_and_repeats_from_the_generator():
    x = torch.rand(6, 1, 40, 40)
    a = training_batch(x, torch.Generator().manual_seed(3), 32, "light")
    b = training_batch(x, torch.Generator().manual_seed(3), 32, "light")
    c = training_batch(x, torch.Generator().manual_seed(4), 32, "light")
    assert a.shape == (6, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_no_crop_and_no_augmentation_leave_the_batch_alone():
    x = torch.rand(4, 1, 24, 24)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(training_batch(x, gen, 0, "none"), x)
    assert torch.equal(random_crop(x, gen, 24), x)
    assert flip_and_jitter(x, gen).shape == x.shape


def test_affine_augment_repeats_from_the_generator():
    x = torch.rand(4, 1, 24, 24)
    a, b = (augment(x, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b) and a.shape == x.shape
