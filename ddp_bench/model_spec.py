"""What `--model` names: one of the built-in networks, a torchvision classification model, or the user's own
factory in a Python file or an importable module. Pure parsing (no torch import), so a malformed spec is answered
at once; loading and building happen in `user_models.py`.

- `mnist_cnn`, `resnet18`, `resnet50`: the built-in networks, with their own recipes;
- `torchvision:NAME`: `torchvision.models.get_model_builder(NAME)(weights=None, ...)`: nothing is downloaded;
- `path/to/file.py:factory`: the function `factory` in that file;
- `package.module:factory`: the function `factory` of an importable module (the checkout is on PYTHONPATH).

A factory takes `(num_classes, in_channels, image_size)` and returns an `nn.Module` mapping images to logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Literal

from ddp_bench.errors import UsageError

BUILTIN_MODELS = ("mnist_cnn", "resnet18", "resnet50")
TORCHVISION_PREFIX = "torchvision:"
SpecKind = Literal["builtin", "torchvision", "file", "module"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class ModelSpec:
    text: str  # as given to --model
    kind: SpecKind
    target: str  # the built-in or torchvision name, the file's path, or the module's dotted name
    factory: str = ""  # the function's name (file and module specs)

    @property
    def slug(self) -> str:
        """A short name fit for a run id and a progress bar: letters, digits, dashes and underscores only."""
        if self.kind == "builtin":
            return self.target
        if self.kind == "torchvision":
            return f"tv-{self.target}"
        base = self.target.rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{base}-{self.factory}")[:40]

    @property
    def is_builtin(self) -> bool:
        return self.kind == "builtin"


def parse_model_spec(text: str) -> ModelSpec:
    """The spec `--model` names, or a one-line UsageError saying what forms it takes."""
    forms = (
        f"--model takes {', '.join(BUILTIN_MODELS)}, torchvision:NAME, path/to/file.py:factory "
        "or package.module:factory"
    )
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{forms}; it was empty")
    if any(ch in text for ch in "\n\r\0"):
        raise UsageError(f"{forms}; line breaks are not allowed in it")
    if text in BUILTIN_MODELS:
        return ModelSpec(text, "builtin", text)
    if text.startswith(TORCHVISION_PREFIX):
        name = text.removeprefix(TORCHVISION_PREFIX)
        if not _IDENTIFIER.match(name):
            raise UsageError(f"--model {text}: name a torchvision classification model, e.g. torchvision:resnet18")
        return ModelSpec(text, "torchvision", name)
    target, sep, factory = text.rpartition(":")
    if not sep:
        raise UsageError(f"{forms}, not {text!r}")
    if not _IDENTIFIER.match(factory):
        raise UsageError(f"--model {text}: after the colon comes the factory function's name, not {factory!r}")
    if target.endswith(".py"):
        return ModelSpec(text, "file", target, factory)
    if _MODULE.match(target):
        return ModelSpec(text, "module", target, factory)
    raise UsageError(f"--model {text}: before the colon comes a .py file or a dotted module name, not {target!r}")


def source_sha256(spec: ModelSpec) -> str:
    """sha256 of the user's model file (file and module specs; '' for the others), found without importing it: what
    names a sweep's configuration, so that a changed model is measured again rather than found done."""
    if spec.kind == "file":
        path = spec.target
    elif spec.kind == "module":
        try:
            found = importlib.util.find_spec(spec.target)
        except (ImportError, ValueError):
            found = None
        if found is None or not found.origin or not os.path.isfile(found.origin):
            raise UsageError(f"--model {spec.text}: no module {spec.target} on the Python path here")
        path = found.origin
    else:
        return ""
    if not os.path.isfile(path):
        raise UsageError(f"--model {spec.text}: no file {path} (every node needs it at that path)")
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
