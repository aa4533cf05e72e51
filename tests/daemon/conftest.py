"""Daemon test fixtures: a tiny checkpoint bundle and a ``sideman serve`` child process."""

import pytest
import torch

from sideman.engine.checkpoint import save_bundle
from sideman.engine.model import GPT2, ModelConfig
from sideman.engine.vocab import EncoderConfig

from .oscclient import DaemonProcess, OscTestClient

TINY = ModelConfig(vocab_size=647, n_positions=1024, n_embd=64, n_layer=2, n_head=4)
# A random model writes up to ~2,000 tokens a bar unless capped; these keep a job well under a second.
FAST_PARAMS = ("--param", "density_hard_limit=8", "--param", "model_dim=4", "--param", "polyphony_hard_limit=2")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    model = GPT2(TINY)
    model.init_weights(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("daemon-models") / "tiny.safetensors"
    save_bundle(path, model, TINY, EncoderConfig.yellow())
    return path


@pytest.fixture(scope="module")
def daemon(tiny_model, tmp_path_factory):
    """One daemon per test module; tests re-initialise the session they use."""
    save_dir = tmp_path_factory.mktemp("saves")
    proc = DaemonProcess("--model", str(tiny_model), "--save-dir", str(save_dir), *FAST_PARAMS)
    proc.save_dir = save_dir
    yield proc
    code = proc.stop()
    assert code == 0, "".join(proc.stderr_lines)[-3000:]


@pytest.fixture
def client(daemon):
    c = OscTestClient(daemon.address)
    yield c
    c.close()
