"""The loop a user writes by hand, as its own process: the yardstick of benchmarks/whole_process_cost.py and of
benchmarks/gpu_first_contact.py.

    python benchmarks/hand_loop.py --data synthetic|mnist [--data-dir DIR] [--steps 150] [--warmup 10]
        [--device cpu|cuda] [--loop tensor|course]

The course CNN (ddp_bench's MnistCNN, layer for layer the PyTorch example), Adadelta at lr 1.0, batch 64, fp32.
`--loop tensor` (the default): the training images normalised once and held in memory as one tensor (on the
device), shuffled each epoch. `--loop course`: the intro course's own loop, torchvision MNIST with ToTensor +
Normalize and DataLoader(shuffle=True), each batch moved to the device as the course does. Prints the images/s of
the timed steps (warm-up excluded; on a GPU the device is synchronised before each clock read) and nothing else.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ddp_bench.models import MnistCNN


def training_images(data: str, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    if data == "mnist":
        from torchvision.datasets import MNIST

        split = MNIST(data_dir, train=True, download=False)
        images, labels = split.data, split.targets
    else:  # the very images ddp_bench's synthetic data holds
        from ddp_bench.data import SPECS, load_split

        split = load_split("synthetic", SPECS["mnist"], "", train=True, seed=0)
        images, labels = split.images.reshape(-1, 28, 28), split.labels
    return ((images.float() / 255 - 0.1307) / 0.3081).unsqueeze(1), labels


def tensor_batches(data: str, data_dir: str, batch: int, device: torch.device) -> Iterator[tuple]:
    images, labels = training_images(data, data_dir)
    images, labels = images.to(device), labels.to(device)
    while True:
        order = torch.randperm(len(labels), device=device)
        for start in range(0, len(labels) - batch + 1, batch):
            index = order[start : start + batch]
            yield images[index], labels[index]


def course_batches(data_dir: str, batch: int, device: torch.device) -> Iterator[tuple]:
    """The course's loop: a DataLoader over torchvision's MNIST, transformed image by image on the CPU."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(datasets.MNIST(data_dir, train=True, transform=transform),
                                         batch_size=batch, shuffle=True)  # fmt: skip
    while True:
        for x, y in loader:
            yield x.to(device), y.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=("synthetic", "mnist"), default="synthetic")
    parser.add_argument("--data-dir", default=os.path.join("data"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--loop", choices=("tensor", "course"), default="tensor")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.loop == "course":
        stream = course_batches(args.data_dir, args.batch_size, device)
    else:
        stream = tensor_batches(args.data, args.data_dir, args.batch_size, device)
    model = MnistCNN().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    model.train()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)  # the warm-up's queued work is not counted
            started = time.perf_counter()
        x, y = next(stream)
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(model(x), y).backward()
        optimizer.step()
    synchronize(device)
    print(f"{args.steps * args.batch_size / (time.perf_counter() - started):.1f}")


if __name__ == "__main__":
    main()
