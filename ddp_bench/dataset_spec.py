"""What a dataset is to the model: its channels, image size, classes, normalisation and split sizes. A leaf, so that
the data loaders, the image-folder reader and the input shape all read one table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int


SPECS = {
    "mnist": DatasetSpec("mnist", 1, 28, 10, (0.1307,), (0.3081,), 60_000, 10_000),
    "cifar10": DatasetSpec("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50_000, 10_000),
}
