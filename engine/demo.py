"""A small built-in score for demos and benchmarks: an 8-bar, four-voice progression in C major."""

from __future__ import annotations

import numpy as np

from sideman.engine.score import NoteArrays, Score, TrackInfo

# One chord per half bar (root-position triads with a doubled root), voiced soprano..bass.
_PROGRESSION = (
    (72, 67, 64, 48), (72, 69, 65, 53), (71, 67, 62, 55), (72, 67, 64, 48),
    (69, 65, 60, 53), (71, 67, 62, 55), (72, 67, 64, 57), (71, 65, 62, 55),
    (72, 64, 60, 45), (69, 65, 60, 41), (71, 67, 62, 43), (72, 67, 64, 48),
    (74, 65, 59, 43), (72, 67, 64, 48), (71, 67, 62, 43), (72, 67, 64, 36),
)
_VOICES = (
    TrackInfo(program=73, name="Soprano (flute)"),
    TrackInfo(program=71, name="Alto (clarinet)"),
    TrackInfo(program=42, name="Tenor (cello)"),
    TrackInfo(program=32, name="Bass (acoustic bass)"),
)


def demo_score(resolution: int = 12) -> Score:
    """Eight 4/4 bars; the soprano moves in quarters, the lower voices hold half notes."""
    half = 2 * resolution
    rows = []
    for chord_index, chord in enumerate(_PROGRESSION):
        bar, onset = divmod(chord_index * half, 4 * resolution)
        for voice, pitch in enumerate(chord):
            if voice == 0:
                passing = pitch + (2 if chord_index % 2 == 0 else -1)
                rows.append((voice, bar, onset, resolution, pitch, 92))
                rows.append((voice, bar, onset + resolution, resolution, passing, 84))
            else:
                rows.append((voice, bar, onset, half, pitch, 76 - 4 * voice))
    tracks = [TrackInfo(program=v.program, name=v.name) for v in _VOICES]
    score = Score.empty(8, tracks, resolution=resolution)
    return score.with_notes(NoteArrays.from_rows(np.asarray(rows)))
