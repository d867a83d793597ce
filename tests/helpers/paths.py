"""Where things are: the checkout's root, the venv's bin directory, and the variable naming real MNIST."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
# Real MNIST digits for the accuracy tests: set DDP_BENCH_MNIST_DIR to a directory holding MNIST/raw/.
MNIST_ENV = "DDP_BENCH_MNIST_DIR"
