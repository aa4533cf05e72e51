"""Pure evaluation metrics for ``sideman eval``: attribute adherence and infill quality.

Every function takes note columns (a ``NoteArrays`` or plain arrays) and returns plain numbers, so
the evaluation harness only has to generate bars and call these. Conventions used throughout:

- Similarities are cosines in [0, 1]: both inputs empty → 1.0 (two rests agree), exactly one
  empty → 0.0 (a rest against notes shares nothing).
- Pitch statistics of an empty bar (in-key ratio, scale consistency, range error against notes)
  are NaN: undefined, not perfect; the report averages finite values and shows how many there were.
- Bars are compared as multisets of (onset, duration, pitch); velocity never counts.

The "level actually realised" of an attribute is the engine's own analysis
(``Tokenizer.compute_attributes``, tokens.md §7), reached through ``realised_levels``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sideman.engine.score import NoteArrays, Score
from sideman.engine.vocab import ATTRIBUTE_NAMES, ATTRIBUTE_TYPES, EncoderConfig

if TYPE_CHECKING:
    from sideman.engine.tokenizer import Tokenizer

PITCH_CLASS_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # natural minor
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


class MetricInputError(ValueError):
    """Inputs a metric cannot compare (mismatched shapes, levels out of range, bad bar length)."""


# ---- keys and scales ---------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """A major or natural-minor key: ``tonic`` is a pitch class 0..11 (0 = C)."""

    tonic: int
    mode: Literal["major", "minor"]

    def __post_init__(self) -> None:
        if not 0 <= self.tonic < 12:
            raise MetricInputError(f"key tonic {self.tonic} outside pitch classes 0..11")
        if self.mode not in ("major", "minor"):
            raise MetricInputError(f"key mode {self.mode!r} is neither 'major' nor 'minor'")

    @property
    def pitch_classes(self) -> frozenset[int]:
        steps = MAJOR_STEPS if self.mode == "major" else MINOR_STEPS
        return frozenset((self.tonic + s) % 12 for s in steps)

    @property
    def name(self) -> str:
        return f"{PITCH_CLASS_NAMES[self.tonic]} {self.mode}"


CANDIDATE_KEYS: tuple[Key, ...] = tuple(Key(t, "major") for t in range(12)) + tuple(
    Key(t, "minor") for t in range(12)
)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


# (24, 12): row k is CANDIDATE_KEYS[k]'s profile / scale membership by pitch class.
_KEY_PROFILES = _frozen(
    np.stack([np.roll(p, t) for p in (MAJOR_PROFILE, MINOR_PROFILE) for t in range(12)])
)
_KEY_MEMBERSHIP = _frozen(
    np.array([[pc in key.pitch_classes for pc in range(12)] for key in CANDIDATE_KEYS], dtype=float)
)


def _pitch_array(notes: NoteArrays | Iterable[int]) -> np.ndarray:
    if isinstance(notes, NoteArrays):
        return notes.pitch.astype(np.int64)
    return np.asarray(notes, dtype=np.int64).reshape(-1)


def pitch_class_counts(
    notes: NoteArrays | Iterable[int], weights: Iterable[float] | None = None
) -> np.ndarray:
    """(12,) float64 histogram of pitch classes, each note counting 1 or its weight."""
    pitches = _pitch_array(notes)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w is not None and w.shape != pitches.shape:
        raise MetricInputError(f"{len(w)} weights for {len(pitches)} pitches")
    return np.bincount(pitches % 12, weights=w, minlength=12).astype(np.float64)


def estimate_key(
    notes: NoteArrays | Iterable[int], weights: Iterable[float] | None = None
) -> Key | None:
    """Krumhansl–Schmuckler: the key whose profile correlates best with the pitch-class weights.

    Weights default to note durations for a ``NoteArrays`` and to 1 per note otherwise. Returns
    None when the histogram is flat (no notes, or every pitch class equally weighted).
    Ties go to the first candidate (majors C..B, then minors C..B).
    """
    if weights is None and isinstance(notes, NoteArrays):
        weights = notes.duration
    histogram = pitch_class_counts(notes, weights)
    centred = histogram - histogram.mean()
    norm = np.linalg.norm(centred)
    if norm == 0.0:
        return None
    profiles = _KEY_PROFILES - _KEY_PROFILES.mean(axis=1, keepdims=True)  # (24, 12)
    correlation = profiles @ centred / (np.linalg.norm(profiles, axis=1) * norm)
    return CANDIDATE_KEYS[int(np.argmax(correlation))]


def in_key_ratio(notes: NoteArrays | Iterable[int], key: Key | Iterable[int]) -> float:
    """Share of notes whose pitch class is in ``key`` (a Key or pitch classes); NaN if no notes."""
    pitches = _pitch_array(notes)
    if len(pitches) == 0:
        return float("nan")
    classes = key.pitch_classes if isinstance(key, Key) else {int(pc) % 12 for pc in key}
    member = np.zeros(12, dtype=bool)
    member[list(classes)] = True
    return float(member[pitches % 12].mean())


def scale_consistency(notes: NoteArrays | Iterable[int]) -> float:
    """The in-key ratio under the best-fitting major/natural-minor scale; NaN if no notes."""
    counts = pitch_class_counts(notes)
    total = counts.sum()
    if total == 0:
        return float("nan")
    return float((_KEY_MEMBERSHIP @ counts).max() / total)


# ---- similarities and errors -------------------------------------------------------------
def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two non-negative vectors; 1.0 if both are zero, 0.0 if exactly one is."""
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0.0 or norm_b == 0.0:
        return 1.0 if norm_a == norm_b else 0.0
    return float(np.clip(a @ b / (norm_a * norm_b), 0.0, 1.0))


def chroma_similarity(a: NoteArrays | Iterable[int], b: NoteArrays | Iterable[int]) -> float:
    """FIGARO's chroma similarity: cosine of the L2-normalised 12-bin pitch-class counts."""
    return _cosine(pitch_class_counts(a), pitch_class_counts(b))


def onset_histogram(
    onsets: Iterable[int], bar_ticks: int, bins: int | None = None, *, binary: bool = False
) -> np.ndarray:
    """(bins,) counts of notes by onset position in the bar; ``bins`` defaults to one per tick.

    Position bin = ⌊onset · bins / bar_ticks⌋, clipped into the bar. ``binary`` keeps only
    whether a bin has an onset (the grooving-pattern vector of Wu & Yang).
    """
    if bar_ticks < 1:
        raise MetricInputError(f"bar_ticks must be positive, got {bar_ticks}")
    bins = bar_ticks if bins is None else bins
    if bins < 1:
        raise MetricInputError(f"bins must be positive, got {bins}")
    ticks = np.asarray(onsets, dtype=np.int64).reshape(-1)
    position = np.clip(ticks * bins // bar_ticks, 0, bins - 1)
    counts = np.bincount(position, minlength=bins).astype(np.float64)
    return np.minimum(counts, 1.0) if binary else counts


def groove_similarity(
    onsets_a: Iterable[int],
    onsets_b: Iterable[int],
    bar_ticks: int,
    bins: int | None = None,
    *,
    binary: bool = False,
) -> float:
    """Cosine of the two bars' onset-position histograms (see ``onset_histogram``)."""
    return _cosine(
        onset_histogram(onsets_a, bar_ticks, bins, binary=binary),
        onset_histogram(onsets_b, bar_ticks, bins, binary=binary),
    )


def note_density_nrmse(
    generated_per_beat: Iterable[float], reference_per_beat: Iterable[float]
) -> float:
    """RMSE of notes per beat over paired bars, divided by the mean reference notes per beat.

    NaN when there are no pairs or the reference mean is 0 (nothing to normalise by).
    """
    generated = np.asarray(generated_per_beat, dtype=np.float64).reshape(-1)
    reference = np.asarray(reference_per_beat, dtype=np.float64).reshape(-1)
    if generated.shape != reference.shape:
        raise MetricInputError(
            f"{len(generated)} generated densities paired with {len(reference)} reference ones"
        )
    if len(reference) == 0 or reference.mean() == 0.0:
        return float("nan")
    rmse = np.sqrt(np.mean((generated - reference) ** 2))
    return float(rmse / reference.mean())


def pitch_range_error(
    generated: NoteArrays | Iterable[int], reference: NoteArrays | Iterable[int]
) -> float:
    """Mean of |Δ lowest pitch| and |Δ highest pitch| in semitones (register and width both count).

    0.0 when both are empty, NaN when exactly one is.
    """
    a, b = _pitch_array(generated), _pitch_array(reference)
    if len(a) == 0 or len(b) == 0:
        return 0.0 if len(a) == len(b) else float("nan")
    return (abs(int(a.min()) - int(b.min())) + abs(int(a.max()) - int(b.max()))) / 2


# ---- copies and memorisation -------------------------------------------------------------
def bar_fingerprint(
    notes: NoteArrays, *, use_duration: bool = True, transposed: bool = False
) -> bytes:
    """16-byte digest of a bar's multiset of (onset, duration, pitch), order-free.

    ``transposed`` shifts pitches so the lowest is 0 (equal for all transpositions of a bar);
    ``use_duration=False`` ignores durations (drums: yellow has no drum duration tokens).
    """
    duration = notes.duration if use_duration else np.zeros_like(notes.duration)
    pitch = notes.pitch - notes.pitch.min() if transposed and len(notes) else notes.pitch
    order = np.lexsort((pitch, duration, notes.onset))
    rows = np.stack([notes.onset[order], duration[order], pitch[order]], axis=1).astype(np.int32)
    return hashlib.blake2b(rows.tobytes(), digest_size=16).digest()


def split_bars(notes: NoteArrays) -> list[NoteArrays]:
    """One NoteArrays per non-empty (track, bar) group, in (track, bar) order."""
    notes = notes.take(np.lexsort((notes.bar, notes.track)))
    changes = np.flatnonzero((np.diff(notes.track) != 0) | (np.diff(notes.bar) != 0)) + 1
    starts = np.concatenate([[0], changes]) if len(notes) else np.zeros(0, dtype=np.int64)
    ends = np.concatenate([changes, [len(notes)]]) if len(notes) else starts
    return [notes.take(np.arange(s, e)) for s, e in zip(starts, ends, strict=True)]


class BarHashIndex:
    """Set of bar fingerprints (training set or context) for exact-copy look-ups.

    Empty bars are never stored and never found: a rest copies nothing.
    """

    def __init__(self, *, use_duration: bool = True):
        self.use_duration = use_duration
        self._exact: set[bytes] = set()
        self._transposed: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._exact)

    def add(self, notes: NoteArrays) -> None:
        """Add one bar's notes (any track/bar columns are ignored)."""
        if len(notes) == 0:
            return
        self._exact.add(bar_fingerprint(notes, use_duration=self.use_duration))
        self._transposed.add(
            bar_fingerprint(notes, use_duration=self.use_duration, transposed=True)
        )

    def add_bars(self, notes: NoteArrays) -> int:
        """Add every (track, bar) of ``notes`` as its own bar; returns how many bars were added."""
        bars = split_bars(notes)
        for bar in bars:
            self.add(bar)
        return len(bars)

    def contains(self, notes: NoteArrays, *, any_transposition: bool = False) -> bool:
        """Whether this bar (or, with ``any_transposition``, a transposition of it) was added."""
        if len(notes) == 0:
            return False
        if any_transposition:
            key = bar_fingerprint(notes, use_duration=self.use_duration, transposed=True)
            return key in self._transposed
        return bar_fingerprint(notes, use_duration=self.use_duration) in self._exact


def copies_context(
    generated_bar: NoteArrays,
    context_bars: NoteArrays | Sequence[NoteArrays],
    *,
    use_duration: bool = True,
    any_transposition: bool = False,
) -> bool:
    """Whether the generated bar equals one context bar (a NoteArrays is split by (track, bar))."""
    index = BarHashIndex(use_duration=use_duration)
    for part in [context_bars] if isinstance(context_bars, NoteArrays) else context_bars:
        index.add_bars(part)
    return index.contains(generated_bar, any_transposition=any_transposition)


# ---- attribute adherence -----------------------------------------------------------------
def attribute_level_counts(config: EncoderConfig) -> dict[str, int]:
    """Number of levels of each attribute this vocabulary and config carry, in ATTRIBUTE_NAMES order."""
    sizes = config.vocabulary.sizes
    return {
        name: int(sizes[ATTRIBUTE_TYPES[name]])
        for name in ATTRIBUTE_NAMES
        if config.vocabulary.has(ATTRIBUTE_TYPES[name]) and name in config.attributes
    }


def realised_levels(
    tokenizer: Tokenizer, score: Score, bar_mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-track level of each attribute as the engine computes it (-1 where it does not apply)."""
    values = tokenizer.compute_attributes(score, bar_mask=bar_mask)  # (n_tracks, 5)
    return {name: values[:, a] for a, name in enumerate(ATTRIBUTE_NAMES)}


def adherence(
    requested_levels: Iterable[int], realised_levels: Iterable[int], n_levels: int
) -> dict[str, Any]:
    """Exact and within-one accuracy, mean |bin distance| and the confusion matrix.

    ``confusion[r][c]`` counts samples that asked for level r and realised level c. With no
    samples the rates are NaN and the matrix is all zeros.
    """
    requested = np.asarray(requested_levels, dtype=np.int64).reshape(-1)
    realised = np.asarray(realised_levels, dtype=np.int64).reshape(-1)
    if requested.shape != realised.shape:
        raise MetricInputError(f"{len(requested)} requested levels but {len(realised)} realised")
    if n_levels < 1:
        raise MetricInputError(f"n_levels must be positive, got {n_levels}")
    for field_name, levels in (("requested_levels", requested), ("realised_levels", realised)):
        outside = (levels < 0) | (levels >= n_levels)
        if outside.any():
            bad = int(np.flatnonzero(outside)[0])
            raise MetricInputError(
                f"{field_name}[{bad}] = {levels[bad]} outside levels 0..{n_levels - 1}"
            )
    confusion = np.bincount(requested * n_levels + realised, minlength=n_levels * n_levels)
    distance = np.abs(requested - realised)
    empty = len(requested) == 0
    return {
        "n": int(len(requested)),
        "n_levels": int(n_levels),
        "exact_accuracy": float("nan") if empty else float(np.mean(distance == 0)),
        "within_one_accuracy": float("nan") if empty else float(np.mean(distance <= 1)),
        "mean_abs_distance": float("nan") if empty else float(distance.mean()),
        "confusion": confusion.reshape(n_levels, n_levels).tolist(),
    }


# ---- one infill sample -------------------------------------------------------------------
def infill_sample_metrics(
    generated: NoteArrays,
    reference: NoteArrays,
    *,
    bar_ticks: int,
    beats_per_bar: float,
    context_bars: NoteArrays | Sequence[NoteArrays] = (),
    key: Key | None = None,
    is_drum: bool = False,
    training_index: BarHashIndex | None = None,
    groove_bins: int | None = None,
) -> dict[str, float]:
    """Every per-sample infill metric of one regenerated bar of one voice against the original.

    ``key`` is estimated by the caller from the melodic context (``estimate_key``); pitch metrics
    are NaN for drums and ``in_key_ratio`` is NaN without a key. Drum bars are compared with
    the context without durations; build a drum ``training_index`` with ``use_duration=False``. Flags (``copies_context``, ``memorised``, ``empty_bar``) are 0.0/1.0 so their
    mean is a rate; ``memorised`` is NaN without a training index. Calling this with
    ``generated=reference`` gives the ground truth's own values.
    """
    if beats_per_bar <= 0:
        raise MetricInputError(f"beats_per_bar must be positive, got {beats_per_bar}")
    nan = float("nan")
    melodic = not is_drum
    use_duration = melodic
    memorised = nan
    if training_index is not None:
        memorised = float(training_index.contains(generated))
    return {
        "chroma_similarity": chroma_similarity(generated, reference) if melodic else nan,
        "groove_similarity": groove_similarity(
            generated.onset, reference.onset, bar_ticks, groove_bins
        ),
        "notes_per_beat": len(generated) / beats_per_bar,
        "reference_notes_per_beat": len(reference) / beats_per_bar,
        "in_key_ratio": in_key_ratio(generated, key) if melodic and key is not None else nan,
        "scale_consistency": scale_consistency(generated) if melodic else nan,
        "pitch_range_error": pitch_range_error(generated, reference) if melodic else nan,
        "copies_context": float(copies_context(generated, context_bars, use_duration=use_duration)),
        "memorised": memorised,
        "empty_bar": float(len(generated) == 0),
    }
