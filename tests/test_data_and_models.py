"""Tier 1: shards, loaders, dataset errors and the networks, in one process on CPU."""

import struct

import pytest
import torch
import torchvision.transforms as T

from ddp_bench.data import (
    SPECS,
    DeviceBatches,
    Shard,
    Split,
    TorchLoaderBatches,
    _NormalizedImages,
    load_split,
    open_real_dataset,
)
from ddp_bench.errors import UsageError
from ddp_bench.models import MnistCNN, build_model, build_recipe, lr_factor

CPU = torch.device("cpu")
MNIST = SPECS["mnist"]


def tiny_split(n: int = 100) -> Split:
    generator = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator), torch.arange(n) % 10)


def shard(rank: int, world: int, batch: int = 8) -> Shard:
    return Shard(rank, world, batch, seed=3, device=CPU, channels_last=False)


def test_training_shards_are_disjoint_and_cover_the_data():
    sources = [DeviceBatches(tiny_split(96), MNIST, shard(rank, 3)) for rank in range(3)]
    for epoch in (0, 1):
        seen = [set(source.epoch_indices(epoch)) for source in sources]
        assert sum(map(len, seen)) == 96
        assert set().union(*seen) == set(range(96))
    assert sources[0].epoch_indices(0) != sources[0].epoch_indices(1)  # reshuffled each epoch


def test_device_and_torch_loaders_shard_identically_and_normalise_alike():
    split = tiny_split()
    device = DeviceBatches(split, MNIST, shard(1, 2))
    torch_path = TorchLoaderBatches(_NormalizedImages(split, MNIST), shard(1, 2), workers=0)
    assert device.batches_per_epoch == torch_path.batches_per_epoch == 50 // 8
    assert device.epoch_indices(2) == torch_path.epoch_indices(2)
    for (x_dev, y_dev), (x_torch, y_torch) in zip(device.epoch(2), torch_path.epoch(2), strict=True):
        assert torch.allclose(x_dev, x_torch, atol=1e-5)
        assert torch.equal(y_dev, y_torch)


def test_device_normalisation_equals_totensor_then_normalize():
    split = tiny_split(8)
    source = DeviceBatches(split, MNIST, Shard(0, 1, 8, 0, CPU, False))
    x, y = next(source.epoch(0))
    order = source.epoch_indices(0)
    reference = T.Compose([T.ToTensor(), T.Normalize(MNIST.mean, MNIST.std)])
    expected = torch.stack([reference(split.images[i, 0].numpy()) for i in order])
    assert torch.allclose(x, expected, atol=1e-5)


def test_evaluation_sees_every_test_image_exactly_once():
    split = tiny_split(101)
    counted = []
    for rank in range(4):
        source = DeviceBatches(split, MNIST, shard(rank, 4, batch=10), train=False)
        counted += [len(y) for _x, y in source.epoch(0)]
    assert sum(counted) == 101


def test_channels_last_batches():
    source = DeviceBatches(tiny_split(), MNIST, Shard(0, 1, 8, 0, CPU, channels_last=True))
    x, _ = next(source.epoch(0))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_synthetic_data_has_the_real_shape_and_is_the_same_on_every_rank():
    first = load_split("synthetic", SPECS["cifar10"], "", train=False, seed=5)
    again = load_split("synthetic", SPECS["cifar10"], "", train=False, seed=5)
    assert first.images.shape == (10_000, 3, 32, 32) and first.images.dtype == torch.uint8
    assert torch.equal(first.images, again.images)


def test_missing_data_dir_and_missing_dataset_say_how_to_fetch(tmp_path):
    with pytest.raises(UsageError, match="does not exist.*python -m ddp_bench download --data mnist"):
        open_real_dataset("mnist", str(tmp_path / "nope"), train=True)
    with pytest.raises(UsageError, match="mnist not found under .*python -m ddp_bench download"):
        open_real_dataset("mnist", str(tmp_path), train=True)


def write_idx(path, magic_type: int, dims: tuple[int, ...], payload: bytes) -> None:
    header = struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(header + payload)


def test_truncated_dataset_files_are_reported_as_corrupt(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 50), ("t10k", 10)):
        # The header promises n images; the file holds 100 bytes of them (it was cut off mid-copy).
        write_idx(raw / f"{split}-images-idx3-ubyte", 0x08, (n, 28, 28), bytes(100))
        write_idx(raw / f"{split}-labels-idx1-ubyte", 0x08, (n,), bytes(n))
    with pytest.raises(UsageError, match="looks truncated or corrupt"):
        open_real_dataset("mnist", str(tmp_path), train=True)


def test_real_mnist_loads_as_uint8(mnist_dir):
    split = load_split("mnist", MNIST, mnist_dir, train=False, seed=0)
    assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.min() >= 0 and split.labels.max() <= 9


def test_mnist_cnn_is_the_course_network():
    model = MnistCNN()
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(32, 1, 3, 3), (32,), (64, 32, 3, 3), (64,), (128, 9216), (128,), (10, 128), (10,)]
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
    assert [model.dropout1.p, model.dropout2.p] == [0.25, 0.5]
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(2))  # log-probabilities, as in the course


@pytest.mark.parametrize("name, channels, size", [("resnet18", 3, 32), ("resnet18", 1, 28), ("resnet50", 3, 32)])
def test_resnets_adapt_to_the_dataset(name, channels, size):
    model = build_model(name, channels, 10, size).eval()
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 10)
    assert model.conv1.in_channels == channels and model.conv1.stride == (1, 1)


def test_recipes():
    recipe = build_recipe("mnist_cnn", MnistCNN(), None)
    adadelta, step_lr = recipe.optimizer, recipe.epoch_scheduler
    assert type(adadelta).__name__ == "Adadelta" and adadelta.defaults["lr"] == 1.0
    assert recipe.step_scheduler is None and recipe.base_lr == recipe.effective_lr == 1.0
    adadelta.step()  # the scheduler steps after the optimizer, as in training
    step_lr.step()
    assert adadelta.param_groups[0]["lr"] == pytest.approx(0.7)
    sgd = build_recipe("resnet18", build_model("resnet18", 3, 10, 32), 0.05).optimizer
    assert type(sgd).__name__ == "SGD" and sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == 0.05


@pytest.mark.parametrize(
    "scaling, global_batch, factor",
    [("none", 1024, 1.0), ("linear", 1024, 16.0), ("sqrt", 1024, 4.0), ("linear", 32, 0.5)],
)
def test_learning_rate_scaling_relative_to_the_reference_batch(scaling, global_batch, factor):
    assert lr_factor(scaling, global_batch, 64) == pytest.approx(factor)


def test_a_scaled_sgd_rate_warms_up_linearly_and_the_course_recipe_does_not():
    recipe = build_recipe("resnet18", build_model("resnet18", 3, 10, 32), 0.1, factor=4.0, warmup_steps=4)
    assert recipe.effective_lr == pytest.approx(0.4) and recipe.base_lr == 0.1
    rates = []
    for _ in range(6):
        rates.append(recipe.optimizer.param_groups[0]["lr"])
        recipe.optimizer.step()
        recipe.step_scheduler.step()
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    course = build_recipe("mnist_cnn", MnistCNN(), None, factor=4.0, warmup_steps=4)
    assert course.step_scheduler is None and course.optimizer.param_groups[0]["lr"] == pytest.approx(4.0)
