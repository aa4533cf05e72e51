"""The monitor's built-in demo performer: a looped piece played into the daemon on a real clock.

So a new user sees and hears sideman with no DAW. The performer drives the session API
(``Daemon.call``, in process, no socket) from its own thread: ``/session/init "demo"``, one
conditioning track per voice with the voice the agent replaces created as the agent track,
``/tempo``, ``/session/start``; then, bar after bar, looping the piece while bar indices keep rising:

- shortly before each downbeat (``lead_s``, so the page can schedule Web Audio in time) a CLOCK
  event with the downbeat's Unix time and the human notes of that bar, clipped to its barline;
- at the bar's end, every note of the bar (``/midigpt/note``) and ``/midigpt/bar/end``.

A note held across the barline is sent once, in the bar it starts, with its whole duration (the
daemon's own rule for held notes, D31); CLOCK notes stop at the barline (0 < duration ≤ 1).
Deadlines advance by each bar's length from the first downbeat, so waiting never accumulates drift.

Any refusal or failure of a call ends the performance with the reason in the DEMO ``message``; the
daemon's session is then left as it is (the usual cause is that someone else re-initialised it).
``stop()`` ends the thread and sends ``/midigpt/session/stop``. Events go to ``on_event(kind,
payload)`` with kind ``"demo"`` (the DEMO dict of socket_events.md) or ``"clock"`` (CLOCK).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sideman.daemon.protocol import ProtocolError
from sideman.engine.score import Score

log = logging.getLogger(__name__)

Call = Callable[..., concurrent.futures.Future]  # Daemon.call(address, *args)
OnEvent = Callable[[str, dict], None]

SESSION_NAME = "demo"
MELODIC, DRUM = 10, 11  # /track/create track_type
DEFAULT_BPM = 90.0
DEFAULT_AGENT_PROGRAM = 32  # acoustic bass, for an agent added beside a one-voice piece
MAX_NOTE_BARS = 64.0  # the longest /midigpt/note duration the protocol accepts, in bars
CALL_TIMEOUT_S = 5.0
STOP_JOIN_S = 5.0


@dataclass(frozen=True)
class BarPlan:
    """One bar of the loop, ready to send: ``notes`` are /midigpt/note arguments without the bar
    index; ``human`` are CLOCK NOTE dicts without ``bar``."""

    meter: tuple[int, int]
    quarters: float
    notes: tuple[tuple[int, int, int, float, float], ...]
    human: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class TrackPlan:
    """A ``/midigpt/track/create`` of the demo session."""

    track_id: int
    program: int
    track_type: int
    is_agent: int


def plan_loop(score: Score, loop_bars: int, agent_track: int) -> tuple[BarPlan, ...]:
    """The first ``loop_bars`` bars of ``score``, every voice but ``agent_track``, as BarPlans."""
    notes = score.notes
    bar_ticks = score.bar_ticks()
    bar_starts = score.bar_starts()
    loop_end = int(bar_starts[loop_bars])
    played = (notes.bar < loop_bars) & (notes.track != agent_track) & (notes.velocity > 0)
    plans = []
    for bar in range(loop_bars):
        ticks = int(bar_ticks[bar])
        sent, human = [], []
        for i in np.flatnonzero(played & (notes.bar == bar)):
            onset = int(notes.onset[i])
            duration = min(int(notes.duration[i]), loop_end - int(bar_starts[bar]) - onset)
            if onset >= ticks or duration <= 0:
                continue
            track, pitch, velocity = (
                int(column[i]) for column in (notes.track, notes.pitch, notes.velocity)
            )
            whole = min(duration / ticks, MAX_NOTE_BARS)
            sent.append((track, pitch, velocity, onset / ticks, whole))
            human.append({
                "track": track, "pitch": pitch, "velocity": velocity, "onset": onset / ticks,
                "duration": (min(onset + duration, ticks) - onset) / ticks, "kind": "human",
            })  # fmt: skip
        numerator, denominator = (int(x) for x in score.time_signatures[bar])
        quarters = 4 * numerator / denominator
        plans.append(BarPlan((numerator, denominator), quarters, tuple(sent), tuple(human)))
    return tuple(plans)


def plan_tracks(
    score: Score, agent_voice: int | None, agent_program: int | None, agent_is_drum: bool
) -> tuple[tuple[TrackPlan, ...], int]:
    """Track ids are voice indices; the agent takes ``agent_voice``'s place, or is added after the
    voices when ``agent_voice`` is None or the piece has one voice. Returns (tracks, agent id)."""
    voices = score.n_tracks
    extra = agent_voice is None or voices == 1
    agent_id = voices if extra else agent_voice % voices
    tracks = []
    for voice, info in enumerate(score.track_info):
        if voice != agent_id:
            tracks.append(TrackPlan(voice, info.program, DRUM if info.is_drum else MELODIC, 0))
            continue
        if agent_program is None:
            program, is_drum = info.program, info.is_drum
        else:
            program, is_drum = agent_program, agent_is_drum
        tracks.append(TrackPlan(voice, program, DRUM if is_drum else MELODIC, 1))
    if extra:
        program = DEFAULT_AGENT_PROGRAM if agent_program is None else agent_program
        tracks.append(TrackPlan(agent_id, program, DRUM if agent_is_drum else MELODIC, 1))
    return tuple(tracks), agent_id


class _Stopped(Exception):
    """Internal: stop() was called; the performance thread unwinds quietly."""


@dataclass(eq=False)
class _Run:
    """One performance: what it plays, and its own stop flag and gate."""

    piece_id: str
    bpm: float
    tracks: tuple[TrackPlan, ...]
    plan: tuple[BarPlan, ...]
    stopped: threading.Event = field(default_factory=threading.Event)
    # Held while checking ``stopped`` and handing a message to ``call``: once stop() holds it and
    # sets the flag, this run can enqueue nothing more (``call`` runs messages in arrival order).
    gate: threading.Lock = field(default_factory=threading.Lock)
    in_session: bool = False  # /session/init went out and no error ended the run since
    thread: threading.Thread | None = None


class DemoPerformer:
    """Plays a looped Score into the daemon through ``call`` (``Daemon.call``); thread-safe.

    ``clock`` is the monotonic clock the bar deadlines use, ``wall_clock`` gives CLOCK's Unix
    ``at``; ``lead_s`` is how long before each downbeat its CLOCK event is sent (at most half a bar).
    """

    def __init__(
        self,
        call: Call,
        on_event: OnEvent,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        lead_s: float = 0.1,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self._call = call
        self._on_event = on_event
        self._clock = clock
        self._wall_clock = wall_clock
        self.lead_s = lead_s
        self.call_timeout_s = call_timeout_s
        self._control = threading.Lock()  # serialises start() and stop()
        self._lock = threading.Lock()  # guards _run and _demo
        self._run: _Run | None = None
        self._demo: dict[str, Any] = _demo_dict(False, None, DEFAULT_BPM, (4, 4), None, 0, "")

    # ---- public API ----------------------------------------------------------------------------
    def start(
        self,
        score: Score,
        piece_id: str,
        bpm: float,
        agent_voice: int | None = -1,
        agent_program: int | None = None,
        bars: int | None = None,
        agent_is_drum: bool = False,
    ) -> None:
        """Play ``score`` (looped; its first ``bars`` bars if given) at ``bpm`` quarter notes per
        minute, the agent replacing ``agent_voice`` (default the last voice). A running performance
        is stopped first. Bad arguments raise ValueError; everything later goes to the DEMO event."""
        run = _prepare(score, piece_id, bpm, agent_voice, agent_program, bars, agent_is_drum)
        with self._control:
            self._stop_current("")
            first = run.plan[0]
            with self._lock:
                self._run = run
                self._demo = _demo_dict(
                    True, piece_id, run.bpm, first.meter, None, len(run.plan), "starting"
                )
            self._emit_demo()
            run.thread = threading.Thread(
                target=self._perform, args=(run,), name="sideman-demo", daemon=True
            )
            run.thread.start()

    def stop(self) -> None:
        """Stop playing; if the performance had a session, send ``/midigpt/session/stop``."""
        with self._control:
            self._stop_current("stopped")

    def state(self) -> dict[str, Any]:
        """The DEMO dict of socket_events.md."""
        with self._lock:
            return {**self._demo, "meter": list(self._demo["meter"])}

    @property
    def running(self) -> bool:
        with self._lock:
            return bool(self._demo["running"])

    # ---- stopping ------------------------------------------------------------------------------
    def _stop_current(self, message: str) -> None:
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return
        future = None
        with run.gate:
            run.stopped.set()
            if run.in_session:
                run.in_session = False
                future = self._safe_call("/midigpt/session/stop")
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join(STOP_JOIN_S)
        if isinstance(future, concurrent.futures.Future):
            try:
                future.result(self.call_timeout_s)
            except Exception as exc:  # reported in the state, the performer is stopped regardless
                message = f"stopped; /midigpt/session/stop failed: {_reason(exc)}"
        elif isinstance(future, Exception):
            message = f"stopped; /midigpt/session/stop failed: {_reason(future)}"
        if not message:
            return  # a restart: start() publishes the new state
        with self._lock:
            was_running = self._demo["running"]
            self._demo = {**self._demo, "running": False, "bar": None}
            if was_running or future is not None:
                self._demo["message"] = message
        self._emit_demo()

    def _safe_call(self, address: str, *args: Any) -> concurrent.futures.Future | Exception:
        try:
            return self._call(address, *args)
        except Exception as exc:  # e.g. the daemon's loop already closed at shutdown
            return exc

    # ---- the performance thread ----------------------------------------------------------------
    def _perform(self, run: _Run) -> None:
        try:
            self._set_up(run)
            self._play(run)
        except _Stopped:
            return
        except Exception as exc:
            if run.stopped.is_set():
                return  # a refusal caused by our own stop, e.g. a note after /session/stop
            if not isinstance(exc, (ProtocolError, TimeoutError)):
                log.exception("demo performer failed")
            self._fail(run, _reason(exc))

    def _set_up(self, run: _Run) -> None:
        self._send(run, [("/midigpt/session/init", (SESSION_NAME,))], opens_session=True)
        messages = [
            ("/midigpt/track/create", (t.track_id, t.program, t.track_type, t.is_agent))
            for t in run.tracks
        ]
        messages += [("/midigpt/tempo", (run.bpm,)), ("/midigpt/session/start", ())]
        self._send(run, messages)

    def _play(self, run: _Run) -> None:
        seconds_per_quarter = 60.0 / run.bpm
        first = run.plan[0]
        downbeat = self._clock() + min(self.lead_s, first.quarters * seconds_per_quarter / 2)
        bar = 0
        while True:
            plan = run.plan[bar % len(run.plan)]
            period = plan.quarters * seconds_per_quarter
            lead = min(self.lead_s, period / 2)
            behind = self._clock() - (downbeat - lead)
            if behind > period:  # the thread was held up a whole bar: move the grid, don't rush
                log.warning("demo performer %.3f s behind its clock; re-anchoring", behind)
                downbeat += behind
            self._wait_until(run, downbeat - lead)
            self._downbeat(run, bar, plan, downbeat, period)
            if bar > 0:
                self._wait_until(run, downbeat)
                self._send_bar(run, bar - 1)
            downbeat += period
            bar += 1

    def _downbeat(self, run: _Run, bar: int, plan: BarPlan, downbeat: float, period: float) -> None:
        at = self._wall_clock() + (downbeat - self._clock())
        human = [{**note, "bar": bar} for note in plan.human]
        clock = {
            "bar": bar,
            "at": at,
            "period_s": period,
            "meter": list(plan.meter),
            "human": human,
        }
        with self._lock:
            if self._run is not run:
                raise _Stopped
            self._demo = {**self._demo, "bar": bar, "meter": plan.meter, "message": "playing"}
        self._emit("clock", clock)
        self._emit_demo()

    def _send_bar(self, run: _Run, bar: int) -> None:
        plan = run.plan[bar % len(run.plan)]
        messages = [("/midigpt/note", (*note, bar)) for note in plan.notes]
        messages.append(("/midigpt/bar/end", (bar, *plan.meter)))
        self._send(run, messages)

    def _send(
        self, run: _Run, messages: list[tuple[str, tuple]], *, opens_session: bool = False
    ) -> None:
        """Hand every message to ``call`` in order, then wait for each reply; the first refusal
        raises (ProtocolError, or TimeoutError naming the address)."""
        futures = []
        with run.gate:
            if run.stopped.is_set():
                raise _Stopped
            for address, args in messages:
                futures.append((address, self._call(address, *args)))
                run.in_session = run.in_session or opens_session
        for address, future in futures:
            try:
                future.result(self.call_timeout_s)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(
                    f"{address}: the daemon did not answer within {self.call_timeout_s:g} s"
                ) from None

    def _wait_until(self, run: _Run, deadline: float) -> None:
        while (remaining := deadline - self._clock()) > 0:
            if run.stopped.wait(remaining):
                raise _Stopped
        if run.stopped.is_set():
            raise _Stopped

    def _fail(self, run: _Run, reason: str) -> None:
        with run.gate:
            run.in_session = False  # leave the daemon's session alone: it may be someone else's now
        with self._lock:
            if self._run is not run:
                return
            self._demo = {
                **self._demo,
                "running": False,
                "bar": None,
                "message": f"demo stopped: {reason}",
            }
        log.warning("demo performer stopped: %s", reason)
        self._emit_demo()

    # ---- events --------------------------------------------------------------------------------
    def _emit_demo(self) -> None:
        self._emit("demo", self.state())

    def _emit(self, kind: str, payload: dict) -> None:
        try:
            self._on_event(kind, payload)
        except Exception:  # a broken listener must not stop the music
            log.exception("demo event listener failed on %s", kind)


def _prepare(
    score: Score,
    piece_id: str,
    bpm: float,
    agent_voice: int | None,
    agent_program: int | None,
    bars: int | None,
    agent_is_drum: bool,
) -> _Run:
    """Validate start()'s arguments (ValueError naming the argument) and plan the run."""
    if not isinstance(score, Score) or score.n_tracks < 1 or score.n_bars < 1:
        raise ValueError("score: needs at least one track and one bar")
    number = isinstance(bpm, (int, float)) and not isinstance(bpm, bool)
    if not number or not math.isfinite(bpm) or bpm <= 0:
        raise ValueError(f"bpm: must be a positive number of quarter notes per minute, got {bpm!r}")
    voices = score.n_tracks
    if agent_voice is not None and (
        not isinstance(agent_voice, int) or not -voices <= agent_voice < voices
    ):
        raise ValueError(
            f"agent_voice: must be a voice index in {-voices}..{voices - 1} or None, got {agent_voice!r}"
        )
    if agent_program is not None and (
        not isinstance(agent_program, int) or not 0 <= agent_program <= 127
    ):
        raise ValueError(
            f"agent_program: must be a General MIDI program 0..127, got {agent_program!r}"
        )
    if bars is not None and (not isinstance(bars, int) or bars < 1):
        raise ValueError(f"bars: must be a positive number of bars, got {bars!r}")
    loop_bars = score.n_bars if bars is None else min(bars, score.n_bars)
    tracks, agent_id = plan_tracks(score, agent_voice, agent_program, bool(agent_is_drum))
    plan = plan_loop(score, loop_bars, agent_id)
    return _Run(piece_id=str(piece_id), bpm=float(bpm), tracks=tracks, plan=plan)


def _demo_dict(
    running: bool, piece: str | None, bpm: float, meter: tuple[int, int], bar: int | None,
    loop_bars: int, message: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "running": running, "piece": piece, "bpm": float(bpm), "meter": meter, "bar": bar,
        "loop_bars": loop_bars, "message": message,
    }  # fmt: skip


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ProtocolError):
        return f"{exc.message} (error {exc.code})"
    return str(exc) or type(exc).__name__
