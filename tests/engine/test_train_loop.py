"""sideman train: a tiny model on three Bach chorales learns, writes loadable bundles, and resumes.

The runs share one corpus cache and take a few seconds each on the 2-core dev box.
"""

import json
import math
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from sideman.daemon.cli import main
from sideman.engine.checkpoint import load_model
from sideman.engine.demo import demo_score
from sideman.engine.inference import InferenceEngine
from sideman.engine.request import GenerationRequest, InferenceConfig, TrackPrompt
from sideman.engine.train.config import TrainConfig, TrainConfigError, lr_at
from sideman.engine.train.loop import train
from sideman.engine.train.run_files import RunFileError

from .conftest import STEPS


def test_the_loss_falls(run):
    losses = run.history.train_loss
    assert len(losses) == STEPS and run.step == STEPS and run.stopped == "done"
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 1.0, (first, last)
    assert run.history.val_step == [0, 20, 40]
    assert run.history.val_loss[-1] < run.history.val_loss[0] - 1.0
    assert run.tokens_seen == run.history.train_tokens[-1] > 0


def test_the_schedule_warms_up_then_decays_to_min_lr(run, tiny):
    lr = run.history.lr
    assert lr[0] == pytest.approx(tiny.lr / tiny.warmup_steps)
    assert max(lr) == pytest.approx(tiny.lr)
    assert lr[-1] == pytest.approx(lr_at(STEPS - 1, tiny, STEPS))
    assert lr_at(STEPS, tiny, STEPS) == pytest.approx(tiny.min_lr)
    decay = lr[tiny.warmup_steps :]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))


def test_the_final_bundle_loads_in_both_formats_and_generates_a_bar(run):
    safetensors, pt = run.bundles
    assert (safetensors.name, pt.name) == ("model.safetensors", "model.pt")
    ids = torch.randint(0, 647, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = (load_model(path)[0](ids) for path in (safetensors, pt))
    assert torch.equal(a, b)

    engine = InferenceEngine.from_checkpoint(safetensors, device="cpu")
    request = GenerationRequest(
        tracks=(TrackPrompt(id=3, bars=(4,)),),
        config=InferenceConfig(seed=0, density_hard_limit=4, model_dim=4),
    )
    result = engine.session(demo_score(), request).run()
    notes = result.score.notes
    assert np.sum((notes.track == 3) & (notes.bar == 4)) <= 4


def test_the_run_writes_a_loss_curve_and_a_log(run, tiny):
    assert run.loss_curve.read_bytes().startswith(b"\x89PNG")
    document = json.loads(run.log_file.read_text())
    assert document["summary"]["step"] == STEPS and document["summary"]["stopped"] == "done"
    assert document["train_config"] == tiny.to_dict()
    assert document["model_config"]["n_embd"] == 64
    assert len(document["history"]["train_loss"]) == STEPS


def test_an_interrupted_run_saves_and_resumes_where_it_stopped(run, tiny):
    config = replace(tiny, out_dir=str(run.out_dir.parent / "interrupted"))

    def press_ctrl_c(report):
        if report.step == 20:
            signal.raise_signal(signal.SIGINT)

    first = train(config, progress=False, on_step=press_ctrl_c)
    assert first.stopped == "interrupted" and 20 <= first.step < STEPS
    assert first.checkpoint.is_file() and first.bundles[0].is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    resumed = train(config, resume=True, progress=False)
    assert resumed.stopped == "done" and resumed.step == STEPS
    assert resumed.history.train_step == list(range(1, STEPS + 1))
    # same seed, same data order, same RNG states: the resumed run continues the uninterrupted one
    assert resumed.history.train_loss == pytest.approx(run.history.train_loss, rel=1e-5)
    assert resumed.final_val_loss == pytest.approx(run.final_val_loss, rel=1e-5)


def test_a_time_budget_fixes_the_step_count_after_the_first_steps(tiny, tmp_path):
    config = replace(
        tiny, out_dir=str(tmp_path / "timed"), steps=None, minutes=0.05, eval_interval=10
    )
    result = train(config, progress=False)
    assert result.stopped == "done" and result.step == result.total_steps > 11
    assert result.train_seconds < 3 * 60 * config.minutes
    document = json.loads(result.log_file.read_text())
    assert document["summary"]["total_steps"] == result.total_steps


def test_a_run_folder_is_not_overwritten_and_resume_needs_a_checkpoint(run, tiny, tmp_path):
    with pytest.raises(RunFileError, match="already holds a training run"):
        train(tiny, progress=False)
    with pytest.raises(RunFileError, match="no training checkpoint"):
        train(replace(tiny, out_dir=str(tmp_path / "empty")), resume=True, progress=False)


def test_a_run_can_start_from_the_weights_of_a_bundle(run, tiny, tmp_path):
    start = dict(steps=1, lr=1e-12, min_lr=0.0, warmup_steps=0, eval_interval=1, dropout=0.0)
    fine = replace(tiny, out_dir=str(tmp_path / "fine"), init_from=str(run.bundles[0]), **start)
    fresh = replace(tiny, out_dir=str(tmp_path / "fresh"), **start)
    trained = load_model(run.bundles[0])[0].state_dict()
    for config, same in ((fine, True), (fresh, False)):
        result = train(config, progress=False)
        weights = load_model(result.bundles[0])[0].state_dict()
        close = all(torch.allclose(weights[k], trained[k], atol=1e-6) for k in trained)
        assert close is same
    assert json.loads((tmp_path / "fine" / "train_log.json").read_text())["train_config"][
        "init_from"
    ] == str(run.bundles[0])


def test_init_from_names_the_flag_when_the_bundle_is_missing_or_of_another_shape(run, tiny, tmp_path):
    other_shape = replace(tiny, out_dir=str(tmp_path / "a"), n_layer=1, init_from=str(run.bundles[0]))
    with pytest.raises(TrainConfigError, match="n_layer 2 \\(this run: 1\\)") as caught:
        train(other_shape, progress=False)
    assert caught.value.field == "init_from"
    missing = replace(tiny, out_dir=str(tmp_path / "b"), init_from=str(tmp_path / "none.safetensors"))
    with pytest.raises(TrainConfigError, match="does not exist"):
        train(missing, progress=False)


def test_the_config_names_the_bad_field():
    with pytest.raises(TrainConfigError, match="divisible") as caught:
        TrainConfig(n_embd=250, n_head=4)
    assert caught.value.field == "n_embd"
    with pytest.raises(TrainConfigError, match="n_positions") as caught:
        TrainConfig(max_len=2048, n_positions=1024)
    assert caught.value.field == "max_len"
    assert lr_at(0, TrainConfig(warmup_steps=0, steps=10, minutes=None), 10) == 1e-3
    assert math.isclose(lr_at(10, TrainConfig(warmup_steps=0, steps=10, minutes=None), 10), 1e-4)


def test_cli_train_runs_and_names_bad_flags(tiny, tmp_path, capsys):
    out = tmp_path / "cli-run"
    assert main(["train", "--out", str(out), "--n-embd", "250", "--n-head", "4"]) == 2
    assert "--n-embd: 250 is not divisible by n_head (4)" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--lr", "0.01"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "no training checkpoint" in capsys.readouterr().err

    flags = ["--sources", "bach", "--limit", "3", "--cache-dir", tiny.cache_dir, "--workers", "1"]
    flags += ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--max-len", "128"]
    flags += ["--batch-size", "4", "--steps", "3", "--eval-samples", "4", "--no-progress"]
    assert main(["train", "--out", str(out), *flags]) == 0
    assert "step 3: train loss" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {
        "checkpoint.pt", "model.safetensors", "model.pt", "train_log.json", "loss_curve.png"
    }  # fmt: skip


def test_the_same_command_trains_two_ranks_under_torchrun(tiny, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "sideman.daemon.cli", "train", "--out", str(out), "--sources", "bach"]
    command += ["--limit", "3", "--cache-dir", tiny.cache_dir, "--n-layer", "1", "--n-embd", "32"]
    command += ["--n-head", "2", "--max-len", "128", "--batch-size", "2", "--steps", "4"]
    command += ["--eval-samples", "2", "--threads", "1", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("step 4: train loss") == 1  # rank 0 alone reports
    summary = json.loads((out / "train_log.json").read_text())["summary"]
    assert summary["world_size"] == 2 and summary["step"] == 4
    InferenceEngine.from_checkpoint(out / "model.safetensors", device="cpu")
