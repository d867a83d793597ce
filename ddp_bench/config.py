"""The typed configuration of one benchmark run.

`BenchConfig` is frozen and validates itself in `__post_init__`, so every object that exists is a request we
can at least try to honour. Checks that need torch or the environment (is there a GPU? is the dataset staged?)
happen later, before the process group starts; this module imports neither torch nor anything heavy, so a bad
flag is answered in milliseconds.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from ddp_bench.errors import UsageError
from ddp_bench.flag_bounds import check_bounds
from ddp_bench.model_spec import ModelSpec, parse_model_spec

DataName = Literal["synthetic", "mnist", "cifar10", "imagefolder"]
ShapeName = Literal["auto", "mnist", "cifar10"]
AmpMode = Literal["off", "bf16", "fp16"]
Tf32Mode = Literal["on", "off"]
DeviceKind = Literal["auto", "cpu", "cuda"]
BackendName = Literal["auto", "nccl", "gloo"]
LauncherName = Literal["auto", "torchrun", "slurm", "mpi", "single"]
LoaderName = Literal["auto", "torch", "device"]
ScalingKind = Literal["weak", "strong"]
LrScaling = Literal["none", "linear", "sqrt"]

DEFAULT_STEPS = 100
# --data imagefolder's crop when --image-size is not given: torchvision's classifiers' training size
DEFAULT_IMAGE_SIZE = 224


def _option(default: Any, help: str | None = None, *, hidden: bool = False, one_of: str = "") -> Any:
    """A run flag's field: its default, and for the argument parser (args.py) its help text, which may show the
    default as argparse's %(default)s; hidden keeps it out of --help; fields with the same one_of exclude each other.
    The flag is the name with dashes, its type and choices follow the annotation."""
    return dataclasses.field(default=default, metadata={"help": help, "hidden": hidden, "one_of": one_of})


@dataclass(frozen=True)
class BenchConfig:
    # a built-in network, torchvision:NAME, path/to/file.py:factory or package.module:factory (model_spec.py)
    model: str = _option(
        "mnist_cnn",
        "mnist_cnn, resnet18, resnet50, torchvision:NAME, path/to/file.py:factory or package.module:factory "
        "(a factory takes num_classes, in_channels, image_size; default: %(default)s)",
    )
    data: DataName = _option("synthetic", "dataset (default: %(default)s)")
    # Which real dataset synthetic data imitates (image shape, classes, size); auto follows the model.
    synthetic_like: ShapeName = _option(
        "auto", "real dataset whose shape synthetic data imitates (default: follows the model)"
    )
    data_dir: str = _option("data", "where real datasets are; imagefolder: DIR/train/CLASS/ (default: ./%(default)s)")
    # Synthetic data of any shape: None keeps what the model implies (the built-ins' dataset; CIFAR-10's shape for
    # other models, at the smallest size a torchvision model takes).
    image_size: int | None = _option(
        None,
        "synthetic data: image height and width (default: the model's data); imagefolder: the crop "
        f"(default {DEFAULT_IMAGE_SIZE})",
    )
    channels: int | None = _option(None, "synthetic data: image channels (default: the model's data)")
    num_classes: int | None = _option(None, "synthetic data: classes (default: the model's data)")
    batch_size: int = _option(64, "images per rank per step (default: %(default)s)")  # per rank, as in the course
    # measured steps; the default applies when neither steps nor epochs is given
    steps: int | None = _option(None, f"measured steps (default: {DEFAULT_STEPS})", one_of="length")
    epochs: int | None = _option(None, "measured epochs, with test accuracy after each", one_of="length")
    # Time to accuracy: train until the test accuracy reaches this (evaluated every epoch, and every eval_every
    # steps if given), or until max_epochs, whichever comes first.
    target_accuracy: float | None = _option(
        None, "train until the test accuracy reaches this fraction (e.g. 0.98) or --max-epochs; real data only"
    )
    eval_every: int | None = _option(None, "with --target-accuracy: also evaluate every N steps (default: epochs)")
    max_epochs: int = _option(20, "with --target-accuracy: give up after this many (default %(default)s)")
    warmup_steps: int = _option(10, "untimed steps first (default: %(default)s)")
    # None: the recipe's own (Adadelta 1.0 for mnist_cnn, SGD 0.1 for ResNets)
    lr: float | None = _option(None, "learning rate (default: the model's recipe)")
    # Larger global batches: the learning rate times global/reference (linear) or its square root (sqrt), with a
    # linear warm-up over lr_warmup_epochs for the SGD recipe. The course recipe keeps its rate (none).
    lr_scaling: LrScaling = _option(
        "none",
        "scale the learning rate with the global batch: linear or sqrt (default: %(default)s, the course recipe)",
    )
    lr_reference_batch: int = _option(64, "global batch the recipe's rate is for (default %(default)s)")
    lr_warmup_epochs: int = _option(
        1, "SGD recipes with --lr-scaling: warm the rate up linearly over this many epochs (default %(default)s)"
    )
    amp: AmpMode = _option("off", "autocast precision (default: %(default)s)")
    # fp32 math on Ampere and newer GPUs: TF32 tensor cores for matmuls and convolutions (on), or full fp32 (off)
    tf32: Tf32Mode = _option(
        "on", "fp32 on Ampere+ GPUs: TF32 tensor cores for matmuls and cuDNN convolutions (default: %(default)s)"
    )
    channels_last: bool = _option(False, "NHWC memory format for model and inputs")
    compile: bool = _option(False, "torch.compile the model (compiled during warm-up)")
    device: DeviceKind = _option("auto", "default: cuda when available")
    backend: BackendName = _option("auto", "default: nccl on GPUs, gloo on CPUs")
    launcher: LauncherName = _option("auto", "default: detected")
    loader: LoaderName = _option(
        "auto", "torch: DataLoader; device: dataset resident on the device (default: device when it fits)"
    )
    # DataLoader worker processes for --loader torch; 0 loads in the training process. None: 0, or for an image
    # folder the cores per task less one (image_folder.loader_workers)
    workers: int | None = _option(
        None,
        "DataLoader workers for --loader torch (default: 0; for --data imagefolder the cores per task less one)",
    )
    seed: int = _option(0)
    out: str = _option("results", "results directory (default: ./%(default)s)")
    tag: str = _option("", "free text stored in every row")
    # How this run belongs in a scaling series: weak keeps the per-rank batch, strong the global batch. A label
    # for the report (the sweep sets it and picks --batch-size accordingly); it changes nothing in training.
    scaling: ScalingKind = _option(
        "weak", "scaling series this run belongs to: weak (fixed per-rank batch) or strong (fixed global batch)"
    )
    sweep_key: str = _option("", hidden=True)  # set by `sweep` into its job scripts: one configuration of a sweep
    # seconds any rank waits at rendezvous or in a collective
    init_timeout: float = _option(
        180.0, "seconds to wait for all ranks, at start-up and in any collective (default: %(default)g)"
    )
    # also time the same run on synthetic data, to price the input pipeline
    compare_synthetic: bool = _option(
        False, "real data only: also time the same steps on synthetic data and record the ratio"
    )
    log_indices: bool = _option(False, "also write the dataset indices each rank trained on (rank<R>.indices.txt)")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            allowed = _literal_choices(hints[field.name])
            if allowed and getattr(self, field.name) not in allowed:
                raise UsageError(
                    f"{flag_name(field.name)} must be one of {', '.join(allowed)}, not {getattr(self, field.name)!r}"
                )
        for name in ("batch_size", "warmup_steps", "workers", "max_epochs", "lr_reference_batch", "lr_warmup_epochs"):
            value = getattr(self, name)
            if name == "workers" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"{flag_name(name)} must be an integer, not {value!r}")
        if self.steps is not None and self.epochs is not None:
            raise UsageError("give --steps or --epochs, not both")
        check_bounds({flag_name(name): getattr(self, name) for name in _BOUNDED})
        self._check_target()
        self._check_shape()
        if self.model == "mnist_cnn" and (self.image_shape_name != "mnist" or self.custom_shape):
            raise UsageError(
                "--model mnist_cnn is the course network for 1x28x28 MNIST digits; "
                "use --model resnet18 or resnet50 for cifar10"
            )
        if self.synthetic_like != "auto" and self.data != "synthetic":
            raise UsageError("--synthetic-like only applies to --data synthetic")
        if self.compare_synthetic and self.data == "synthetic":
            raise UsageError(
                "--compare-synthetic compares real data with synthetic: give --data mnist, cifar10 or imagefolder"
            )
        if not self.out:
            raise UsageError("--out must name a directory")
        if any(ch in self.tag for ch in "\n\r,"):
            raise UsageError("--tag may not contain commas or line breaks")
        if self.sweep_key and not self.sweep_key.replace("-", "").isalnum():
            raise UsageError("--sweep-key may hold only letters, digits and dashes")

    def _check_target(self) -> None:
        if self.target_accuracy is None:
            if self.eval_every is not None:
                raise UsageError("--eval-every only applies with --target-accuracy")
            return
        if not 0 < self.target_accuracy <= 1:
            raise UsageError(f"--target-accuracy is a fraction in (0, 1], such as 0.98, not {self.target_accuracy}")
        if self.data == "synthetic":
            raise UsageError(
                "--target-accuracy needs real data (--data mnist, cifar10 or imagefolder): random labels have none"
            )
        if self.steps is not None or self.epochs is not None:
            raise UsageError("--target-accuracy trains until the target or --max-epochs: drop --steps / --epochs")

    def _check_shape(self) -> None:
        parse_model_spec(self.model)  # a malformed --model is answered here, before torch is imported
        for name in ("image_size", "channels", "num_classes"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"{flag_name(name)} must be an integer, not {value!r}")
            check_bounds({flag_name(name): value})
            if self.data != "synthetic" and not (name == "image_size" and self.data == "imagefolder"):
                raise UsageError(f"{flag_name(name)} only applies to --data synthetic: real data has its own shape")
        if self.data == "imagefolder" and self.loader == "device":
            raise UsageError("--data imagefolder is decoded by DataLoader workers: use --loader torch (or auto)")
        if self.custom_shape and self.synthetic_like != "auto":
            raise UsageError("give --synthetic-like or --image-size/--channels/--num-classes, not both")

    def with_workers(self, threads: int) -> BenchConfig:
        """This configuration with the DataLoader workers decided: --workers, or for an image folder the cores this
        rank has (`threads`) less one for the training process, at least one; otherwise none."""
        if self.workers is not None:
            return self
        return dataclasses.replace(self, workers=max(1, threads - 1) if self.data == "imagefolder" else 0)

    @property
    def model_spec(self) -> ModelSpec:
        return parse_model_spec(self.model)

    @property
    def custom_shape(self) -> bool:
        """--image-size, --channels or --num-classes was given."""
        return any(value is not None for value in (self.image_size, self.channels, self.num_classes))

    @property
    def image_shape_name(self) -> str:
        """The real dataset whose image shape, classes and size this run uses (synthetic data imitates one)."""
        if self.data != "synthetic":
            return self.data
        if self.synthetic_like != "auto":
            return self.synthetic_like
        return "mnist" if self.model == "mnist_cnn" else "cifar10"

    @property
    def epoch_limit(self) -> int | None:
        """Epochs in the timed stage (at most, with a target accuracy), or None when it is measured in steps."""
        return self.max_epochs if self.target_accuracy is not None else self.epochs

    @property
    def measured_steps(self) -> int | None:
        """Steps in the timed stage, or None when the run is measured in epochs."""
        if self.epochs is not None or self.target_accuracy is not None:
            return None
        return self.steps if self.steps is not None else DEFAULT_STEPS


# Numeric fields, each checked against its flag's bounds (flag_bounds.BOUNDS).
_BOUNDED = ("batch_size", "steps", "epochs", "max_epochs", "eval_every", "warmup_steps", "workers", "seed", "lr",
            "lr_reference_batch", "lr_warmup_epochs", "init_timeout")  # fmt: skip


def _literal_choices(hint: object) -> tuple[str, ...]:
    if typing.get_origin(hint) is Literal:
        return tuple(typing.get_args(hint))
    return ()


def flag_name(field_name: str) -> str:
    """A field's flag: batch_size is --batch-size."""
    return "--" + field_name.replace("_", "-")


def choices(field_name: str) -> tuple[str, ...]:
    """The allowed values of a Literal field, for the argument parser."""
    return _literal_choices(typing.get_type_hints(BenchConfig)[field_name])
