"""Shared test set-up: deterministic torch threading for reproducible numerics."""

import torch

torch.set_num_threads(1)
