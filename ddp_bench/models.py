"""The networks: the intro-course MNIST CNN, and torchvision ResNets adapted to small images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class MnistCNN(nn.Module):
    """The PyTorch examples' MNIST network that intro courses teach, layer for layer.

    conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, max-pool 2, dropout 0.25, dense 9216->128, ReLU,
    dropout 0.5, dense 128->10, log-softmax.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        # The course returns log-probabilities and trains with nll_loss. cross_entropy on them is the same
        # loss (log_softmax is idempotent), so one loss function serves every model.
        return F.log_softmax(x, dim=1)


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if name == "mnist_cnn":
        if (in_channels, num_classes, image_size) != (1, 10, 28):
            raise ValueError("mnist_cnn takes 1x28x28 images and 10 classes")
        return MnistCNN()
    import torchvision

    constructors = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}
    model = constructors[name](weights=None, num_classes=num_classes)  # weights=None: nothing is downloaded
    if image_size < 64:
        # ImageNet's stem (7x7 stride-2 conv, then max-pool) shrinks a 28-32 px image to 8 px before the first
        # block; small-image ResNets (as for CIFAR) use a 3x3 stride-1 conv and no pooling instead.
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def lr_factor(scaling: str, global_batch: int, reference_batch: int) -> float:
    """How much to scale the recipe's rate for a global batch: global/reference (linear, Goyal et al.), its
    square root (sqrt), or not at all (none)."""
    ratio = global_batch / reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


@dataclass(frozen=True)
class Recipe:
    optimizer: torch.optim.Optimizer
    epoch_scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped once per epoch
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None  # stepped after every training step (warm-up)
    base_lr: float  # the recipe's rate, or --lr
    effective_lr: float  # base_lr scaled for the global batch: the rate training reaches after any warm-up
    name: str = ""  # which recipe, and whether the rate is its own or --lr: 'sgd-momentum:default'


# The rate of the recipe for models ddp_bench has no recipe of its own for (torchvision:NAME, the user's factory):
# SGD with momentum 0.9 and weight decay 5e-4, as for the ResNets, at a tenth of their rate (a rate that suits
# ResNets with batch norm diverges on many other networks); --lr sets another.
DEFAULT_SGD_LR = 0.01


def build_recipe(
    model_name: str, model: nn.Module, lr: float | None, factor: float = 1.0, warmup_steps: int = 0
) -> Recipe:
    """The optimizer and schedules that go with each model, the rate scaled by `factor`: the course's Adadelta for
    mnist_cnn, SGD at 0.1 for the ResNets, SGD at DEFAULT_SGD_LR for any other model.

    SGD recipes whose rate is scaled up warm it up linearly over `warmup_steps` (a large rate from the first step
    diverges); the course's Adadelta recipe has no warm-up.
    """
    if model_name == "mnist_cnn":
        # The course recipe: Adadelta at lr 1.0, decayed by 0.7 every epoch.
        base = lr or 1.0
        optimizer: torch.optim.Optimizer = torch.optim.Adadelta(model.parameters(), lr=base * factor)
        epoch_scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=1, gamma=0.7
        )
        step_scheduler = None
        name = "adadelta"
    else:
        known = model_name in ("resnet18", "resnet50")
        base = lr or (0.1 if known else DEFAULT_SGD_LR)
        name = "sgd-momentum" if known else "sgd-momentum-unknown-model"
        # Fused on GPUs: one kernel for the update, and a fused optimizer takes fp16's loss scale itself, so the
        # GradScaler does not read the inf check back to the host every step (it does for Adadelta, the course's).
        fused = next(model.parameters()).is_cuda
        optimizer = torch.optim.SGD(model.parameters(), lr=base * factor, momentum=0.9, weight_decay=5e-4, fused=fused)
        epoch_scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        step_scheduler = None
        if factor != 1.0 and warmup_steps > 0:
            step_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: min(1.0, (step + 1) / warmup_steps)
            )
    source = "--lr" if lr else "default"
    return Recipe(optimizer, epoch_scheduler, step_scheduler, base, base * factor, f"{name}:{source}")
