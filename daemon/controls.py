"""Client control over the agent's output (osc-protocol §16 D58) and meters of upcoming bars (D35).

``OutputControls`` holds the two switches the scheduler reads: *frozen* (no new jobs are
triggered; the agent's history stays) and *muted* (jobs run and the history updates, but nothing
``/midigpt/generated/*`` is sent). ``ControlHandlers`` implements the messages:

- ``/midigpt/agent/cancel`` — cancel the job in flight and the queued one;
- ``/midigpt/agent/regenerate bar`` — generate a future bar again, replacing the earlier version;
- ``/midigpt/agent/freeze on`` and ``/midigpt/agent/mute on`` — the switches above;
- ``/midigpt/agent/played track bar json`` — what the client actually played for an agent bar; it
  replaces that bar of the agent's history, so later prompts condition on what was heard;
- ``/midigpt/meter bar num den`` — the meter of a bar that has not ended yet.

``parse_played`` checks the played-notes JSON and names the field of the first bad value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sideman.daemon.protocol import ErrorCode, ProtocolError
from sideman.daemon.rolling import ScoreWindowError, UnsupportedMeterError

CLIENT_CANCEL_REASON = "cancelled by /midigpt/agent/cancel"
PLAYED_FIELDS = ("pitch", "velocity", "onset", "duration")
# Handler names of the protocol table that ``ControlHandlers`` implements.
CONTROL_HANDLERS = (
    "agent_cancel",
    "agent_regenerate",
    "agent_freeze",
    "agent_mute",
    "agent_played",
    "meter_announce",
)


@dataclass
class OutputControls:
    """The freeze and mute switches; a new session (``/session/init``) clears both."""

    frozen: bool = False
    muted: bool = False

    def reset(self) -> None:
        self.frozen = self.muted = False

    def describe(self) -> dict[str, bool]:
        return {"frozen": self.frozen, "muted": self.muted}


class PlayedNotesError(ValueError):
    """A played-notes JSON the daemon refuses; the message names the note and the field."""


def _check_int(index: int, name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlayedNotesError(f"note {index}: '{name}' must be an integer in {lo}..{hi}, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise PlayedNotesError(f"note {index}: '{name}' must be an integer in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise PlayedNotesError(f"note {index}: '{name}' must be in {lo}..{hi}, got {value!r}")
    return int(value)


def _check_fraction(index: int, name: str, value: Any, rule: str, ok: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlayedNotesError(f"note {index}: '{name}' must be a finite number {rule}, got {value!r}")
    if not ok(value):
        raise PlayedNotesError(f"note {index}: '{name}' must be {rule}, got {value!r}")
    return float(value)


def parse_played(text: str, bar_ticks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Played notes as (onset, duration, pitch, velocity) tick columns of a bar of ``bar_ticks``.

    ``text`` is a JSON list of ``[pitch, velocity, onset, duration]``, onset and duration in bar
    fractions (onset in [0, 1), duration in (0, 64]); ``[]`` is a bar the client left silent.
    Durations end at the barline, the rule for generated notes (D31). Raises PlayedNotesError.
    """
    try:
        notes = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PlayedNotesError(f"argument 'json' is not valid JSON: {exc}") from None
    if not isinstance(notes, list):
        raise PlayedNotesError(
            f"argument 'json' must be a JSON list of [pitch, velocity, onset, duration], got {type(notes).__name__}"
        )
    rows = []
    for index, note in enumerate(notes):
        if not isinstance(note, list) or len(note) != len(PLAYED_FIELDS):
            raise PlayedNotesError(
                f"note {index}: must be a list [pitch, velocity, onset, duration], got {json.dumps(note)[:60]}"
            )
        pitch_value, velocity_value, onset_value, duration_value = note
        pitch = _check_int(index, "pitch", pitch_value, 0, 127)
        velocity = _check_int(index, "velocity", velocity_value, 1, 127)
        onset = _check_fraction(index, "onset", onset_value, "in [0, 1) (bar fraction)", lambda v: 0 <= v < 1)
        duration = _check_fraction(
            index, "duration", duration_value, "in (0, 64] (bar fraction)", lambda v: 0 < v <= 64
        )
        rows.append((onset, duration, pitch, velocity))
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    onset_ticks = np.clip(np.floor(table[:, 0] * bar_ticks + 0.5), 0, bar_ticks - 1)
    duration_ticks = np.maximum(1, np.floor(table[:, 1] * bar_ticks + 0.5))
    duration_ticks = np.minimum(duration_ticks, bar_ticks - onset_ticks).clip(min=1)
    return (
        onset_ticks.astype(np.int32),
        duration_ticks.astype(np.int32),
        table[:, 2].astype(np.int32),
        table[:, 3].astype(np.int32),
    )


def _refuse(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_PARAM, message)


class ControlHandlers:
    """The control messages, on the session and its scheduler (both owned by the loop)."""

    def __init__(self, session: Any, scheduler: Any) -> None:
        self.session = session
        self.scheduler = scheduler

    def _publish(self, name: str, value: Any) -> None:
        self.session.bus.publish("param", name=f"agent:{name}", value=value, once=False)

    def agent_cancel(self) -> None:
        """``/midigpt/agent/cancel``: the running and the queued job end "cancelled"."""
        self.scheduler.cancel(CLIENT_CANCEL_REASON)
        self._publish("cancel", True)

    def agent_regenerate(self, bar_index: int) -> None:
        """``/midigpt/agent/regenerate 14``: a job for bar 14 even though it was generated."""
        score = self.session.score
        address = "/midigpt/agent/regenerate"
        if bar_index <= score.playhead:
            raise _refuse(
                f"{address}: bar_index {bar_index} has started (playhead {score.playhead}); "
                f"only a future bar (> {score.playhead}) can be generated again"
            )
        if bar_index - score.playhead > score.max_future_bars:
            raise _refuse(
                f"{address}: bar_index {bar_index} is more than {score.max_future_bars} bars ahead "
                f"of the playhead {score.playhead}"
            )
        self.scheduler.regenerate(bar_index)
        self._publish("regenerate", bar_index)

    def agent_freeze(self, on: int) -> None:
        """``/midigpt/agent/freeze 1``: no new jobs until ``/midigpt/agent/freeze 0``."""
        self.scheduler.controls.frozen = bool(on)
        self._publish("freeze", bool(on))

    def agent_mute(self, on: int) -> None:
        """``/midigpt/agent/mute 1``: jobs run, nothing generated is sent until unmuted."""
        self.scheduler.controls.muted = bool(on)
        self._publish("mute", bool(on))

    def agent_played(self, track_id: int, bar_index: int, text: str) -> None:
        """``/midigpt/agent/played 1 12 "[[40, 90, 0.0, 0.5]]"``: replace agent bar 12 with it."""
        address = "/midigpt/agent/played"
        track = self.session.tracks.get(track_id)
        if track is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TRACK, f"Unknown track ID: {track_id}")
        if not track.is_agent:
            raise _refuse(
                f"{address}: track {track_id} is a conditioning track; send its notes with /midigpt/note"
            )
        score = self.session.score
        try:
            onset, duration, pitch, velocity = parse_played(text, score.bar_ticks(*score.meter(bar_index)))
        except PlayedNotesError as exc:
            raise _refuse(f"{address}: {exc}") from None
        try:
            stored = score.set_generated(track_id, bar_index, onset, duration, pitch, velocity)
        except ScoreWindowError as exc:
            raise _refuse(f"{address}: bar_index {bar_index}: {exc}") from None
        self._publish("played", {"track_id": track_id, "bar_index": bar_index, "notes": stored})

    def meter_announce(self, bar_index: int, ts_num: int, ts_den: int) -> None:
        """``/midigpt/meter 16 3 4``: bar 16 will be a 3/4 bar; jobs size it so."""
        try:
            self.session.score.announce_meter(bar_index, ts_num, ts_den)
        except UnsupportedMeterError as exc:
            raise _refuse(f"/midigpt/meter: {exc}") from None
        except ScoreWindowError as exc:
            raise _refuse(f"/midigpt/meter: bar_index {bar_index}: {exc}") from None
        self._publish("meter", {"bar_index": bar_index, "meter": [ts_num, ts_den]})


__all__ = [
    "CLIENT_CANCEL_REASON",
    "CONTROL_HANDLERS",
    "ControlHandlers",
    "OutputControls",
    "PlayedNotesError",
    "parse_played",
]
