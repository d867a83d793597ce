"""The shape of the images a run trains on: a real dataset's, or synthetic data of the shape the model implies or
`--image-size`, `--channels` and `--num-classes` ask for."""

from __future__ import annotations

from ddp_bench.config import DEFAULT_IMAGE_SIZE, BenchConfig
from ddp_bench.dataset_spec import SPECS, DatasetSpec

# Synthetic data of a shape no real dataset here has: as many images as CIFAR-10 has, but no more than fit in this
# many bytes (the training split is generated whole, on every rank): 1,782 images at 3 x 224 x 224.
SYNTHETIC_TRAIN_BYTES = 256 * 2**20


def input_spec(cfg: BenchConfig) -> DatasetSpec:
    """The image shape, classes and split sizes this run uses."""
    if cfg.data == "imagefolder":
        from ddp_bench.image_folder import folder_spec

        size = cfg.image_size or DEFAULT_IMAGE_SIZE
        if cfg.image_size is None and cfg.model_spec.kind == "torchvision":
            size = max(size, _smallest_size(cfg.model_spec.target, 10))
        return folder_spec(cfg, size)
    base = SPECS[cfg.image_shape_name]
    if cfg.data != "synthetic":
        return base
    size = cfg.image_size
    model = cfg.model_spec
    if size is None and model.kind == "torchvision" and (cfg.channels or 3) == 3:
        size = _smallest_size(model.target, cfg.num_classes or base.num_classes)
    shape = (cfg.channels or base.channels, size or base.image_size, cfg.num_classes or base.num_classes)
    if shape == (base.channels, base.image_size, base.num_classes):
        return base
    return synthetic_spec(base, *shape)


def _smallest_size(name: str, num_classes: int) -> int:
    from ddp_bench.torchvision_models import smallest_size  # torchvision: only for its models

    return smallest_size(name, num_classes)


def synthetic_spec(base: DatasetSpec, channels: int, image_size: int, num_classes: int) -> DatasetSpec:
    """Synthetic data of any shape: `base`'s normalisation where the channels agree (0.5 / 0.25 otherwise), and
    its split sizes, capped at SYNTHETIC_TRAIN_BYTES for the training split (the test split a sixth of that)."""
    per_image = channels * image_size * image_size
    train = max(1, min(base.train_size, SYNTHETIC_TRAIN_BYTES // per_image))
    test = max(1, min(base.test_size, train // 6))
    same = channels == base.channels
    mean = base.mean if same else (0.5,) * channels
    std = base.std if same else (0.25,) * channels
    name = f"{channels}x{image_size}x{image_size}"
    return DatasetSpec(name, channels, image_size, num_classes, mean, std, train, test)


def synthetic_like(spec: DatasetSpec) -> DatasetSpec:
    """Synthetic data shaped as `spec` (for --compare-synthetic), no larger than SYNTHETIC_TRAIN_BYTES."""
    return synthetic_spec(spec, spec.channels, spec.image_size, spec.num_classes)


def shape_label(spec: DatasetSpec) -> str:
    """'3x32x32': the row's input_shape."""
    return f"{spec.channels}x{spec.image_size}x{spec.image_size}"
