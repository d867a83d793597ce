"""A user's own model, as docs/own-models.md shows one: a factory taking (num_classes, in_channels, image_size) and
returning an nn.Module that maps images to logits. The tests also name its faulty factories."""

from torch import nn


def build(num_classes, in_channels, image_size):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, num_classes),
    )


def wrong_shape(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes + 1))


def raises(num_classes, in_channels, image_size):
    return _helper(num_classes)


def _helper(num_classes):
    raise ValueError(f"this factory cannot make {num_classes} classes")


def not_a_module(num_classes, in_channels, image_size):
    return "a network"
