"""How the report names a model and its input: the identity rows carry since schema 2 (the spec, its source file's
sha256, its parameter count, the input shape), and what rows of schema 1 imply for it. pandas only."""

from __future__ import annotations

import pandas as pd

IMPLIED_SHAPES = ("mnist", "cifar10")  # data whose name says its shape


def fill_schema_1_shape(frame: pd.DataFrame) -> None:
    """Rows of schema 1 have no input_shape or num_classes: they are what schema 1's code trained on, so that a
    series measured across the change stays one series. MNIST and CIFAR-10 give their own shapes; synthetic data
    had the mnist_cnn's MNIST shape or the ResNets' CIFAR-10 shape (--synthetic-like, which changed it, is not in
    those rows); every dataset had 10 classes."""
    old = frame["input_shape"] == ""
    if not old.any():
        return
    mnist = (frame["data"] == "mnist") | ((frame["data"] == "synthetic") & (frame["model"] == "mnist_cnn"))
    frame.loc[old, "input_shape"] = mnist[old].map({True: "1x28x28", False: "3x32x32"})
    frame.loc[old & (frame["num_classes"] == ""), "num_classes"] = "10"


def model_identity(row: pd.Series) -> str:
    """The model as the report names it: the spec, and for models outside ddp_bench its source file's sha256 (first
    12 hex digits) and parameter count, which tell two versions of one file apart."""
    sha = row.get("model_sha256", "")
    if not isinstance(sha, str) or not sha:
        return str(row["model"])
    params = row.get("model_params", float("nan"))
    count = ""
    if params == params:  # not NaN
        count = f", {params / 1e6:.3g} M parameters" if params >= 1e6 else f", {int(params):,} parameters"
    return f"{row['model']} (sha256 {sha[:12]}{count})"


def shape_suffix(row: pd.Series) -> str:
    """The input shape where the data's name does not imply it (synthetic data, an image folder)."""
    shape = row.get("input_shape", "")
    implied = row.get("data") in IMPLIED_SHAPES
    return f" {shape}" if isinstance(shape, str) and shape and not implied else ""
