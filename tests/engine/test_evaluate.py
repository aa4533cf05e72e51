"""sideman eval: the tiny trained model measured on its held-out chorale, every section present.

The model is the session's tiny training run (tests/engine/conftest.py); the figures are checked
for consistency (counts, ground truth against itself, the random-init twin), not for quality.
"""

import json
import math

import numpy as np
import pytest

from sideman.daemon.cli import main
from sideman.engine.inference import InferenceEngine
from sideman.engine.train.config import EvalConfig, EvalConfigError
from sideman.engine.train.corpus import load_corpus, split_pieces
from sideman.engine.train.evaluate import Window, _attribute_request, _infill_window
from sideman.engine.train.report import COPY_PREVIOUS_BAR, GROUND_TRUTH, MODEL, RANDOM_INIT
from sideman.engine.vocab import ATTRIBUTE_NAMES

LEVELS = {"min_polyphony": 10, "max_polyphony": 10, "min_note_duration": 6, "max_note_duration": 6}


@pytest.fixture(scope="module")
def report(run, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    flags = ["--sources", "bach", "--limit", "3", "--cache-dir", tiny.cache_dir, "--workers", "1"]
    flags += ["--validation-samples", "8", "--adherence-samples", "1", "--infill-samples", "4"]
    assert main(["eval", str(run.bundles[0]), *flags, "--no-progress", "--out", str(out)]) == 0
    document = json.loads((out / "eval.json").read_text())
    document["markdown"] = (out / "eval.md").read_text()
    return document


def test_validation_loss_is_the_models_own_and_below_chance(report, run):
    validation = report["validation"]
    assert 0 < validation["loss_nats_per_token"] < math.log(647)  # better than uniform guessing
    assert validation["perplexity"] == pytest.approx(math.exp(validation["loss_nats_per_token"]))
    assert validation["tokens"] > 100
    assert (
        abs(validation["loss_nats_per_token"] - run.final_val_loss) < 1.0
    )  # same model, other samples
    voices = validation["voices_only"]
    assert 0 < voices["loss_nats_per_token"] < math.log(647) and voices["tokens"] > 100
    assert voices["loss_nats_per_token"] != validation["loss_nats_per_token"]  # other samples
    assert "| voices as written (no reduction, rescaling, re-articulation or holding) |" in report["markdown"]


def test_adherence_asks_every_level_of_every_melodic_attribute_of_both_systems(report):
    section = report["adherence"]
    assert set(section["systems"]) == {MODEL, RANDOM_INIT}
    for system in (MODEL, RANDOM_INIT):
        figures = section["systems"][system]
        assert {name: f["n_levels"] for name, f in figures.items()} == LEVELS
        for name, f in figures.items():
            assert f["asked"] == LEVELS[name]
            confusion = np.array(f["confusion"])
            assert confusion.sum() == f["n"] <= f["asked"]
            assert confusion.shape == (LEVELS[name], LEVELS[name])
            assert set(f["trained_levels"]) <= set(range(LEVELS[name]))
            assert f["on_trained_levels"]["n"] == confusion[f["trained_levels"]].sum()
            if f["n"]:
                rows = confusion.sum(axis=1)
                assert f["exact_accuracy"] == pytest.approx(np.trace(confusion) / f["n"])
                assert rows.max() <= 1  # one generation asked per level
    assert set(section["model_beats_random_init"]) == set(LEVELS)
    assert report["info"]["adherence_skipped"] == {
        "note_density": "the held-out pieces have no drum tracks to ask it of"
    }


def test_infill_measures_four_systems_on_the_same_cells(report):
    section = report["infill"]
    assert section["systems"] == [MODEL, RANDOM_INIT, COPY_PREVIOUS_BAR, GROUND_TRUTH]
    summary = section["summary"]
    for system in section["systems"]:
        assert summary[system]["groove_similarity"]["n"] == 4
    truth = summary[GROUND_TRUTH]
    assert truth["chroma_similarity"]["mean"] == pytest.approx(1.0)
    assert truth["groove_similarity"]["mean"] == pytest.approx(1.0)
    assert truth["pitch_range_error"]["mean"] == 0.0
    assert truth["note_density_nrmse"]["mean"] == 0.0
    assert summary[MODEL]["empty_bar"]["mean"] == 0.0  # the grammar asks fill blocks for notes
    assert set(section["closer_than_baselines"]) == {m["key"] for m in section["metrics"]}


def test_realtime_times_each_model_infill_and_the_markdown_has_every_section(report):
    ms = report["realtime"]["ms_per_bar"]
    assert ms["n"] == 4 and 0 < ms["min"] <= ms["median"] <= ms["max"]
    by_precision = report["realtime"]["by_precision"]
    assert list(by_precision)[0] == "fp32" and by_precision["fp32"] == ms
    served = InferenceEngine.from_checkpoint(report["info"]["bundle"], device="cpu", precision="auto")
    assert set(by_precision) == {"fp32", served.precision}  # serve's default precision timed too
    assert all(stats["n"] == 4 for stats in by_precision.values())
    headings = ("## Validation", "## Attribute-control adherence", "## Infill", "## Real-time")
    headings += ("Requests of the levels the training data holds",)
    for heading in headings:
        assert heading in report["markdown"]
    assert report["info"]["threads"] == 1


def test_an_attribute_request_keeps_min_below_max(run, tiny):
    pieces = load_corpus(["bach"], tiny.cache_dir, workers=1, progress=False, limit=3)
    held_out = split_pieces(pieces)[1]
    engine = InferenceEngine.from_checkpoint(run.bundles[0], device="cpu")
    window = _infill_window(np.random.default_rng(0), held_out, 4)
    whole = Window(window.piece_id, window.start_bar, window.score, window.track)
    config = EvalConfig()
    own = engine.tokenizer.compute_attributes(whole.score)[whole.track]
    assert own[ATTRIBUTE_NAMES.index("max_polyphony")] == 0  # one chorale voice: one note at a time
    asked = _attribute_request(engine, whole, "min_polyphony", 5, config, 0).tracks[0]
    assert asked.attributes["min_polyphony"] == 5 and asked.attributes["max_polyphony"] == 5
    assert asked.bars == (0, 1, 2, 3) and "note_density" not in asked.attributes
    asked = _attribute_request(engine, whole, "max_note_duration", 0, config, 0).tracks[0]
    assert asked.attributes["max_note_duration"] == 0 and asked.attributes["min_note_duration"] == 0


def test_the_engine_is_given_the_window_without_the_target(tiny):
    pieces = load_corpus(["bach"], tiny.cache_dir, workers=1, progress=False, limit=3)
    case = _infill_window(np.random.default_rng(1), split_pieces(pieces)[1], 4)
    notes, given = case.score.notes, case.prompt_score().notes
    target = (notes.track == case.track) & (notes.bar == case.bar)
    assert target.any() and len(given) == len(notes) - target.sum()
    assert not ((given.track == case.track) & (given.bar == case.bar)).any()
    assert np.array_equal(given.as_table(), notes.select(~target).as_table())
    whole = Window(case.piece_id, case.start_bar, case.score, case.track)
    assert not (whole.prompt_score().notes.track == case.track).any()


def test_bad_settings_name_their_flag(run, capsys):
    with pytest.raises(EvalConfigError, match="sections"):
        EvalConfig(sections=("speed",))
    assert main(["eval", str(run.bundles[0]), "--window-bars", "3"]) == 2
    assert (
        "--window-bars: must be a window length of the vocabulary [4, 8], got 3"
        in capsys.readouterr().err
    )
    assert main(["eval", str(run.bundles[0]), "--infill-samples", "0"]) == 2
    assert "--infill-samples: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", "no/such/model.safetensors", "--sections", "validation"]) == 2
    assert "does not exist" in capsys.readouterr().err
