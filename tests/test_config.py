"""Tier 1 (pure): flags become a validated BenchConfig, or one clear UsageError."""

import dataclasses
import re

import pytest

from ddp_bench.args import parse_args
from ddp_bench.config import DEFAULT_STEPS, BenchConfig
from ddp_bench.errors import UsageError


def test_defaults_are_the_course_setup_on_synthetic_data():
    cfg = parse_args([])
    assert cfg.model == "mnist_cnn"
    assert cfg.data == "synthetic"
    assert cfg.batch_size == 64
    assert cfg.warmup_steps > 0
    assert cfg.measured_steps == DEFAULT_STEPS
    assert cfg.image_shape_name == "mnist"
    assert (cfg.amp, cfg.device, cfg.backend, cfg.launcher, cfg.out) == ("off", "auto", "auto", "auto", "results")


def test_every_flag_reaches_the_config():
    cfg = parse_args(
        "--model resnet18 --data cifar10 --data-dir /d --batch-size 32 --epochs 3 --warmup-steps 2 --lr 0.05 "
        "--amp bf16 --channels-last --compile --device cpu --backend gloo --launcher single --loader torch "
        "--workers 2 --seed 7 --out /o --tag hello --scaling strong --init-timeout 30 --log-indices".split()
    )
    assert cfg == BenchConfig(
        model="resnet18",
        data="cifar10",
        data_dir="/d",
        batch_size=32,
        epochs=3,
        warmup_steps=2,
        lr=0.05,
        amp="bf16",
        channels_last=True,
        compile=True,
        device="cpu",
        backend="gloo",
        launcher="single",
        loader="torch",
        workers=2,
        seed=7,
        out="/o",
        tag="hello",
        scaling="strong",
        init_timeout=30.0,
        log_indices=True,
    )
    assert cfg.measured_steps is None


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_args([]).batch_size = 1  # type: ignore[misc]


def test_resnet_synthetic_data_imitates_cifar10_unless_told():
    assert parse_args(["--model", "resnet50"]).image_shape_name == "cifar10"
    assert parse_args(["--model", "resnet50", "--synthetic-like", "mnist"]).image_shape_name == "mnist"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--model", "vgg16"], "--model"),
        (["--data", "imagenet"], "--data"),
        (["--launcher", "pbs"], "--launcher"),
        (["--amp", "fp8"], "--amp"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--batch-size", "-3"], "--batch-size must be positive"),
        (["--batch-size", "many"], "not an integer"),
        (["--steps", "0"], "--steps must be positive"),
        (["--epochs", "-1"], "--epochs must be positive"),
        (["--workers", "-1"], "--workers must be zero or more"),
        (["--warmup-steps", "-1"], "--warmup-steps must be zero or more"),
        (["--steps", "5", "--epochs", "1"], "not allowed with argument"),
        (["--lr", "0"], "--lr must be positive"),
        (["--init-timeout", "0"], "--init-timeout must be positive"),
        (["--data", "cifar10"], "mnist_cnn is the course network"),
        (["--data", "mnist", "--synthetic-like", "cifar10"], "--synthetic-like only applies"),
        (["--tag", "a,b"], "--tag may not contain commas"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_raise_one_clear_usage_error(argv, fragment):
    with pytest.raises(UsageError) as raised:
        parse_args(argv)
    message = str(raised.value)
    assert fragment in message
    assert "\n" not in message


def test_the_dataclass_validates_without_the_parser():
    with pytest.raises(UsageError, match="give --steps or --epochs, not both"):
        BenchConfig(steps=3, epochs=1)
    with pytest.raises(UsageError, match="--device must be one of auto, cpu, cuda"):
        BenchConfig(device="tpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--target-accuracy", "0.97"], "--target-accuracy needs real data"),
        (["--data", "mnist", "--target-accuracy", "0"], "--target-accuracy is a fraction in (0, 1]"),
        (["--data", "mnist", "--target-accuracy", "1.2"], "--target-accuracy is a fraction in (0, 1]"),
        (["--data", "mnist", "--target-accuracy", "0.9", "--epochs", "2"], "drop --steps / --epochs"),
        (["--data", "mnist", "--target-accuracy", "0.9", "--max-epochs", "0"], "--max-epochs must be positive"),
        (["--data", "mnist", "--target-accuracy", "0.9", "--eval-every", "0"], "--eval-every must be positive"),
        (["--eval-every", "10"], "--eval-every only applies with --target-accuracy"),
        (["--lr-scaling", "cubic"], "invalid choice"),
        (["--lr-reference-batch", "0"], "--lr-reference-batch must be positive"),
        (["--lr-warmup-epochs", "-1"], "--lr-warmup-epochs must be zero or more"),
    ],
)
def test_time_to_accuracy_and_lr_scaling_flags_are_checked(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_args(argv)


def test_a_target_accuracy_measures_epochs_up_to_the_limit():
    cfg = parse_args(["--data", "mnist", "--target-accuracy", "0.98", "--max-epochs", "7", "--eval-every", "25"])
    assert (cfg.epoch_limit, cfg.measured_steps, cfg.eval_every, cfg.lr_scaling) == (7, None, 25, "none")
