"""--data imagefolder: the user's own images (train/ and val/ class folders), made here as a few hundred small PNGs,
decoded by DataLoader workers; bad folders end in one line and exit 2; a decode cost makes the run loader-bound."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tests.helpers.paths import ROOT
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_cli, run_torchrun

MODEL = ["--model", os.path.join(ROOT, "tests", "models", "tiny_net.py") + ":build"]
SMALL = ["--device", "cpu", "--image-size", "16", "--warmup-steps", "2", "--batch-size", "8"]
COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200)}


def make_folder(root, train_per_class=100, val_per_class=25, side=20, noise=40, seed=0):
    """train/ and val/ with one folder per colour, each image that colour plus noise: learnable in an epoch."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(np.array(colour) + rng.integers(-noise, noise, (side, side, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")
    return root


@pytest.mark.long
def test_an_image_folder_trains_on_two_ranks_with_workers(tmp_path):
    data = make_folder(tmp_path / "images")
    out = tmp_path / "runs"
    args = [*MODEL, "--data", "imagefolder", "--data-dir", str(data), *SMALL, "--steps", "4", "--workers", "1"]
    done = run_torchrun(2, [*args, "--out", str(out)], timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(out)
    assert [row["rank"] for row in rows] == ["0", "1"]
    for row in rows:
        assert (row["data"], row["loader"], row["workers"]) == ("imagefolder", "torch", "1")
        assert (row["input_shape"], row["num_classes"], row["dataset_size"]) == ("3x16x16", "2", "200")
        assert int(row["steps"]) == 4 and float(row["data_wait_median_ms"]) >= 0


@pytest.mark.long
def test_workers_default_to_the_cores_per_task_less_one(tmp_path):
    data = make_folder(tmp_path / "images", train_per_class=20, val_per_class=4)
    out = tmp_path / "runs"
    done = run_cli(
        [*MODEL, "--data", "imagefolder", "--data-dir", str(data), *SMALL, "--steps", "2", "--out", str(out)]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(out)
    assert int(row["workers"]) == max(1, int(row["threads"]) - 1)


@pytest.mark.long
def test_target_accuracy_on_the_val_split_and_the_synthetic_comparison(tmp_path):
    data = make_folder(tmp_path / "images")
    out = tmp_path / "runs"
    args = [*MODEL, "--data", "imagefolder", "--data-dir", str(data), *SMALL, "--batch-size", "16", "--lr", "0.05"]
    args += ["--target-accuracy", "0.9", "--max-epochs", "6", "--compare-synthetic", "--out", str(out)]
    done = run_cli(args, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(out)
    assert row["reached"] == "True" and float(row["test_accuracy"]) >= 0.9
    assert float(row["synthetic_images_per_s"]) > 0 and float(row["data_pipeline_ratio"]) > 0
    (run_dir,) = [path for path in out.iterdir() if path.is_dir()]
    assert (run_dir / "accuracy.csv").read_text().count("\n") >= 2  # header and at least one evaluation (on val/)


def _garbage(root):
    (root / "train" / "red" / "7.png").write_bytes(b"not a png at all")


def _empty(root):
    for split in ("train", "val"):
        for name in COLOURS:
            for path in (root / split / name).iterdir():
                path.unlink()


BAD_FOLDERS = [
    ("no-train", lambda root: os.rename(root / "train", root / "training"), [], "needs"),
    ("no-images", _empty, [], "no images under"),
    ("unreadable", _garbage, [], "7.png is not a readable image: UnidentifiedImageError"),
    ("too-few", lambda root: None, ["--batch-size", "300"], "larger than the 200 training images"),
    ("device-loader", lambda root: None, ["--loader", "device"], "decoded by DataLoader workers"),
    ("channels", lambda root: None, ["--channels", "1"], "--channels only applies to --data synthetic"),
]


@pytest.mark.long
@pytest.mark.parametrize(("case", "spoil", "extra", "message"), BAD_FOLDERS, ids=[case for case, *_ in BAD_FOLDERS])
def test_a_bad_image_folder_is_one_line_and_nothing_is_written(tmp_path, case, spoil, extra, message):
    data = make_folder(tmp_path / "images")
    spoil(data)
    out = tmp_path / "runs"
    args = [*MODEL, "--data", "imagefolder", "--data-dir", str(data), *SMALL, "--steps", "2", *extra]
    done = run_cli([*args, "--out", str(out)])
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddp_bench: error: ") and message in lines[0], done.stderr
    assert not out.exists()


@pytest.mark.long
def test_a_decode_cost_makes_the_run_loader_bound(tmp_path):
    """Large noisy PNGs (768 x 768, barely compressible: about 8 ms each to decode here) cropped to 16 px for a tiny
    model: the step waits for its batch far longer than it computes, and the verdict says so. The decoding runs in
    the training process (--workers 0): on these two shared cores a worker process would take its cores from the
    training thread, and the decode cost would show as slower steps instead of waits (see docs/own-models.md)."""
    rng = np.random.default_rng(1)
    for name in COLOURS:
        folder = tmp_path / "slow" / "train" / name
        folder.mkdir(parents=True)
        for index in range(16):
            pixels = rng.integers(0, 256, (768, 768, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png", compress_level=1)
    out = tmp_path / "runs"
    args = [*MODEL, "--data", "imagefolder", "--data-dir", str(tmp_path / "slow"), *SMALL, "--steps", "4"]
    args += ["--batch-size", "16", "--workers", "0", "--out", str(out)]
    # one compute thread: on shared cores a second one's spin-waits would make the tiny step as slow as the decode
    done = run_cli(args, timeout=180, env=clean_env(OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(out)
    assert float(row["data_wait_median_ms"]) > float(row["step_time_median_ms"])
    assert row["verdict"] == "loader-bound"
