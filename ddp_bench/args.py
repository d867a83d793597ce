"""The run's flags: `parse_args(argv)` turns a command line into a `BenchConfig`, and `Parser` is argparse with
one-line errors. Pure (no torch import), so every verb and the tests share it and a bad flag is answered at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ddp_bench import __version__
from ddp_bench.config import DEFAULT_STEPS, BenchConfig, choices
from ddp_bench.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but its complaints become one-line UsageErrors instead of usage text and sys.exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def build_run_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m ddp_bench",
        description="Benchmark DistributedDataParallel CNN training; writes one CSV row per rank.",
        epilog=(
            "Verbs: run (default), download, report, sweep, check, allreduce. "
            "Launch with torchrun, srun or mpiexec for several ranks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ddp_bench {__version__}")
    add = parser.add_argument
    add(
        "--model",
        default="mnist_cnn",
        help="mnist_cnn, resnet18, resnet50, torchvision:NAME, path/to/file.py:factory or package.module:factory "
        "(a factory takes num_classes, in_channels, image_size; default: mnist_cnn)",
    )
    add("--data", choices=choices("data"), default="synthetic", help="dataset (default: synthetic)")
    add(
        "--synthetic-like",
        choices=choices("synthetic_like"),
        default="auto",
        help="real dataset whose shape synthetic data imitates (default: follows the model)",
    )
    add("--data-dir", default="data", help="where real datasets are; imagefolder: DIR/train/CLASS/ (default: ./data)")
    add(
        "--image-size",
        type=_integer,
        help="synthetic data: image height and width (default: the model's data); imagefolder: the crop (default 224)",
    )
    add("--channels", type=_integer, help="synthetic data: image channels (default: the model's data)")
    add("--num-classes", type=_integer, help="synthetic data: classes (default: the model's data)")
    add("--batch-size", type=_integer, default=64, help="images per rank per step (default: 64)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_integer, help=f"measured steps (default: {DEFAULT_STEPS})")
    length.add_argument("--epochs", type=_integer, help="measured epochs, with test accuracy after each")
    add(
        "--target-accuracy",
        type=float,
        help="train until the test accuracy reaches this fraction (e.g. 0.98) or --max-epochs; real data only",
    )
    add("--eval-every", type=_integer, help="with --target-accuracy: also evaluate every N steps (default: epochs)")
    add("--max-epochs", type=_integer, default=20, help="with --target-accuracy: give up after this many (default 20)")
    add("--warmup-steps", type=_integer, default=10, help="untimed steps first (default: 10)")
    add("--lr", type=float, help="learning rate (default: the model's recipe)")
    add(
        "--lr-scaling",
        choices=choices("lr_scaling"),
        default="none",
        help="scale the learning rate with the global batch: linear or sqrt (default: none, the course recipe)",
    )
    add("--lr-reference-batch", type=_integer, default=64, help="global batch the recipe's rate is for (default 64)")
    add(
        "--lr-warmup-epochs",
        type=_integer,
        default=1,
        help="SGD recipes with --lr-scaling: warm the rate up linearly over this many epochs (default 1)",
    )
    add("--amp", choices=choices("amp"), default="off", help="autocast precision (default: off)")
    add(
        "--tf32",
        choices=choices("tf32"),
        default="on",
        help="fp32 on Ampere+ GPUs: TF32 tensor cores for matmuls and cuDNN convolutions (default: on)",
    )
    add("--channels-last", action="store_true", help="NHWC memory format for model and inputs")
    add("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    add("--device", choices=choices("device"), default="auto", help="default: cuda when available")
    add("--backend", choices=choices("backend"), default="auto", help="default: nccl on GPUs, gloo on CPUs")
    add("--launcher", choices=choices("launcher"), default="auto", help="default: detected")
    add(
        "--loader",
        choices=choices("loader"),
        default="auto",
        help="torch: DataLoader; device: dataset resident on the device (default: device when it fits)",
    )
    add(
        "--workers",
        type=_integer,
        help="DataLoader workers for --loader torch (default: 0; for --data imagefolder the cores per task less one)",
    )
    add("--seed", type=_integer, default=0)
    add("--out", default="results", help="results directory (default: ./results)")
    add("--tag", default="", help="free text stored in every row")
    add(
        "--scaling",
        choices=choices("scaling"),
        default="weak",
        help="scaling series this run belongs to: weak (fixed per-rank batch) or strong (fixed global batch)",
    )
    add("--sweep-key", default="", help=argparse.SUPPRESS)  # written by `sweep` into its job scripts
    add(
        "--init-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for all ranks, at start-up and in any collective (default: 180)",
    )
    add(
        "--compare-synthetic",
        action="store_true",
        help="real data only: also time the same steps on synthetic data and record the ratio",
    )
    add(
        "--log-indices",
        action="store_true",
        help="also write the dataset indices each rank trained on (rank<R>.indices.txt)",
    )
    return parser


def parse_args(argv: Sequence[str]) -> BenchConfig:
    args = build_run_parser().parse_args(list(argv))
    return BenchConfig(**vars(args))
