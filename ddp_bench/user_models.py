"""Building the network `--model` names, checking it on a dry batch before anything trains, and its identity.

Every rank builds the model itself (from the same file: the row's sha256 says which), before the process group
starts and before anything is written, so a model that cannot be loaded, raises, or returns the wrong shape ends
the run in one line and exit 2. An exception raised in the user's own code is shown with the traceback lines of the
user's files only: not ddp_bench's, torch's or importlib's.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from ddp_bench.dataset_spec import DatasetSpec
from ddp_bench.errors import UsageError
from ddp_bench.model_spec import ModelSpec
from ddp_bench.models import build_model
from ddp_bench.torchvision_models import build_torchvision

DRY_BATCH = 2


@dataclass(frozen=True)
class ModelIdentity:
    """Where the model came from, for the rows: the report groups series by it."""

    spec: str  # --model as given
    source_sha256: str  # sha256 of the file that defines the factory or torchvision builder; '' for the built-ins
    params: int  # parameters
    grad_bytes: int  # bytes of gradient DDP all-reduces each step (trainable parameters x their element size)


@dataclass(frozen=True)
class BuiltModel:
    module: nn.Module
    identity: ModelIdentity


def build_checked_model(spec: ModelSpec, data: DatasetSpec) -> BuiltModel:
    """The model for this data on the CPU, checked on a dry batch, with its identity; a UsageError otherwise."""
    if spec.kind == "builtin":
        model = build_model(spec.target, data.channels, data.num_classes, data.image_size)
        return BuiltModel(model, identity_of(spec, model, ""))
    if spec.kind == "torchvision":
        import torchvision

        model = build_torchvision(spec.target, data.num_classes, data.channels, data.image_size)
        builder = torchvision.models.get_model_builder(spec.target)
        _dry_batch(spec, model, data, user_code=False)
        return BuiltModel(
            model, identity_of(spec, model, _sha256(inspect.getsourcefile(inspect.unwrap(builder)) or ""))
        )
    factory, source = load_factory(spec)
    try:
        model = factory(data.num_classes, data.channels, data.image_size)
    except Exception as exc:  # the user's code: any exception it raises is the user's to see
        raise _user_error(f"--model {spec.text}: the factory raised {_one_line(exc)}", exc) from None
    if not isinstance(model, nn.Module):
        kind = type(model).__name__
        raise UsageError(f"--model {spec.text}: the factory returned a {kind}, not an nn.Module")
    _dry_batch(spec, model, data, user_code=True)
    return BuiltModel(model, identity_of(spec, model, _sha256(source)))


def load_factory(spec: ModelSpec) -> tuple[object, str]:
    """The factory function, and the path of the file that defines it."""
    module = _load_file(spec) if spec.kind == "file" else _load_module(spec)
    factory = getattr(module, spec.factory, None)
    if factory is None:
        raise UsageError(f"--model {spec.text}: {spec.target} has no {spec.factory!r}")
    if not callable(factory):
        raise UsageError(f"--model {spec.text}: {spec.factory!r} in {spec.target} is not a function")
    return factory, inspect.getsourcefile(factory) or module.__file__ or ""


def _load_file(spec: ModelSpec) -> ModuleType:
    path = os.path.abspath(spec.target)
    if not os.path.isfile(path):
        raise UsageError(f"--model {spec.text}: no file {spec.target} (every node needs it at that path)")
    name = f"ddp_bench_user_model_{hashlib.sha256(path.encode()).hexdigest()[:12]}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"--model {spec.text}: {spec.target} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # so that pickling and dataclasses in the user's file find their module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: a syntax error or anything its top level raises
        del sys.modules[name]
        raise _user_error(f"--model {spec.text}: importing {spec.target} raised {_one_line(exc)}", exc) from None
    return module


def _load_module(spec: ModelSpec) -> ModuleType:
    try:
        return importlib.import_module(spec.target)
    except ModuleNotFoundError as exc:
        if exc.name and spec.target.startswith(exc.name):
            raise UsageError(
                f"--model {spec.text}: no module {exc.name} on the Python path (is the checkout on PYTHONPATH?)"
            ) from None
        raise _user_error(f"--model {spec.text}: importing {spec.target} raised {_one_line(exc)}", exc) from None
    except Exception as exc:  # the user's module raised on import
        raise _user_error(f"--model {spec.text}: importing {spec.target} raised {_one_line(exc)}", exc) from None


def _dry_batch(spec: ModelSpec, model: nn.Module, data: DatasetSpec, user_code: bool) -> None:
    """One forward pass on DRY_BATCH zero images in eval mode without gradients (no batch-norm statistics move, no
    random numbers are drawn): the output must be logits, (DRY_BATCH, num_classes)."""
    images = torch.zeros(DRY_BATCH, data.channels, data.image_size, data.image_size)
    shape = f"{data.channels}x{data.image_size}x{data.image_size}"
    model.eval()
    try:
        with torch.no_grad():
            out = model(images)
    except Exception as exc:  # the model's forward: user code, or a torchvision model refusing the size
        message = f"--model {spec.text} cannot take {shape} images: {_one_line(exc)}"
        if not user_code:
            raise UsageError(message) from None
        raise _user_error(message, exc) from None
    finally:
        model.train()
    expected = (DRY_BATCH, data.num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"--model {spec.text} returned {got} for a dry batch of {DRY_BATCH} {shape} images; "
            f"it must return logits of shape {expected}"
        )


def identity_of(spec: ModelSpec, model: nn.Module, source_sha256: str) -> ModelIdentity:
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    return ModelIdentity(
        spec.text,
        source_sha256,
        sum(p.numel() for p in params),
        sum(p.numel() * p.element_size() for p in trainable),
    )


def _sha256(path: str) -> str:
    if not path:
        return ""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# Frames from these are not the user's: ddp_bench itself, torch and torchvision, and importlib's machinery.
_NOT_USER = tuple(os.path.dirname(os.path.abspath(path)) + os.sep for path in (__file__, torch.__file__) if path)


def _user_error(message: str, exc: BaseException) -> UsageError:
    """A UsageError whose detail is the traceback of exc through the user's own files only."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<frozen", *_NOT_USER)) and "torchvision" not in frame.filename
    ]
    lines = traceback.format_list(frames)
    if isinstance(exc, SyntaxError) and exc.filename:  # the line that does not parse is the whole story
        lines.append(f'  File "{exc.filename}", line {exc.lineno}\n    {(exc.text or "").strip()}\n')
    detail = "".join(["Traceback (the model's code):\n", *lines]) if lines else ""
    return UsageError(message, detail)
