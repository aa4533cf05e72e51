"""Judging one step's candidates: the silence and novelty checks, and the ranking that keeps one.

A step samples ``num_candidates`` continuations at once; ``GenerationSession`` decodes each to the
notes of the step's target bars and a ``CandidateJudge`` keeps the one that passes the enabled
checks and comes closest to the requested attributes, then (with the novelty check) the one that
repeats fewest context bars, the most likely among equals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sideman.engine.planner import Step
from sideman.engine.score import NoteArrays, Score
from sideman.engine.tokenizer import Tokenizer

SILENCE_REASON = "silence"  # prefix of the silence check's rejection reason


@dataclass(frozen=True)
class CandidateJudge:
    """The checks and ranking of one step's candidates against the score before the step."""

    score: Score  # the session's score, at model resolution
    step: Step
    tokenizer: Tokenizer
    requested: tuple[tuple[int, int, int], ...]  # (track, attribute index, level) asked of the step
    silence_check: bool = True
    novelty_check: bool = True

    def pick(
        self, candidates: Sequence[NoteArrays], scores: np.ndarray
    ) -> tuple[NoteArrays | None, list[str], tuple[float, NoteArrays] | None]:
        """(the kept candidate or None, why each other one was rejected, the most likely candidate
        rejected only for silence as (score, notes) or None)."""
        reasons: list[str] = []
        best: tuple[tuple[int, int, float], NoteArrays] | None = None
        best_silent: tuple[float, NoteArrays] | None = None
        for row, notes in enumerate(candidates):
            reason = self.check(notes)
            if reason:
                reasons.append(f"candidate {row}: {reason}")
                silent = reason.startswith(SILENCE_REASON)
                if silent and (best_silent is None or scores[row] > best_silent[0]):
                    best_silent = (float(scores[row]), notes)
                continue
            repeats = self.repeated_bars(notes) if self.novelty_check else 0
            rank = (-self.attribute_distance(notes), -repeats, float(scores[row]))
            if best is None or rank > best[0]:
                best = (rank, notes)
        return (best[1] if best else None), reasons, best_silent

    def check(self, notes: NoteArrays) -> str | None:
        """Why ``notes`` cannot be kept (a target bar left silent, or every target bar replaying
        the input exactly), or None."""
        if self.silence_check:
            for track, bar in self.step.targets:
                if not np.any((notes.track == track) & (notes.bar == bar)):
                    return f"{SILENCE_REASON}: no notes in track {track} bar {bar}"
        if self.novelty_check:
            current = self.score.notes
            identical = all(
                np.array_equal(pitch_onsets(current, track, bar), pitch_onsets(notes, track, bar))
                for track, bar in self.step.targets
            )
            if identical:
                return "novelty: the generated bars repeat the input exactly"
        return None

    def attribute_distance(self, notes: NoteArrays) -> int:
        """Sum over the requested attributes of |realised - requested| bins, the realised level
        read from the candidate's target bars alone (0 when none is requested).

        Attribute tokens only condition the model; among several candidates this keeps the one
        that did what was asked, so a request for four-note chords is not answered with a line
        just because the line was more likely.
        """
        if not self.requested:
            return 0
        step = self.step
        window = with_candidate(self.score, step, notes).slice_bars(step.start_bar, step.end_bar)
        targets = np.zeros((window.n_tracks, window.n_bars), dtype=np.bool_)
        for track, bar in step.targets:
            targets[track, bar - step.start_bar] = True
        realised = self.tokenizer.compute_attributes(window, bar_mask=targets)
        return sum(abs(int(realised[t, a]) - v) for t, a, v in self.requested if realised[t, a] >= 0)

    def repeated_bars(self, notes: NoteArrays) -> int:
        """How many of the candidate's target bars play the same pitches at the same onsets as a
        non-empty context bar of the step's window, any track (a copied bar or a doubled part).

        A language model's likeliest next bar is often one it has just seen, and a sideman that
        only loops the last bar is not accompanying: among candidates equally close to the
        requested attributes, one that plays something new is kept.
        """
        return sum(
            pitch_onsets(notes, track, bar).tobytes() in self._context_bars
            for track, bar in self.step.targets
        )

    @cached_property
    def _context_bars(self) -> set[bytes]:
        current, step = self.score.notes, self.step
        bars = (
            pitch_onsets(current, track, step.start_bar + local)
            for track, local in zip(*np.nonzero(step.context), strict=True)
        )
        return {played.tobytes() for played in bars if len(played)}


def with_candidate(score: Score, step: Step, notes: NoteArrays) -> Score:
    """``score`` with ``step``'s target bars replaced by ``notes``."""
    current = score.notes
    drop = np.zeros(len(current), dtype=bool)
    for track, bar in step.targets:
        drop |= (current.track == track) & (current.bar == bar)
    return score.with_notes(NoteArrays.concatenate([current.select(~drop), notes]))


def pitch_onsets(notes: NoteArrays, track: int, bar: int) -> np.ndarray:
    """The sorted (pitch, onset) multiset of one bar, as comparable integers."""
    sel = (notes.track == track) & (notes.bar == bar)
    return np.sort(notes.pitch[sel].astype(np.int64) * (1 << 20) + notes.onset[sel])
