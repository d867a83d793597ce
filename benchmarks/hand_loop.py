"""The loop a user writes by hand, as its own process: the yardstick of benchmarks/whole_process_cost.py.

    python benchmarks/hand_loop.py --data synthetic|mnist [--data-dir DIR] [--steps 150] [--warmup 10]

The course CNN (ddp_bench's MnistCNN, layer for layer the PyTorch example), Adadelta at lr 1.0, batch 64, the
training images normalised once and held in memory as one tensor, shuffled each epoch. Prints the images/s of
the timed steps (warm-up excluded) and nothing else.
"""

from __future__ import annotations

import argparse
import os
import time

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=("synthetic", "mnist"), default="synthetic")
    parser.add_argument("--data-dir", default=os.path.join("data"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    images, labels = training_images(args.data, args.data_dir)
    torch.manual_seed(0)
    model = MnistCNN()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    model.train()

    def batches():
        while True:
            order = torch.randperm(len(labels))
            for start in range(0, len(labels) - args.batch_size + 1, args.batch_size):
                index = order[start : start + args.batch_size]
                yield images[index], labels[index]

    stream = batches()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            started = time.perf_counter()
        x, y = next(stream)
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(model(x), y).backward()
        optimizer.step()
    print(f"{args.steps * args.batch_size / (time.perf_counter() - started):.1f}")


if __name__ == "__main__":
    main()
