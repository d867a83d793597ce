"""`--data imagefolder --data-dir DIR`: the user's own images in torchvision's ImageFolder layout, DIR/train/CLASS/*
and DIR/val/CLASS/*, decoded and augmented on the CPU by DataLoader workers: the pipeline where a run can truly be
loader-bound.

Before anything trains, every rank lists both splits and opens every image's header (PIL's verify: no decoding),
so a directory without images or with a file that is not a readable image ends in one line and exit 2 instead of
a worker crashing mid-run. That costs one pass over the files' bytes: stage the folder to node-local disk first,
as the job scripts do for the course's datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ddp_bench.config import BenchConfig
from ddp_bench.dataset_spec import DatasetSpec
from ddp_bench.errors import UsageError

IMAGEFOLDER = "imagefolder"
# ImageNet's statistics: the usual normalisation for photographs, and what torchvision's models expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FolderListing:
    classes: list[str]
    train: int  # images
    val: int  # images; 0 when there is no val/


def split_root(data_dir: str, train: bool) -> str:
    return os.path.join(data_dir, "train" if train else "val")


def list_folder(data_dir: str, need_val: bool) -> FolderListing:
    """Both splits' classes and image counts, every image's header checked; a one-line UsageError otherwise."""
    if not os.path.isdir(split_root(data_dir, True)):
        raise UsageError(
            f"--data imagefolder needs {split_root(data_dir, True)}/CLASS/ folders of images (and val/ beside it)"
        )
    train = _checked_dataset(data_dir, True)
    if not os.path.isdir(split_root(data_dir, False)):
        if need_val:
            raise UsageError(f"evaluating needs {split_root(data_dir, False)}/CLASS/ folders of images")
        return FolderListing(train.classes, len(train), 0)
    val = _checked_dataset(data_dir, False)
    if val.classes != train.classes:
        raise UsageError(
            f"{split_root(data_dir, False)} has classes {', '.join(val.classes[:5])}..., train/ has "
            f"{', '.join(train.classes[:5])}...: both splits need the same class folders"
        )
    return FolderListing(train.classes, len(train), len(val))


def _checked_dataset(data_dir: str, train: bool):
    import torchvision
    from PIL import Image

    root = split_root(data_dir, train)
    try:
        dataset = torchvision.datasets.ImageFolder(root)
    except FileNotFoundError as exc:  # no class folders, or no image files in them
        raise UsageError(f"no images under {root} ({str(exc).splitlines()[0]})") from None
    bad = []
    for path, _label in dataset.samples:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError is an OSError
            bad.append((path, exc))
    if bad:
        path, exc = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UsageError(f"{path} is not a readable image: {type(exc).__name__}: {str(exc)[:120]}{more}")
    return dataset


def folder_spec(cfg: BenchConfig, image_size: int) -> DatasetSpec:
    listing = list_folder(cfg.data_dir, need_val=cfg.epoch_limit is not None)
    return DatasetSpec(IMAGEFOLDER, 3, image_size, len(listing.classes), MEAN, STD, listing.train, listing.val)


def open_image_folder(data_dir: str, spec: DatasetSpec, train: bool):
    """The split as a dataset of (normalised tensor, class): training images randomly cropped and flipped (decoded
    and augmented in the DataLoader's workers), validation images resized and centre-cropped."""
    import torchvision
    import torchvision.transforms as T

    size = spec.image_size
    if train:
        steps = [T.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(size, antialias=True), T.CenterCrop(size)]
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    return torchvision.datasets.ImageFolder(split_root(data_dir, train), transform=transform)
