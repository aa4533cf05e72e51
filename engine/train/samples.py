"""Training samples: random windows of corpus pieces as yellow token sequences.

Every draw comes from the stream's own ``numpy.random.Generator`` (seeded), so a stream is
reproducible and shares no state. One sample:

1. **Piece**, weighted by its bar count (every bar about equally likely), among the pieces with
   at least ``min(num_bars_map)`` bars.
2. **Window** of ``num_bars_map`` bars (4 or 8 for yellow, uniform over the lengths the piece
   holds), uniform start. Tracks without a note in the window are left out; a window without
   notes is drawn again. NumBars is the window length.
3. **Transposition**: a uniform whole number of semitones in ``transpose`` (inclusive), narrowed
   so that no melodic pitch of the window leaves 0..127; drum tracks never move.
4. **Kind**:

   * *infill* (``infill_probability`` = 0.5): PieceStart(1), target bars replaced by
     FillInPlaceholder and their notes in FillIn blocks after the last track (tokens.md §8.1).
     Half the time one track is the target, otherwise 2..all tracks; per target track, half the
     time a contiguous span of bars (the planner's ``bars_per_step`` shape), otherwise each bar with
     probability 1/2. Only bars with notes become targets: the sampler forbids empty fill blocks.
     0.5 because the spec gives no figure and the daemon's usual request is an infill of one
     track, while the other half keeps whole-track generation well trained.
   * *autoregressive* (``ar_probability`` = 0.3): the generating track(s) moved to the end, in
     the layout of an autoregressive prompt (§8.2) continued to its TrackEnd: one track three
     times in four, otherwise 2..all tracks (in score order among themselves).
   * *plain* (the remaining 0.2): every track in score order.

5. **Masked bars** (``mask_probability`` = 0.15 of infill and autoregressive samples): from a
   random bar to the window's end, the bars of some context tracks (never a fill target, never a
   generating track) become empty shells ``Bar TimeSig BarEnd``: the shape of the "future" bars
   the daemon cannot know yet (mask modes of §11.3; yellow has no MaskBar token).
6. **Attributes** come from the tokenizer over every bar of the window (targets included, so a
   value describes the bars the model writes, as an attribute request does). Each track keeps them
   with ``attribute_probability`` = 0.8; otherwise it has none, like a fully generated track.
7. **Reduction** (``merge_probability`` = 0.4 of windows with two or more melodic tracks): 2..all
   melodic tracks are merged into one keyboard-like track (piano, electric piano, organ or string
   ensemble, in the place of the first of them; unisons kept once, the longer note winning), as a
   pianist's reduction of the parts. Single voices are monophonic, so without it the model would
   never see a chord in one track and could not follow polyphony attributes above one note;
   merged chorale voices give it two to four (drawn before the kind, so every kind sees it).
   Three reductions in five (``double_probability``) are also *registered* like an organ's couplers:
   every note doubled at one to three octave shifts drawn from -2..+2 octaves (copies outside
   0..127 dropped), which gives a track five to sixteen sounding notes, the upper polyphony
   levels no corpus part reaches. Of the others, four in five (``voicing_probability``) are
   *revoiced* before the merge (``augment.revoice``): in 30%, 60% or all of the beats, 1..all but
   one of the voices keep playing, or the 1..all highest (lowest) voices also sound an octave
   higher (lower), so a reduction of four voices also has one, two, three, five .. eight notes in
   places or throughout. Half the reductions (``texture_probability``) are then played
   thinner or thicker on 30% or 60% of their beats (``augment.vary_texture``: one line, or octave
   couplers, on those beats only), so a track's lowest and highest polyphony can differ, as a
   request for one of them with the other left as it is asks.
8. **Diminution and augmentation** (``rescale_probability`` = 0.3 of windows, when the piece
   has the bars in one meter): the music written 4 or 2 times faster, or 2 or 4 times slower
   (``TIME_SCALES``, equally likely), the window drawn over that many times more (fewer) bars,
   onsets and durations scaled (rounded down, at least one tick). Chorales move in quarters and
   eighths; rescaled they give the thirty-seconds, sixteenths, halves and wholes of the outer
   note-duration levels.
9. **Re-articulation** (``rearticulate_probability`` = 0.3 of windows): one melodic part (a
   voice or the reduction) played in notes of one length, a note-duration level drawn uniformly
   (32nd .. whole, ``grid_ticks``): shorter than the part's notes, 30%, 60% or all of them become
   repeated notes (an accompanist's repeated chords, a string tremolo); longer, the pitches
   sounding at each grid point are held to the next (a pad). Rescaling moves every part at once,
   so without this a track's duration levels would always agree with its context's, and the
   model could ignore the duration attributes. Then (``hold_probability`` = 0.25 of windows) one
   melodic part may be *held* over some stretches (``augment.hold_some``: 1..all but one of its
   half notes or bars sound the pitches at their start to their end, the rest as written): short
   and long notes in one part, the pairs of duration levels (an eighth lowest, a whole highest)
   that re-articulating a whole part cannot give.
10. **Length**: a sequence longer than ``max_len`` is planned again on a shorter window (the next
   smaller ``num_bars_map`` value, same start), then with one random track fewer at a time; it
   is never cut.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.tokenizer import BarMode, Tokenizer
from sideman.engine.train.augment import (
    TIME_SCALES,
    can_rescale,
    double_octaves,
    draw_reduction,
    hold_some,
    melodic_tracks,
    merge_group,
    rearticulate,
    rescale,
    revoice,
    span_bars,
    vary_texture,
)
from sideman.engine.train.config import (
    DOUBLE_PROBABILITY,
    HOLD_PROBABILITY,
    MERGE_PROBABILITY,
    REARTICULATE_PROBABILITY,
    RESCALE_PROBABILITY,
    TEXTURE_PROBABILITY,
    VOICING_PROBABILITY,
)
from sideman.engine.train.corpus import Piece
from sideman.engine.vocab import EncoderConfig

KINDS = ("infill", "autoregressive", "plain")
_WINDOW_DRAWS = 200  # windows tried before a stream gives up (every one too long or empty)


class SampleConfigError(ValueError):
    """A sampling setting out of range; the message names the field."""


class SampleError(RuntimeError):
    """No sample can be drawn: no usable piece, or no window fits ``max_len``."""


@dataclass(frozen=True)
class SampleConfig:
    """Probabilities and limits of the sampling scheme (module docstring)."""

    infill_probability: float = 0.5
    ar_probability: float = 0.3  # of all samples; plain = 1 - infill - ar
    mask_probability: float = 0.15  # of infill and autoregressive samples
    attribute_probability: float = 0.8  # per track
    transpose: tuple[int, int] = (-5, 6)  # semitones, both ends included
    max_len: int = 1024
    merge_probability: float = MERGE_PROBABILITY  # of windows with two or more melodic tracks
    double_probability: float = DOUBLE_PROBABILITY  # of reductions: octave doublings
    rescale_probability: float = RESCALE_PROBABILITY  # of windows: faster or slower (TIME_SCALES)
    rearticulate_probability: float = REARTICULATE_PROBABILITY  # of windows: one part re-articulated
    texture_probability: float = TEXTURE_PROBABILITY  # of reductions: thinner or thicker beats
    voicing_probability: float = VOICING_PROBABILITY  # of undoubled reductions: voices dropped or added
    hold_probability: float = HOLD_PROBABILITY  # of windows: one part held over some stretches

    def __post_init__(self) -> None:
        for name in (
            "infill_probability",
            "ar_probability",
            "mask_probability",
            "attribute_probability",
            "merge_probability",
            "double_probability",
            "rescale_probability",
            "rearticulate_probability",
            "texture_probability",
            "voicing_probability",
            "hold_probability",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise SampleConfigError(f"{name} must be in [0, 1], got {value}")
        if self.infill_probability + self.ar_probability > 1:
            raise SampleConfigError(
                f"infill_probability + ar_probability must be <= 1, got "
                f"{self.infill_probability} + {self.ar_probability}"
            )
        low, high = self.transpose
        if low > high:
            raise SampleConfigError(
                f"transpose must be (low, high) with low <= high, got {self.transpose}"
            )
        if self.max_len < 2:
            raise SampleConfigError(f"max_len must be >= 2, got {self.max_len}")

    def as_written(self) -> SampleConfig:
        """This scheme on the voices as the pieces write them: no reduction, rescaling,
        re-articulation or holding (transposition and the sample kinds stay)."""
        return replace(self, **dict.fromkeys(WINDOW_AUGMENTATIONS, 0.0))


# the shares drawn per window; the reduction's own shares (doubling, texture, voicing) apply
# only to a merged window
WINDOW_AUGMENTATIONS = (
    "merge_probability",
    "rescale_probability",
    "rearticulate_probability",
    "hold_probability",
)

DEFAULT_CONFIG = SampleConfig()


@dataclass(frozen=True)
class Sample:
    """One training sequence and what it was drawn from (for tests, debugging and metrics)."""

    ids: np.ndarray  # (n,) int64 token ids
    kind: str  # one of KINDS
    piece_id: str
    start_bar: int  # first bar of the window in the piece
    transpose: int  # semitones added to every melodic pitch
    source_tracks: tuple[int, ...]  # piece track of each window track
    window: Score  # the window as encoded: kept tracks in piece order, transposed, bars from 0
    track_order: tuple[int, ...]  # window tracks in emitted order
    bar_modes: np.ndarray  # (n_tracks, n_bars) BarMode
    attributes: np.ndarray  # (n_tracks, 5) emitted attribute values, -1 = none
    fill_targets: tuple[tuple[int, int], ...]  # (window track, bar) in fill-block order
    merged_tracks: tuple[int, ...] = ()  # piece tracks merged into one reduction track, if any
    octave_shifts: tuple[int, ...] = ()  # semitones of the reduction's doublings, if any
    time_scale: float = 1.0  # written durations / the piece's (0.25: four times faster)
    note_grid: tuple[int, int] = (-1, 0)  # (window track, grid ticks) re-articulated, if any
    texture: str = ""  # "thin" or "thick": the reduction's texture varied by beats, if it was
    voicing: str = ""  # how the reduction was revoiced ("keep 2 top", "add 1 bottom"), if it was
    held: tuple[int, int] = (-1, 0)  # (window track, stretches) held by hold_some, if any


@dataclass(frozen=True)
class _PieceData:
    """A piece prepared for fast windowing: notes also ordered by bar."""

    id: str
    score: Score
    is_drum: np.ndarray  # (n_tracks,) bool
    by_bar: np.ndarray  # note indices sorted by bar (stable)
    bar_sorted: np.ndarray  # notes.bar[by_bar]


class SampleStream:
    """An endless, seeded iterator of training sequences (int64 token ids, 2 <= len <= max_len)."""

    def __init__(
        self,
        pieces: Sequence[Piece],
        encoder_config: EncoderConfig,
        config: SampleConfig = DEFAULT_CONFIG,
        seed: int = 0,
    ):
        self.config = config
        self.tokenizer = Tokenizer(encoder_config)
        self._window_sizes = np.array(sorted(encoder_config.num_bars_map), dtype=np.int64)
        if not len(self._window_sizes):
            raise SampleConfigError("the encoder config has an empty num_bars_map")
        self._pieces = [_prepare(piece, self.tokenizer) for piece in pieces]
        self._pieces = [
            p
            for p in self._pieces
            if p.score.n_bars >= self._window_sizes[0] and len(p.score.notes)
        ]
        if not self._pieces:
            raise SampleError(
                f"none of the {len(pieces)} pieces has notes and at least "
                f"{self._window_sizes[0]} bars (the shortest window)"
            )
        self._cumulative_bars = np.cumsum([p.score.n_bars for p in self._pieces], dtype=np.float64)
        self._rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        return self.next_sample().ids

    def next_sample(self) -> Sample:
        """The next sample with everything it was drawn from."""
        rng = self._rng
        for _ in range(_WINDOW_DRAWS):
            piece = self._draw_piece()
            sizes = self._window_sizes[self._window_sizes <= piece.score.n_bars]
            size = int(rng.choice(sizes))
            scale = 1.0
            if _chance(rng, self.config.rescale_probability):
                scale = float(rng.choice(TIME_SCALES))
                scale = scale if piece.score.n_bars >= span_bars(size, scale) else 1.0
            span = span_bars(size, scale)
            start = int(rng.integers(0, piece.score.n_bars - span + 1))
            if scale != 1 and not can_rescale(piece.score, start, span, scale):
                scale, span = 1.0, size
                start = int(rng.integers(0, piece.score.n_bars - size + 1))
            window_notes = _notes_in_bars(piece, start, span)
            tracks = np.unique(piece.score.notes.track[window_notes])
            if not len(tracks):
                continue
            interval = self._interval(piece, window_notes)
            while True:
                sample = self._plan_and_encode(piece, start, size, tracks, interval, scale)
                if sample is not None and len(sample.ids) <= self.config.max_len:
                    return sample
                smaller = self._window_sizes[self._window_sizes < size]
                if len(smaller):
                    size = int(smaller[-1])
                elif len(tracks) > 1:
                    tracks = np.delete(tracks, int(rng.integers(0, len(tracks))))
                else:
                    break
        raise SampleError(
            f"no window of {_WINDOW_DRAWS} drawn fits max_len={self.config.max_len} tokens"
        )

    # ---- one window ----------------------------------------------------------------------
    def _draw_piece(self) -> _PieceData:
        """A piece, with probability proportional to its bar count."""
        position = self._rng.random() * self._cumulative_bars[-1]
        return self._pieces[int(np.searchsorted(self._cumulative_bars, position, side="right"))]

    def _interval(self, piece: _PieceData, window_notes: np.ndarray) -> int:
        low, high = self.config.transpose
        notes = piece.score.notes
        melodic = window_notes[~piece.is_drum[notes.track[window_notes]]]
        if len(melodic):
            low = max(low, -int(notes.pitch[melodic].min()))
            high = min(high, 127 - int(notes.pitch[melodic].max()))
        if low > high:
            return 0
        return int(self._rng.integers(low, high + 1))

    def _plan_and_encode(
        self,
        piece: _PieceData,
        start: int,
        size: int,
        tracks: np.ndarray,
        interval: int,
        time_scale: float = 1.0,
    ) -> Sample | None:
        """The window's tracks that have notes, planned and encoded; None when none has notes."""
        window, kept = _window(piece, start, span_bars(size, time_scale), tracks, interval)
        if window.n_tracks == 0:
            return None
        if time_scale != 1:
            window = rescale(window, time_scale)
        rng, config = self._rng, self.config
        merged: tuple[int, ...] = ()
        shifts: tuple[int, ...] = ()
        texture = voicing = ""
        if _chance(rng, config.merge_probability):
            group, program = draw_reduction(rng, window)
            if len(group):
                parts, piece_tracks = window, kept
                window, kept, merged = merge_group(parts, piece_tracks, group, program)
        if merged:
            target = int(np.flatnonzero(kept == merged[0])[0])
            if _chance(rng, config.double_probability):
                window, shifts = double_octaves(rng, window, target)
            elif _chance(rng, config.voicing_probability):
                parts, voicing = revoice(rng, parts, group)
                window, kept, merged = merge_group(parts, piece_tracks, group, program)
            if _chance(rng, config.texture_probability):
                window, texture = vary_texture(rng, window, target)
        note_grid = (-1, 0)
        melodic = melodic_tracks(window)
        if len(melodic) and _chance(rng, config.rearticulate_probability):
            track = int(rng.choice(melodic))
            window, grid = rearticulate(rng, window, track)
            note_grid = (track, grid) if grid else note_grid
        held = (-1, 0)
        if len(melodic) and _chance(rng, config.hold_probability):
            track = int(rng.choice(melodic))
            window, stretches = hold_some(rng, window, track)
            held = (track, stretches) if stretches else held
        cells = np.zeros((window.n_tracks, size), dtype=np.bool_)
        cells[window.notes.track, window.notes.bar] = True
        draw = rng.random()
        modes = np.zeros(cells.shape, dtype=np.int8)
        order = list(range(window.n_tracks))
        if draw < config.infill_probability:
            kind, modes = "infill", _infill_modes(rng, cells)
            maskable = np.arange(window.n_tracks)  # their bars that are not fill targets
        elif draw < config.infill_probability + config.ar_probability:
            kind, maskable = "autoregressive", _context_tracks(rng, window.n_tracks)
            order = maskable.tolist() + [t for t in order if t not in maskable]
        else:
            kind, maskable = "plain", np.zeros(0, dtype=np.int64)
        if size > 1 and len(maskable) and rng.random() < config.mask_probability:
            _mask_future(rng, modes, maskable)
        attributes = self.tokenizer.compute_attributes(window)
        attributes[rng.random(window.n_tracks) >= config.attribute_probability] = -1
        encoded = self.tokenizer.encode_window(
            window, num_bars=size, track_order=order, bar_modes=modes, attributes=attributes
        )
        return Sample(
            ids=encoded.ids.astype(np.int64),
            kind=kind,
            piece_id=piece.id,
            start_bar=start,
            transpose=interval,
            source_tracks=tuple(int(t) for t in kept),
            window=window,
            track_order=tuple(order),
            bar_modes=modes,
            attributes=attributes,
            fill_targets=encoded.fill_targets,
            merged_tracks=merged,
            octave_shifts=shifts,
            time_scale=time_scale,
            note_grid=note_grid,
            texture=texture,
            voicing=voicing,
            held=held,
        )


def validation_set(
    pieces: Sequence[Piece],
    encoder_config: EncoderConfig,
    n: int,
    seed: int = 0,
    config: SampleConfig = DEFAULT_CONFIG,
) -> list[np.ndarray]:
    """The first ``n`` sequences of a stream seeded with ``seed``: fixed and reproducible."""
    return list(itertools.islice(SampleStream(pieces, encoder_config, config, seed), n))


# ---- helpers ---------------------------------------------------------------------------------
def _chance(rng: np.random.Generator, probability: float) -> bool:
    """True with ``probability``; a share of 0 draws nothing, so a stream with an augmentation
    turned off is the stream of the code from before that augmentation existed."""
    return probability > 0 and rng.random() < probability


def _prepare(piece: Piece, tokenizer: Tokenizer) -> _PieceData:
    score = tokenizer.to_grid(piece.score)
    config = tokenizer.config
    unknown = {
        (int(n), int(d)) for n, d in score.time_signatures if config.time_signature_index(n, d) < 0
    }
    if unknown:
        meters = ", ".join(f"{n}/{d}" for n, d in sorted(unknown))
        raise SampleError(f"piece {piece.id!r} has meters outside the vocabulary: {meters}")
    by_bar = np.argsort(score.notes.bar, kind="stable")
    return _PieceData(
        id=piece.id,
        score=score,
        is_drum=np.array([t.is_drum for t in score.track_info], dtype=np.bool_),
        by_bar=by_bar,
        bar_sorted=score.notes.bar[by_bar],
    )


def _notes_in_bars(piece: _PieceData, start: int, size: int) -> np.ndarray:
    """Indices of the piece's notes in bars [start, start + size), in the notes' own order."""
    low, high = np.searchsorted(piece.bar_sorted, (start, start + size))
    return np.sort(piece.by_bar[low:high])


def _window(
    piece: _PieceData, start: int, size: int, tracks: np.ndarray, interval: int
) -> tuple[Score, np.ndarray]:
    """(window score, piece track of each window track): the listed tracks that have notes in the
    bars, transposed, bars renumbered from 0."""
    notes = piece.score.notes
    index = _notes_in_bars(piece, start, size)
    index = index[np.isin(notes.track[index], tracks)]
    kept = np.unique(notes.track[index])
    remap = np.full(piece.score.n_tracks, -1, dtype=np.int32)
    remap[kept] = np.arange(len(kept), dtype=np.int32)
    track = notes.track[index]
    shift = np.where(piece.is_drum[track], 0, interval)
    window_notes = NoteArrays(
        remap[track],
        notes.bar[index] - start,
        notes.onset[index],
        notes.duration[index],
        notes.pitch[index] + shift,
        notes.velocity[index],
    )
    info = [piece.score.track_info[int(t)] for t in kept]
    window = Score(
        resolution=piece.score.resolution,
        time_signatures=piece.score.time_signatures[start : start + size],
        track_info=[TrackInfo(program=t.program, is_drum=t.is_drum, name=t.name) for t in info],
        notes=window_notes,
        tempo=piece.score.tempo,
    )
    return window, kept


def _infill_modes(rng: np.random.Generator, cells: np.ndarray) -> np.ndarray:
    """Bar modes with FILL targets: one track half the time, else 2..all; per track a contiguous
    span half the time, else each bar with probability 1/2; only bars with notes."""
    n_tracks, n_bars = cells.shape
    modes = np.zeros(cells.shape, dtype=np.int8)
    n_targets = 1 if n_tracks == 1 or rng.random() < 0.5 else int(rng.integers(2, n_tracks + 1))
    for track in rng.choice(n_tracks, n_targets, replace=False):
        bars = np.flatnonzero(cells[track])
        if rng.random() < 0.5:
            length = int(rng.integers(1, n_bars + 1))
            first = int(rng.integers(0, n_bars - length + 1))
            chosen = bars[(bars >= first) & (bars < first + length)]
        else:
            chosen = bars[rng.random(len(bars)) < 0.5]
        if not len(chosen):
            chosen = bars[int(rng.integers(0, len(bars))) :][:1]
        modes[track, chosen] = BarMode.FILL
    return modes


def _context_tracks(rng: np.random.Generator, n_tracks: int) -> np.ndarray:
    """The tracks that stay ahead of the generating ones (which go last): all but one three times
    in four, else all but 2..all."""
    n_generating = 1 if n_tracks == 1 or rng.random() < 0.75 else int(rng.integers(2, n_tracks + 1))
    generating = rng.choice(n_tracks, n_generating, replace=False)
    return np.setdiff1d(np.arange(n_tracks), generating)


def _mask_future(rng: np.random.Generator, modes: np.ndarray, tracks: np.ndarray) -> None:
    """From a random bar on, NOTES bars of some of ``tracks`` (each with probability 1/2, at least
    one) become MASKED shells, in place."""
    first = int(rng.integers(1, modes.shape[1]))
    chosen = tracks[rng.random(len(tracks)) < 0.5]
    if not len(chosen):
        chosen = tracks[int(rng.integers(0, len(tracks))) :][:1]
    for track in chosen:
        future = modes[track, first:]
        future[future == BarMode.NOTES] = BarMode.MASKED
