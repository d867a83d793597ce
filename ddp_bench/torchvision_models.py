"""`--model torchvision:NAME`: any classification model torchvision lists, built with `weights=None` (nothing is
downloaded), and which image sizes it takes.

torchvision's classifiers are ImageNet networks for 3-channel images: data with another channel count is refused.
Some need a least image size (inception_v3 and maxvit_t 224 px and more here, alexnet 64); the Vision Transformers
take the size as a constructor argument (a multiple of their patch). Whether a model takes a size is found by a dry
forward pass on the meta device (no memory, no arithmetic), so nothing here depends on a table that could go stale.
"""

from __future__ import annotations

import difflib
import warnings

import torch
from torch import nn

from ddp_bench.errors import UsageError

# Sizes tried, smallest first, when the model sets the size of synthetic data: CIFAR-10's, then up to Inception's.
PROBE_SIZES = (32, 64, 96, 128, 160, 192, 224, 256, 299)
PROBE_BATCH = 2  # batch norm in training mode needs more than one value per channel


def classification_models() -> list[str]:
    """Every classification model torchvision lists (detection, segmentation and video models are not)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _kwargs(name: str, num_classes: int, image_size: int) -> dict:
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size  # ViTs build their position embedding for one size
    if name in ("inception_v3", "googlenet"):
        # Their auxiliary heads return a tuple in training mode; the benchmark trains the main head. init_weights
        # keeps today's initialisation without the warning that the default will change.
        kwargs.update(aux_logits=False, init_weights=True)
    return kwargs


def build_torchvision(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The model, or a one-line UsageError: an unknown name, or data it cannot take."""
    import torchvision

    names = classification_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"one of {', '.join(names)}"
        raise UsageError(f"--model torchvision:{name}: torchvision has no classification model of that name; {hint}")
    if in_channels != 3:
        raise UsageError(
            f"--model torchvision:{name} takes 3-channel (RGB) images, and this data has {in_channels}: "
            "use --data cifar10, an RGB image folder, or --channels 3"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torchvision.models.get_model_builder(name)(**_kwargs(name, num_classes, image_size))


def refusal(name: str, num_classes: int, image_size: int) -> str:
    """Why torchvision:NAME cannot take 3 x size x size images ('' when it can), from a dry forward pass and a
    backward on the meta device (on the CPU for models whose constructor cannot run on meta)."""
    try:
        with torch.device("meta"):
            model = build_torchvision(name, num_classes, 3, image_size)
        device = torch.device("meta")
    except NotImplementedError:  # a constructor that copies data (regnet's): a real build instead
        model = build_torchvision(name, num_classes, 3, image_size)
        device = torch.device("cpu")
    except (ValueError, AssertionError, RuntimeError) as exc:  # a ViT size that is no multiple of its patch
        return _first_line(exc)
    try:
        out = model(torch.zeros(PROBE_BATCH, 3, image_size, image_size, device=device))
        out.sum().backward()
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        return _first_line(exc)
    return ""


def smallest_size(name: str, num_classes: int) -> int:
    """The smallest of PROBE_SIZES the model takes, or a UsageError saying why it takes none."""
    reason = ""
    for size in PROBE_SIZES:
        reason = refusal(name, num_classes, size)
        if not reason:
            return size
    raise UsageError(f"--model torchvision:{name} took none of the image sizes {PROBE_SIZES} ({reason})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
