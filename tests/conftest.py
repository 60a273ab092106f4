"""Shared test setup: the machine has 2 cores shared between engineers, so stay single-threaded."""

import torch

torch.set_num_threads(1)
