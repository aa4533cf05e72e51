"""The ``sideman`` command line: tokens, generate and their user-facing errors."""

import json
import shutil
import subprocess
import sys

import mido
import numpy as np
import pytest
import torch

from sideman.daemon.cli import main
from sideman.engine.checkpoint import save_bundle
from sideman.engine.demo import demo_score
from sideman.engine.model import GPT2, ModelConfig, int8_is_available
from sideman.engine.score import Score
from sideman.engine.tokenizer import Tokenizer
from sideman.engine.vocab import EncoderConfig

TINY = ModelConfig(vocab_size=647, n_positions=1024, n_embd=64, n_layer=2, n_head=4)


@pytest.fixture
def demo_midi(tmp_path):
    path = tmp_path / "demo.mid"
    demo_score().to_midi(path)
    return path


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    model = GPT2(TINY)
    model.init_weights(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_bundle(path, model, TINY, EncoderConfig.yellow())
    return path


def test_tokens_prints_the_files_ids_as_json(demo_midi, capsys):
    assert main(["tokens", str(demo_midi), "--window-bars", "8", "--describe"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = Tokenizer(EncoderConfig.yellow()).encode_score(Score.from_midi(demo_midi), window_bars=8)
    assert out["ids"] == expected.tolist()
    assert out["n_bars"] == 8 and out["n_tracks"] == 4
    assert out["tokens"][:2] == ["PieceStart(0)", "NumBars(1)"]


def test_tokens_console_script_runs(demo_midi):
    script = shutil.which("sideman") or str(__import__("pathlib").Path(sys.executable).with_name("sideman"))
    done = subprocess.run([script, "tokens", str(demo_midi)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ids"][0] == 0


def test_tokens_refuses_a_window_outside_the_vocabulary(demo_midi, capsys):
    assert main(["tokens", str(demo_midi), "--window-bars", "5"]) == 2
    assert "num_bars_map" in capsys.readouterr().err


def test_tokens_names_the_bar_with_an_unknown_meter(tmp_path, capsys):
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.MetaMessage("time_signature", numerator=5, denominator=16, time=1920))
    track.append(mido.Message("note_on", note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=240))
    midi.tracks.append(track)
    path = tmp_path / "odd.mid"
    midi.save(path)
    assert main(["tokens", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bar 1" in err and "5/16" in err and "--skip-unknown-meters" in err
    assert main(["tokens", str(path), "--skip-unknown-meters", "--window-bars", "4"]) == 0


def test_tokens_reports_an_unreadable_file(tmp_path, capsys):
    path = tmp_path / "not.mid"
    path.write_bytes(b"this is not midi")
    assert main(["tokens", str(path)]) == 2
    assert "not.mid" in capsys.readouterr().err


def test_generate_infills_the_requested_bars(demo_midi, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out.mid"
    code = main(["generate", str(demo_midi), str(out), "--track", "3", "--bars", "4-5", "--model", str(tiny_bundle),
                 "--model-dim", "4", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    before, after = Score.from_midi(demo_midi), Score.from_midi(out)
    assert after.n_tracks == before.n_tracks
    for bar in (0, 1, 2, 3, 6, 7):
        sel_b = (before.notes.track == 3) & (before.notes.bar == bar)
        sel_a = (after.notes.track == 3) & (after.notes.bar == bar)
        assert np.array_equal(before.notes.select(sel_b).as_table(), after.notes.select(sel_a).as_table())
    assert np.any((after.notes.track == 3) & (after.notes.bar == 4))
    assert "generated 2 bar(s)" in capsys.readouterr().out


def test_generate_demo_writes_its_input_first(tiny_bundle, tmp_path):
    inp, out = tmp_path / "in.mid", tmp_path / "out.mid"
    assert main(["generate", "--demo", str(inp), str(out), "--track", "3", "--bars", "6-7", "--model",
                 str(tiny_bundle), "--device", "cpu"]) == 0
    assert inp.exists() and out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--track", "9"], "--track 9: the file has 4 tracks"),
        (["--bars", "4-40"], "bars"),
        (["--model", "no-such-model"], "no model named 'no-such-model'"),
        (["--top-p", "1.5"], "top_p"),
    ],
)
def test_generate_errors_are_one_line_with_the_fix(demo_midi, tiny_bundle, tmp_path, capsys, args, message):
    model = [] if "--model" in args else ["--model", str(tiny_bundle)]
    code = main(["generate", str(demo_midi), str(tmp_path / "o.mid"), "--device", "cpu", *model, *args])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("sideman: error:") and message in err
    assert "Traceback" not in err


def test_bad_bar_ranges_are_refused_by_the_parser(demo_midi, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", str(demo_midi), str(tmp_path / "o.mid"), "--bars", "7-4"])
    assert "bars must look like" in capsys.readouterr().err


def test_generate_respects_the_density_limit(demo_midi, tiny_bundle, tmp_path):
    out = tmp_path / "capped.mid"
    assert main(["generate", str(demo_midi), str(out), "--track", "0", "--bars", "4-7", "--autoregressive",
                 "--density-limit", "2", "--model", str(tiny_bundle), "--device", "cpu"]) == 0
    notes = Score.from_midi(out).notes
    for bar in range(4, 8):
        assert 1 <= np.count_nonzero((notes.track == 0) & (notes.bar == bar)) <= 2


def test_tokens_into_a_closed_pipe_exits_quietly(tmp_path):
    from sideman.engine.bench import synthetic_score

    big = tmp_path / "big.mid"  # ~1 MB of JSON: far more than a pipe buffer
    synthetic_score(np.random.default_rng(0), n_bars=400, n_tracks=4, notes_per_bar=13).to_midi(big)
    script = shutil.which("sideman") or str(__import__("pathlib").Path(sys.executable).with_name("sideman"))
    done = subprocess.run(f"'{script}' tokens '{big}' | head -c 10", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout == '{"file": "'
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_cli_precision_choices_match_the_model():
    from sideman.daemon import cli
    from sideman.engine.model import PRECISIONS

    assert cli.PRECISIONS == PRECISIONS


@pytest.mark.skipif(not int8_is_available(), reason="this torch build has no int8 linear ops")
def test_generate_with_int8_precision(demo_midi, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out.mid"
    code = main(["generate", str(demo_midi), str(out), "--track", "3", "--bars", "4", "--model", str(tiny_bundle),
                 "--model-dim", "4", "--device", "cpu", "--precision", "int8"])
    assert code == 0, capsys.readouterr().err
    after = Score.from_midi(out)
    assert np.any((after.notes.track == 3) & (after.notes.bar == 4))
