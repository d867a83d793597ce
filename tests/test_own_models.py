"""The user's own network (--model path/to/file.py:factory, package.module:factory) and any torchvision
classification model (--model torchvision:NAME), through the real command line: rows that name the model by its
identity, and one line with exit 2 for every model that cannot run."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.rank_rows import read_rows
from tests.helpers.runs import clean_env, run_cli, run_torchrun

TINY = os.path.join("tests", "models", "tiny_net.py")
SMALL = ["--device", "cpu", "--steps", "3", "--warmup-steps", "1", "--batch-size", "4"]
# RegNets cannot be built on the meta device (their constructor computes widths from tensors): their check builds
# them for real (gigabytes for the largest, 5-10 s each for the rest on two cores), so all but the two smallest are
# left to the slow tier.
HEAVY_FAMILY = "regnet_"
KEPT = {"regnet_x_400mf", "regnet_y_400mf"}


def _tiny_params(num_classes: int, channels: int, size: int) -> int:
    """The tiny model's parameter count, built the way a user would build it."""
    spec = importlib.util.spec_from_file_location("tiny_net_for_counting", os.path.join(ROOT, TINY))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sum(p.numel() for p in module.build(num_classes, channels, size).parameters())


@pytest.mark.long
def test_a_user_model_file_trains_on_two_ranks_and_rows_name_it(tmp_path):
    out = tmp_path / "runs"
    args = ["--model", f"{TINY}:build", *SMALL, "--image-size", "16", "--channels", "1", "--num-classes", "5"]
    done = run_torchrun(2, [*args, "--out", str(out)], env=clean_env(), timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(out)
    assert [row["rank"] for row in rows] == ["0", "1"]
    with open(os.path.join(ROOT, TINY), "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()
    params = _tiny_params(5, 1, 16)
    for row in rows:
        assert row["model"] == f"{TINY}:build"
        assert row["model_sha256"] == sha
        assert int(row["model_params"]) == params
        assert int(row["grad_bytes"]) == 4 * params  # fp32 gradients
        assert (row["input_shape"], row["num_classes"]) == ("1x16x16", "5")
        assert row["recipe"] == "sgd-momentum-unknown-model:default"
        assert float(row["lr"]) == 0.01
        assert row["schema_version"] == "3"
        assert int(row["steps"]) == 3
    assert "tiny_net-build-w2" in rows[0]["run_id"]


@pytest.mark.long
def test_a_module_factory_with_lr_records_the_recipe(tmp_path):
    out = tmp_path / "runs"
    args = ["--model", "tests.models.tiny_net:build", *SMALL, "--lr", "0.05", "--out", str(out)]
    done = run_cli(args, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(out)
    assert row["recipe"] == "sgd-momentum-unknown-model:--lr"
    assert float(row["lr"]) == 0.05
    assert (row["input_shape"], row["num_classes"]) == ("3x32x32", "10")  # CIFAR-10's shape by default
    assert int(row["model_params"]) == _tiny_params(10, 3, 32)


@pytest.mark.long
def test_builtin_models_keep_their_recipes_and_have_no_source_hash(tmp_path):
    out = tmp_path / "runs"
    done = run_cli(["--model", "mnist_cnn", *SMALL, "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(out)
    assert (row["model"], row["model_sha256"], row["recipe"]) == ("mnist_cnn", "", "adadelta:default")
    assert (row["input_shape"], row["num_classes"], int(row["model_params"])) == ("1x28x28", "10", 1_199_882)


BAD_MODELS = [
    (f"{TINY}:wrong_shape", [], "returned (2, 11) for a dry batch of 2 3x32x32 images"),
    (f"{TINY}:raises", [], "the factory raised ValueError: this factory cannot make 10 classes"),
    (f"{TINY}:not_a_module", [], "the factory returned a str, not an nn.Module"),
    (f"{TINY}:missing", [], "has no 'missing'"),
    ("tests/models/no_such_file.py:build", [], "no file tests/models/no_such_file.py"),
    ("no_such_package.models:build", [], "no module no_such_package on the Python path"),
    ("torchvision:resnet_18", [], "torchvision has no classification model of that name; did you mean"),
    ("torchvision:inception_v3", ["--image-size", "32"], "cannot take 3x32x32 images"),
    ("torchvision:resnet18", ["--channels", "1"], "takes 3-channel (RGB) images, and this data has 1"),
    ("torchvision:", [], "name a torchvision classification model"),
    ("model.py", [], "--model takes mnist_cnn, resnet18, resnet50, torchvision:NAME"),
]


@pytest.mark.long
@pytest.mark.parametrize(("spec", "extra", "message"), BAD_MODELS, ids=[spec for spec, _, _ in BAD_MODELS])
def test_a_model_that_cannot_run_is_one_line_and_nothing_is_written(tmp_path, spec, extra, message):
    out = tmp_path / "runs"
    done = run_cli(["--model", spec, *SMALL, *extra, "--out", str(out)], cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("ddp_bench: error: ") and message in lines[-1], lines[-1]
    assert not out.exists()
    if spec.endswith(":raises"):  # the user's traceback, and none of ours
        shown = "\n".join(lines[:-1])
        assert "tiny_net.py" in shown and "in _helper" in shown
        assert "ddp_bench" + os.sep not in shown and "site-packages" not in shown
    else:
        assert len(lines) == 1, done.stderr


@pytest.mark.long
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "regnet_y_400mf", "vit_b_32"])
def test_torchvision_models_train_through_the_command_line(tmp_path, name):
    out = tmp_path / "runs"
    args = ["--model", f"torchvision:{name}", *SMALL, "--batch-size", "2", "--steps", "1", "--out", str(out)]
    done = run_cli(args)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(out)
    assert row["model"] == f"torchvision:{name}" and len(row["model_sha256"]) == 64
    assert row["input_shape"] == "3x32x32"  # the smallest size these take
    assert int(row["grad_bytes"]) == 4 * int(row["model_params"]) > 0


def _every_torchvision_model():
    from ddp_bench.torchvision_models import classification_models

    heavy = [name for name in classification_models() if name.startswith(HEAVY_FAMILY) and name not in KEPT]
    return [pytest.param(name, marks=pytest.mark.slow) if name in heavy else name for name in classification_models()]


@pytest.mark.long
@pytest.mark.parametrize("name", _every_torchvision_model())
def test_every_listed_torchvision_model_takes_a_size_or_says_why_not(name):
    """Each model --model torchvision: lists runs a forward and backward pass at batch 2 at the smallest size it
    takes (on the meta device where its constructor can run there); the sizes it refuses say why in one line."""
    from ddp_bench.torchvision_models import PROBE_SIZES, refusal, smallest_size

    size = smallest_size(name, 10)
    assert refusal(name, 10, size) == ""
    for smaller in PROBE_SIZES[: PROBE_SIZES.index(size)]:
        reason = refusal(name, 10, smaller)
        assert reason and "\n" not in reason, (name, smaller)


@pytest.mark.long
def test_the_report_and_proposal_tell_two_versions_of_one_model_file_apart(tmp_path):
    """The same spec from a file that changed between runs: two series, each named by its sha256 in the report and in
    the Proposal's table and text (the Proposal is written once a series has two counts: the first version's)."""
    model = tmp_path / "net.py"
    runs = tmp_path / "runs"
    with open(os.path.join(ROOT, TINY), encoding="utf-8") as handle:
        source = handle.read()
    titles = []
    for version, counts in ((source, (1, 2)), (source + "\n# tuned\n", (1,))):
        model.write_text(version, encoding="utf-8")
        titles.append(f"net.py:build (sha256 {hashlib.sha256(version.encode()).hexdigest()[:12]}, ")
        for count in counts:
            args = ["--model", f"{model}:build", *SMALL, "--out", str(runs)]
            done = run_torchrun(count, args) if count > 1 else run_cli(args)
            assert done.returncode == 0, done.stderr[-2000:]
    report = tmp_path / "report"
    done = run_cli(["report", str(runs), "--out", str(report)])
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (report / "summary.md").read_text(encoding="utf-8")
    proposal = (report / "proposal.md").read_text(encoding="utf-8")
    headings = [line for line in summary.splitlines() if line.startswith("## local · ")]
    assert len(headings) == 2 and all(any(t in h for h in headings) for t in titles), headings
    for title in titles:
        assert title in proposal
        assert f"We measured {model}:build (sha256" in proposal or f"of {model}:build (sha256" in proposal


def _sweep_keys(model, results):
    args = ["sweep", "--cluster", "generic", "--gpus", "1,2", "--dry-run", "--results", str(results)]
    done = run_cli([*args, "--", "--model", f"{model}:build", "--steps", "20"])
    assert done.returncode == 0, done.stderr[-2000:]
    return re.findall(r"--sweep-key (g\d+-[0-9a-f]+)", done.stdout)


def test_a_sweep_names_the_model_files_version_and_refuses_a_missing_file(tmp_path):
    model = tmp_path / "net.py"
    model.write_text(open(os.path.join(ROOT, TINY), encoding="utf-8").read(), encoding="utf-8")
    first = _sweep_keys(model, tmp_path / "r")
    assert len(first) == 2 and first == _sweep_keys(model, tmp_path / "r")  # the same file: the same configuration
    model.write_text(model.read_text(encoding="utf-8") + "\n# tuned\n", encoding="utf-8")
    changed = _sweep_keys(model, tmp_path / "r")
    assert len(changed) == 2 and not set(changed) & set(first)  # a changed model is a new configuration
    done = run_cli(["sweep", "--cluster", "generic", "--gpus", "1", "--dry-run", "--", "--model", "gone.py:build"])
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "ddp_bench: error: --model gone.py:build: no file gone.py (every node needs it at that path)"
    )
