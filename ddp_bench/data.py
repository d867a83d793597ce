"""Datasets (synthetic, MNIST, CIFAR-10) and the two ways of feeding one rank its shard.

- `TorchLoaderBatches`: the standard path users compare against, torchvision dataset + transforms +
  DataLoader + DistributedSampler, exactly as the course loop does it.
- `DeviceBatches`: the dataset decoded once into a uint8 tensor on the training device, normalised on the fly,
  sharded by the very same DistributedSampler and batched by indexing: no per-image Python work at all.

Real datasets are read from `--data-dir` and never downloaded during a run (compute nodes have no internet);
`download()` is what the `download` verb runs on a login node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ddp_bench.dataset_spec import SPECS, DatasetSpec
from ddp_bench.errors import UsageError


@dataclass(frozen=True)
class Split:
    """One split of a dataset as raw tensors: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


# Where torchvision downloads each dataset from (its first mirror), for the internet pre-flight check.
DOWNLOAD_HOSTS = {"mnist": "ossci-datasets.s3.amazonaws.com", "cifar10": "www.cs.toronto.edu"}


def _fetch_hint(data: str, data_dir: str) -> str:
    return (
        "on a machine with internet (a login node) run: "
        f"python -m ddp_bench download --data {data} --data-dir {data_dir}"
    )


def _open_torchvision(data: str, data_dir: str, train: bool, transform=None, download: bool = False):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[data]
    return cls(root=data_dir, train=train, transform=transform, download=download)


def open_real_dataset(data: str, data_dir: str, train: bool, transform=None):
    """The torchvision dataset under `data_dir`, or a one-line UsageError saying how to get it."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir} is a file, not a directory; {_fetch_hint(data, data_dir)}")
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir} does not exist; {_fetch_hint(data, data_dir)}")
    try:
        return _open_torchvision(data, data_dir, train, transform)
    except (RuntimeError, ValueError, AssertionError, EOFError, OSError) as exc:
        if isinstance(exc, RuntimeError) and "not found" in str(exc).lower():
            raise UsageError(f"{data} not found under {data_dir}; {_fetch_hint(data, data_dir)}") from None
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"{data} under {data_dir} looks truncated or corrupt ({detail}); {_fetch_hint(data, data_dir)}"
        ) from None


def download(data: str, data_dir: str) -> list[str]:
    """Fetch both splits into `data_dir` (torchvision checks their md5s); returns what is there."""
    if data not in SPECS:
        raise UsageError(f"--data must be one of {', '.join(SPECS)} for download, not {data!r}")
    os.makedirs(data_dir, exist_ok=True)
    for train in (True, False):
        _open_torchvision(data, data_dir, train, download=True)
    return sorted(os.listdir(data_dir))


def load_split(data: str, spec: DatasetSpec, data_dir: str, train: bool, seed: int) -> Split:
    """A whole split as tensors. Synthetic data has the real dataset's shape, classes and size."""
    if data == "synthetic":
        # Fixed by the seed, identical on every rank (each rank then takes its own shard).
        generator = torch.Generator().manual_seed(seed * 2 + (0 if train else 1))
        size = spec.train_size if train else spec.test_size
        shape = (size, spec.channels, spec.image_size, spec.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, spec.num_classes, (size,), generator=generator)
        return Split(images, labels)
    dataset = open_real_dataset(data, data_dir, train)
    images = torch.as_tensor(dataset.data)
    if images.ndim == 3:  # MNIST stores (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR-10 stores (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    return Split(images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.int64))


class _NormalizedImages(Dataset):
    """Synthetic images served one at a time, converted as ToTensor + Normalize would convert them."""

    def __init__(self, split: Split, spec: DatasetSpec) -> None:
        self.split = split
        self.mean = torch.tensor(spec.mean).view(-1, 1, 1)
        self.std = torch.tensor(spec.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.split.images[index].float().div_(255)
        return (image - self.mean) / self.std, int(self.split.labels[index])


@dataclass(frozen=True)
class Shard:
    """Which rank of how many, and how its batches look."""

    rank: int
    world_size: int
    batch_size: int
    seed: int
    device: torch.device
    channels_last: bool


def _to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class _ShardedSplit:
    """Which images of a split this rank takes, epoch by epoch; shared by both loaders so they shard alike.

    Training: DistributedSampler, reshuffled every epoch by `set_epoch`. Evaluation: every image exactly once
    across the ranks, no padding, so summed counts cover the test split exactly.
    """

    def __init__(self, dataset_size: int, shard: Shard, train: bool) -> None:
        self.shard = shard
        self.dataset_size = dataset_size
        self.sampler: DistributedSampler | None = None
        self.eval_indices: list[int] = []
        if train:
            self.sampler = DistributedSampler(
                range(dataset_size), num_replicas=shard.world_size, rank=shard.rank, shuffle=True, seed=shard.seed
            )
        else:
            self.eval_indices = list(range(shard.rank, dataset_size, shard.world_size))

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.sampler is None:
            return self.eval_indices
        self.sampler.set_epoch(epoch)
        return list(self.sampler)


class DeviceBatches(_ShardedSplit):
    """The whole split resident on the device as uint8; a batch is one gather and one fused normalisation."""

    def __init__(self, split: Split, spec: DatasetSpec, shard: Shard, train: bool = True) -> None:
        super().__init__(len(split), shard, train)
        self.images = split.images.to(shard.device)
        self.labels = split.labels.to(shard.device)
        std = torch.tensor(spec.std, device=shard.device).view(1, -1, 1, 1)
        mean = torch.tensor(spec.mean, device=shard.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add: x * scale + shift
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    @property
    def batches_per_epoch(self) -> int:
        if self.sampler is None:
            return -(-len(self.eval_indices) // self.shard.batch_size)
        return len(self.sampler) // self.shard.batch_size  # the incomplete last batch is dropped

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = torch.tensor(self.epoch_indices(epoch), device=self.shard.device)
        size = self.shard.batch_size
        for start in range(0, self.batches_per_epoch * size, size):
            batch = indices[start : start + size]
            x = torch.addcmul(self.shift, self.images[batch].float(), self.scale)
            yield _to_memory_format(x, self.shard.channels_last), self.labels[batch]


class TorchLoaderBatches(_ShardedSplit):
    """torchvision dataset + ToTensor/Normalize per image + DataLoader: the standard, course-style path."""

    def __init__(self, dataset: Dataset, shard: Shard, workers: int, train: bool = True) -> None:
        super().__init__(len(dataset), shard, train)
        self.loader = DataLoader(
            dataset,
            batch_size=shard.batch_size,
            sampler=self.sampler if train else self.eval_indices,
            num_workers=workers,
            pin_memory=shard.device.type == "cuda",
            drop_last=train,
            persistent_workers=workers > 0,
        )

    @property
    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)  # a new shuffle per epoch, the same on every rank
        for x, y in self.loader:
            x = x.to(self.shard.device, non_blocking=True)
            yield _to_memory_format(x, self.shard.channels_last), y.to(self.shard.device, non_blocking=True)


BatchSource = DeviceBatches | TorchLoaderBatches


def split_bytes(spec: DatasetSpec, train: bool) -> int:
    size = spec.train_size if train else spec.test_size
    return size * spec.channels * spec.image_size**2


def choose_loader(requested: str, spec: DatasetSpec, device: torch.device) -> str:
    """`auto` keeps the data on the device when it takes under a quarter of the device's free memory."""
    if requested != "auto":
        return requested
    if spec.name == "imagefolder":
        return "torch"  # decoded and augmented per image, by DataLoader workers
    needed = split_bytes(spec, True) + split_bytes(spec, False)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return "device" if needed < free // 4 else "torch"
    return "device"


def build_batches(
    data: str, data_dir: str, spec: DatasetSpec, loader: str, shard: Shard, workers: int, train: bool
) -> BatchSource:
    if loader == "device":
        return DeviceBatches(load_split(data, spec, data_dir, train, shard.seed), spec, shard, train)
    if data == "synthetic":
        dataset: Dataset = _NormalizedImages(load_split(data, spec, data_dir, train, shard.seed), spec)
    elif data == "imagefolder":
        from ddp_bench.image_folder import open_image_folder

        dataset = open_image_folder(data_dir, spec, train)
    else:
        import torchvision.transforms as T

        transform = T.Compose([T.ToTensor(), T.Normalize(spec.mean, spec.std)])
        dataset = open_real_dataset(data, data_dir, train, transform)
    return TorchLoaderBatches(dataset, shard, workers, train)
