"""Evaluation metrics and the eval report: hand-computed cases for every figure."""

import json
import math

import numpy as np
import pytest

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.tokenizer import Tokenizer
from sideman.engine.train.metrics import (
    BarHashIndex,
    Key,
    MetricInputError,
    adherence,
    attribute_level_counts,
    chroma_similarity,
    copies_context,
    estimate_key,
    groove_similarity,
    in_key_ratio,
    infill_sample_metrics,
    note_density_nrmse,
    onset_histogram,
    pitch_range_error,
    realised_levels,
    scale_consistency,
    split_bars,
)
from sideman.engine.train.report import (
    COPY_PREVIOUS_BAR,
    GROUND_TRUTH,
    MODEL,
    RANDOM_INIT,
    InfillComparison,
    build_report,
    render_markdown,
    summarise,
)
from sideman.engine.vocab import EncoderConfig

C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71]
C_MAJOR_TRIAD = [60, 64, 67]


def bar(rows, track: int = 0, bar_index: int = 0) -> NoteArrays:
    """A bar from (onset, duration, pitch) rows."""
    return NoteArrays.from_rows([(track, bar_index, o, d, p, 100) for o, d, p in rows])


# ---- chroma, groove, density, range ------------------------------------------------------
def test_chroma_of_identical_bars_is_one_and_ignores_octave_and_voicing():
    assert chroma_similarity(C_MAJOR_TRIAD, C_MAJOR_TRIAD) == pytest.approx(1.0)
    assert chroma_similarity(C_MAJOR_TRIAD, [48, 76, 79]) == pytest.approx(1.0)


def test_chroma_of_a_triad_and_its_transposition():
    assert chroma_similarity(C_MAJOR_TRIAD, [p + 2 for p in C_MAJOR_TRIAD]) == 0.0  # D-F#-A
    assert chroma_similarity(C_MAJOR_TRIAD, [57, 60, 64]) == pytest.approx(2 / 3)  # A minor


def test_chroma_counts_repeated_pitch_classes():
    # (2, 1) on C, E against (1, 1): cos = 3 / (√5 · √2)
    assert chroma_similarity([60, 72, 64], [60, 64]) == pytest.approx(3 / math.sqrt(10))


def test_chroma_accepts_note_arrays_and_defines_empty_inputs():
    assert chroma_similarity(bar([(0, 12, 60)]), [72]) == pytest.approx(1.0)
    assert chroma_similarity([], []) == 1.0
    assert chroma_similarity([], C_MAJOR_TRIAD) == 0.0


def test_onset_histogram_bins_positions_in_the_bar():
    np.testing.assert_array_equal(onset_histogram([0, 12, 13, 47], 48, 4), [1, 2, 0, 1])
    np.testing.assert_array_equal(onset_histogram([0, 0, 24], 48, 2, binary=True), [1, 1])
    assert len(onset_histogram([5], 48)) == 48  # one bin per tick by default


def test_groove_similarity_is_the_cosine_of_onset_histograms():
    quarters, halves = [0, 12, 24, 36], [0, 24]
    assert groove_similarity(quarters, quarters, 48, 16) == pytest.approx(1.0)
    assert groove_similarity(quarters, halves, 48, 16) == pytest.approx(1 / math.sqrt(2))
    assert groove_similarity([12, 36], halves, 48, 16) == 0.0
    assert groove_similarity([], [], 48) == 1.0
    assert groove_similarity([0], [], 48) == 0.0


def test_groove_rejects_a_bar_without_ticks():
    with pytest.raises(MetricInputError, match="bar_ticks"):
        groove_similarity([0], [0], 0)


def test_note_density_nrmse_is_rmse_over_the_reference_mean():
    assert note_density_nrmse([2, 4], [2, 4]) == 0.0
    assert note_density_nrmse([2, 4], [1, 3]) == pytest.approx(0.5)  # rmse 1 / mean 2
    assert note_density_nrmse([1, 2, 3], [1, 1, 1]) == pytest.approx(math.sqrt(5 / 3))
    assert math.isnan(note_density_nrmse([1.0], [0.0]))
    with pytest.raises(MetricInputError):
        note_density_nrmse([1, 2], [1])


def test_pitch_range_error_averages_the_low_and_high_bound_errors():
    assert pitch_range_error(C_MAJOR_TRIAD, [67, 60, 64]) == 0.0
    assert pitch_range_error(C_MAJOR_TRIAD, [p + 2 for p in C_MAJOR_TRIAD]) == 2.0
    assert pitch_range_error([60, 67], [55, 72]) == 5.0
    assert pitch_range_error([], []) == 0.0
    assert math.isnan(pitch_range_error([], [60]))


# ---- keys and scales ---------------------------------------------------------------------
def test_in_key_ratio_of_c_major_and_chromatic_scales_under_c_major():
    c_major = Key(0, "major")
    assert in_key_ratio(C_MAJOR_SCALE, c_major) == 1.0
    assert in_key_ratio(range(60, 72), c_major) == pytest.approx(7 / 12)
    assert in_key_ratio(range(60, 72), [0, 2, 4, 5, 7, 9, 11]) == pytest.approx(7 / 12)
    assert math.isnan(in_key_ratio([], c_major))


def test_key_pitch_classes_and_names():
    assert Key(0, "major").pitch_classes == {0, 2, 4, 5, 7, 9, 11}
    assert Key(9, "minor").pitch_classes == Key(0, "major").pitch_classes
    assert Key(9, "minor").name == "A minor"
    with pytest.raises(MetricInputError, match="tonic"):
        Key(12, "major")


def test_key_estimate_of_a_major_scale_is_its_major_key_in_every_transposition():
    assert estimate_key(C_MAJOR_SCALE) == Key(0, "major")
    for shift in range(12):
        assert estimate_key([p + shift for p in C_MAJOR_SCALE]) == Key(shift, "major")


def test_key_estimate_weights_note_arrays_by_duration():
    # A natural-minor line dwelling on A, C and E is heard as A minor.
    line = bar([(0, 24, 57), (24, 3, 59), (27, 12, 60), (39, 3, 62), (42, 12, 64), (54, 3, 65)])
    assert estimate_key(line) == Key(9, "minor")
    assert estimate_key([]) is None
    assert estimate_key(range(60, 72)) is None  # chromatic: no preference


def test_scale_consistency_is_the_best_scale_share():
    assert scale_consistency(C_MAJOR_SCALE) == 1.0
    assert scale_consistency([p + 5 for p in C_MAJOR_SCALE]) == 1.0
    assert scale_consistency(range(60, 72)) == pytest.approx(7 / 12)
    assert scale_consistency([60, 61]) == 1.0  # C and C# fit C# major (B#)
    assert math.isnan(scale_consistency([]))


# ---- copies and memorisation -------------------------------------------------------------
def test_bar_index_finds_a_bar_regardless_of_note_order_and_velocity():
    index = BarHashIndex()
    index.add(bar([(0, 12, 60), (0, 12, 64), (24, 6, 67)]))
    again = NoteArrays.from_rows(
        [(3, 9, 24, 6, 67, 20), (3, 9, 0, 12, 64, 1), (3, 9, 0, 12, 60, 5)]
    )
    assert index.contains(again)
    assert not index.contains(bar([(0, 12, 60), (0, 12, 64), (24, 12, 67)]))
    assert len(index) == 1


def test_bar_index_finds_a_transposition_only_when_asked():
    index = BarHashIndex()
    index.add(bar([(0, 12, 60), (12, 12, 64)]))
    up_a_fourth = bar([(0, 12, 65), (12, 12, 69)])
    assert not index.contains(up_a_fourth)
    assert index.contains(up_a_fourth, any_transposition=True)
    assert not index.contains(bar([(0, 12, 65), (12, 12, 70)]), any_transposition=True)


def test_bar_index_without_durations_matches_drum_bars():
    index = BarHashIndex(use_duration=False)
    index.add(bar([(0, 1, 36), (12, 1, 38)]))
    assert index.contains(bar([(0, 12, 36), (12, 6, 38)]))


def test_bar_index_adds_every_track_and_bar_and_never_stores_rests():
    piece = NoteArrays.from_rows(
        [(0, 0, 0, 12, 60, 90), (0, 1, 0, 12, 62, 90), (1, 0, 6, 6, 40, 90), (1, 0, 18, 6, 43, 90)]
    )
    index = BarHashIndex()
    assert index.add_bars(piece) == 3
    assert index.contains(bar([(6, 6, 40), (18, 6, 43)]))
    assert [len(b) for b in split_bars(piece)] == [1, 1, 2]
    index.add(NoteArrays.empty())
    assert not index.contains(NoteArrays.empty())
    assert len(index) == 3


def test_copies_context_compares_with_each_context_bar():
    context = NoteArrays.from_rows(
        [(1, 0, 0, 12, 48, 80), (1, 1, 0, 24, 50, 80), (0, 0, 0, 48, 72, 80)]
    )
    assert copies_context(bar([(0, 24, 50)]), context)
    assert copies_context(bar([(0, 24, 50)]), [bar([(0, 12, 48)]), bar([(0, 24, 50)])])
    assert not copies_context(bar([(0, 24, 52)]), context)
    assert copies_context(bar([(0, 24, 52)]), context, any_transposition=True)
    assert not copies_context(NoteArrays.empty(), [NoteArrays.empty()])


# ---- attribute adherence -----------------------------------------------------------------
def test_adherence_on_a_hand_built_confusion():
    figures = adherence([0, 0, 1, 1, 2, 2], [0, 1, 1, 3, 2, 0], n_levels=4)
    assert figures["n"] == 6
    assert figures["exact_accuracy"] == pytest.approx(3 / 6)
    assert figures["within_one_accuracy"] == pytest.approx(4 / 6)
    assert figures["mean_abs_distance"] == pytest.approx(5 / 6)
    assert figures["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_adherence_names_the_level_out_of_range_and_handles_no_samples():
    with pytest.raises(MetricInputError, match=r"realised_levels\[1\] = 6"):
        adherence([0, 1], [0, 6], n_levels=6)
    empty = adherence([], [], n_levels=2)
    assert math.isnan(empty["exact_accuracy"]) and empty["confusion"] == [[0, 0], [0, 0]]


def test_realised_levels_are_the_engines_attribute_analysis():
    tokenizer = Tokenizer(EncoderConfig.yellow())
    notes = NoteArrays.from_rows(
        [
            (0, 0, 0, 12, 60, 100),
            (0, 0, 0, 12, 64, 100),
            (0, 0, 24, 6, 67, 80),
            (1, 0, 0, 1, 36, 100),
        ]
    )
    score = Score(12, [(4, 4)], [TrackInfo(program=0), TrackInfo(is_drum=True)], notes)
    levels = realised_levels(tokenizer, score)
    expected = tokenizer.compute_attributes(score)
    assert list(levels) == [
        "min_polyphony",
        "max_polyphony",
        "min_note_duration",
        "max_note_duration",
        "note_density",
    ]
    for a, name in enumerate(levels):
        np.testing.assert_array_equal(levels[name], expected[:, a])
    assert levels["max_polyphony"][0] == 1  # two notes sound together → bin 1
    assert levels["note_density"][1] == 0 and levels["min_polyphony"][1] == -1
    assert attribute_level_counts(tokenizer.config) == {
        "min_polyphony": 10,
        "max_polyphony": 10,
        "min_note_duration": 6,
        "max_note_duration": 6,
        "note_density": 10,
    }


# ---- one infill sample -------------------------------------------------------------------
def test_infill_sample_of_the_ground_truth_against_itself():
    reference = bar([(0, 12, 60), (12, 12, 64), (24, 24, 67)])
    context = [bar([(0, 48, 48)], track=1)]
    row = infill_sample_metrics(
        reference,
        reference,
        bar_ticks=48,
        beats_per_bar=4,
        context_bars=context,
        key=Key(0, "major"),
    )
    assert row["chroma_similarity"] == pytest.approx(1.0)
    assert row["groove_similarity"] == pytest.approx(1.0)
    assert row["notes_per_beat"] == row["reference_notes_per_beat"] == 0.75
    assert row["in_key_ratio"] == 1.0 and row["scale_consistency"] == 1.0
    assert row["pitch_range_error"] == 0.0
    assert row["copies_context"] == 0.0 and row["empty_bar"] == 0.0
    assert math.isnan(row["memorised"])


def test_infill_sample_flags_a_copy_and_a_memorised_bar_and_skips_pitch_for_drums():
    previous = bar([(0, 1, 36), (24, 1, 38)], bar_index=0)
    training = BarHashIndex(use_duration=False)
    training.add(previous)
    generated = bar([(0, 4, 36), (24, 4, 38)], bar_index=1)
    reference = bar([(0, 4, 36), (12, 4, 42), (24, 4, 38), (36, 4, 42)], bar_index=1)
    row = infill_sample_metrics(
        generated,
        reference,
        bar_ticks=48,
        beats_per_bar=4,
        context_bars=[previous],
        is_drum=True,
        training_index=training,
        groove_bins=4,
    )
    assert row["copies_context"] == 1.0 and row["memorised"] == 1.0
    assert row["groove_similarity"] == pytest.approx(1 / math.sqrt(2))
    assert all(
        math.isnan(row[k]) for k in ("chroma_similarity", "in_key_ratio", "pitch_range_error")
    )


# ---- aggregation and report --------------------------------------------------------------
def sample(chroma, groove, density, reference_density, in_key, copies):
    return {
        "chroma_similarity": chroma,
        "groove_similarity": groove,
        "notes_per_beat": density,
        "reference_notes_per_beat": reference_density,
        "in_key_ratio": in_key,
        "scale_consistency": in_key,
        "pitch_range_error": 1 - chroma,
        "copies_context": copies,
        "memorised": 0.0,
        "empty_bar": 0.0,
    }


@pytest.fixture
def comparison() -> InfillComparison:
    return InfillComparison(
        {
            MODEL: [sample(0.9, 0.8, 2, 2, 0.9, 0.0), sample(0.7, 0.6, 1, 2, 1.0, 0.0)],
            RANDOM_INIT: [sample(0.2, 0.1, 5, 2, 0.5, 0.0), sample(0.4, 0.3, 0, 2, 0.6, 1.0)],
            COPY_PREVIOUS_BAR: [
                sample(0.85, 0.9, 2, 2, 1.0, 1.0),
                sample(0.6, 0.9, 2, 2, 1.0, 1.0),
            ],
            GROUND_TRUTH: [sample(1.0, 1.0, 2, 2, 0.95, 0.0), sample(1.0, 1.0, 2, 2, 0.95, 0.0)],
        }
    )


def test_summarise_gives_mean_and_sample_std_of_finite_values():
    assert summarise([1.0, 3.0, float("nan")]) == {
        "mean": 2.0,
        "std": pytest.approx(math.sqrt(2)),
        "n": 2,
    }
    assert summarise([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}
    assert summarise([float("nan")]) == {"mean": None, "std": None, "n": 0}


def test_infill_summary_and_verdicts_per_metric(comparison):
    summary = comparison.summary()
    assert summary[MODEL]["chroma_similarity"]["mean"] == pytest.approx(0.8)
    assert summary[MODEL]["chroma_similarity"]["std"] == pytest.approx(math.sqrt(0.02))
    # NRMSE over the samples: errors (0, 1) → rmse √½, reference mean 2.
    assert summary[MODEL]["note_density_nrmse"]["mean"] == pytest.approx(math.sqrt(0.5) / 2)
    assert summary[COPY_PREVIOUS_BAR]["note_density_nrmse"]["mean"] == 0.0
    verdicts = comparison.verdicts(summary)
    assert verdicts["chroma_similarity"] == "yes"  # 0.80 > 0.725, 0.30
    assert verdicts["groove_similarity"] == "no"  # 0.70 < copy's 0.90
    assert verdicts["note_density_nrmse"] == "no"  # copy is exact here
    assert verdicts["in_key_ratio"] == "yes"  # |0.95 − 0.95| beats |0.55 − 0.95| and |1 − 0.95|
    assert verdicts["copies_context"] == "yes"  # truth 0: model 0, random 0.5, copy 1
    assert verdicts["memorised"] == "tie"  # all equal: never further, never closer


def test_without_ground_truth_match_metrics_have_no_verdict(comparison):
    without = InfillComparison({k: v for k, v in comparison.samples.items() if k != GROUND_TRUTH})
    verdicts = without.verdicts()
    assert verdicts["in_key_ratio"] is None and verdicts["chroma_similarity"] == "yes"
    assert without.systems == (MODEL, RANDOM_INIT, COPY_PREVIOUS_BAR)


def test_infill_comparison_names_a_missing_system_or_metric():
    with pytest.raises(MetricInputError, match="copy previous bar"):
        InfillComparison({MODEL: [], RANDOM_INIT: []})
    with pytest.raises(MetricInputError, match="lacks groove_similarity"):
        row = sample(1, 1, 1, 1, 1, 0)
        del row["groove_similarity"]
        InfillComparison({MODEL: [row], RANDOM_INIT: [], COPY_PREVIOUS_BAR: []})


def full_report(comparison: InfillComparison) -> dict:
    return build_report(
        "runs/tiny/model.safetensors",
        validation_loss=math.log(8.0),
        validation_tokens=12345,
        validation_voices=(math.log(4.0), 999),
        adherence={
            MODEL: {"max_polyphony": adherence([0, 1, 2], [0, 1, 1], 3)},
            RANDOM_INIT: {"max_polyphony": adherence([0, 1, 2], [2, 2, 0], 3)},
        },
        infill=comparison,
        realtime_ms={"fp32": [10.0, 20.0, 30.0], "int8": [5.0, 6.0]},
        info={"held-out pieces": 7},
    )


def test_report_is_strict_json_with_perplexity_and_verdicts(comparison):
    report = full_report(comparison)
    loaded = json.loads(json.dumps(report, allow_nan=False))
    assert loaded == report
    assert report["validation"]["perplexity"] == pytest.approx(8.0)
    assert report["adherence"]["model_beats_random_init"] == {"max_polyphony": True}
    assert report["realtime"]["ms_per_bar"]["median"] == 20.0  # the quality sections' precision
    assert report["realtime"]["by_precision"]["int8"]["n"] == 2
    assert report["infill"]["closer_than_baselines"]["chroma_similarity"] == "yes"
    assert report["infill"]["summary"][MODEL]["memorised"]["std"] == 0.0


def test_markdown_shows_each_metric_beside_its_baselines_and_a_verdict(comparison):
    text = render_markdown(json.loads(json.dumps(full_report(comparison))))
    assert "# Evaluation of `runs/tiny/model.safetensors`" in text
    assert "| Samples | Loss (nats/token) | Perplexity | Tokens |" in text
    assert "| training mix | 2.0794 | 8.000 | 12345 |" in text
    assert "| voices as written (no reduction, rescaling, re-articulation or holding) | 1.3863 | 4.000 | 999 |" in text
    assert "| Exact (model) | Exact (random-init) |" in text
    assert "| max_polyphony | 3 | 3 | 0.667 | 0.000 | 1.000 | 0.333 | 0.333 | 1.667 | yes |" in text
    assert "### max_polyphony (random-init)" in text
    assert "| requested \\ realised | 0 | 1 | 2 |" in text and "| 2 | 0 | 1 | 0 |" in text
    header = "| Metric | Goal | model | random-init | copy previous bar | ground truth | Closer to ground truth than both baselines |"
    assert header in text
    assert (
        "| Chroma similarity | ↑ (1 = truth) | 0.800 ± 0.141 (n=2) | 0.300 ± 0.141 (n=2) |" in text
    )
    assert "| Note-density NRMSE | ↓ (0 = truth) | 0.354 (n=2) |" in text
    assert text.count("| yes |") >= 3 and "| no |" in text
    assert "| fp32 | 20.00 | 20.00 | 29.00 | 10.00 | 30.00 | 3 |" in text
    assert "| int8 | 5.50 | 5.50 |" in text
    assert "- held-out pieces: 7" in text


def test_markdown_leaves_out_missing_sections():
    text = render_markdown(build_report("ckpt", validation_loss=1.0))
    assert "## Validation" in text and "Infill" not in text and "Real-time" not in text
