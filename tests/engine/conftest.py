"""A tiny trained model shared by the training and evaluation tests (trained once per session)."""

import pytest

from sideman.engine.train.config import TrainConfig
from sideman.engine.train.loop import TrainResult, train

STEPS = 40


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TrainConfig:
    """2 layers x 64 wide, 40 steps on three Bach chorales (two train, one held out): seconds."""
    root = tmp_path_factory.mktemp("train")
    return TrainConfig(
        sources=("bach",), limit=3, cache_dir=str(root / "cache"), out_dir=str(root / "run"),
        workers=1, n_layer=2, n_embd=64, n_head=4, n_positions=1024, dropout=0.1,
        batch_size=8, max_len=256, steps=STEPS, minutes=None, lr=3e-3, min_lr=3e-4,
        warmup_steps=5, eval_interval=20, eval_samples=8, checkpoint_interval=20, threads=1,
    )  # fmt: skip


@pytest.fixture(scope="session")
def run(tiny) -> TrainResult:
    return train(tiny, progress=False)
