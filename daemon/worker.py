"""The generation worker: one thread, one job at a time, every job reported exactly once.

At most one job runs and one waits. ``submit`` replaces a waiting job, which is reported
"dropped" (superseded, D49); ``cancel_all`` cancels both (session init/stop, D1/D5). A job whose
deadline has passed before it starts is dropped; a running job is cancelled at its deadline by a
timer that sets its cancel event, which the engine checks between tokens (D3, D36). Whatever
happens inside a job, including an exception, becomes a ``JobOutcome``; the thread never dies, and
should it die anyway it is restarted on the next ``submit`` (D4).

Callbacks: ``on_start(job)`` runs on the worker thread just before a job starts; ``on_outcome``
runs on the worker thread for jobs it ran, and on the calling thread for jobs that ``submit`` or
``cancel_all`` removed from the queue. Both must be quick and thread-safe (the server hops them
onto its loop). A callback that raises is logged and does not disturb the worker.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sideman.daemon.jobs import (
    SAMPLED_ATTRIBUTE_NAMES,
    Job,
    JobOutcome,
    NoteColumns,
    outcome_for,
    prepare_job,
)
from sideman.engine.inference import GenerationCancelled, GenerationFailed
from sideman.engine.request import RequestError
from sideman.engine.score import NoteArrays
from sideman.engine.vocab import ATTRIBUTE_NAMES

log = logging.getLogger(__name__)

StartCallback = Callable[[Job], None]
OutcomeCallback = Callable[[JobOutcome], None]


@dataclass
class _Running:
    """The job on the worker thread and its cancellation (first reason wins)."""

    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, reason: str) -> None:
        with self.lock:
            if not self.reason:
                self.reason = reason
        self.cancel.set()


class GenerationWorker:
    """Runs jobs on ``engine`` (anything with ``session(score, request, cancel, rest_on_silence=)``)."""

    def __init__(
        self,
        engine: Any,
        *,
        threads: int = 1,
        on_start: StartCallback | None = None,
        on_outcome: OutcomeCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.threads = max(1, int(threads))
        self.on_start = on_start
        self.on_outcome = on_outcome
        self._clock = clock
        self._cond = threading.Condition()
        self._queued: Job | None = None
        self._running: _Running | None = None
        self._closed = False
        self._counts: Counter[str] = Counter()
        self._last_latency_ms: float | None = None
        self._restarts = 0
        self._thread: threading.Thread | None = None
        self._start_thread()

    # ---- public API ------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job`` without blocking; a job still waiting is replaced and reported dropped."""
        with self._cond:
            if self._closed:
                replaced, job_refused = None, job
            else:
                replaced, job_refused = self._queued, None
                self._queued = job
                self._counts["submitted"] += 1
                self._cond.notify()
            self._supervise()
        if replaced is not None:
            self._report(
                outcome_for(
                    replaced, "dropped", f"superseded by bar {job.target_bar}", self._clock()
                )
            )
        if job_refused is not None:
            self._report(outcome_for(job_refused, "dropped", "worker closed", self._clock()))

    def cancel_all(self, reason: str) -> None:
        """Cancel the running job (between tokens) and drop the waiting one, both with ``reason``."""
        with self._cond:
            queued, self._queued = self._queued, None
            running = self._running
        if running is not None:
            running.stop(reason)
        if queued is not None:
            self._report(outcome_for(queued, "cancelled", reason, self._clock()))

    def in_flight_bars(self) -> frozenset[int]:
        """Bars of the running job (a new job should not generate them again, D47)."""
        running = self._running
        return frozenset(running.job.bars) if running is not None else frozenset()

    @property
    def busy(self) -> bool:
        return self._running is not None

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "busy": self._running is not None,
                "queued": self._queued is not None,
                "running_job": self._running.job.job_id if self._running else None,
                "counts": dict(self._counts),
                "last_latency_ms": self._last_latency_ms,
                "restarts": self._restarts,
                "alive": self._thread is not None and self._thread.is_alive(),
            }

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything, stop the thread and wait for it (up to ``timeout`` seconds)."""
        self.cancel_all("worker closed")
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---- thread ----------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sideman-generation", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        """Restart the thread if it died (called with the lock held)."""
        if not self._closed and (self._thread is None or not self._thread.is_alive()):
            if self._thread is not None:
                self._restarts += 1
                log.error("generation worker thread had died; restarting it")
            self._start_thread()

    def _loop(self) -> None:
        if "torch" in sys.modules:  # an in-process engine; a child-process engine sets its own
            try:
                sys.modules["torch"].set_num_threads(self.threads)
            except Exception:  # torch refusing: the engine still runs with its defaults
                log.exception("could not set the worker's torch thread count")
        while True:
            with self._cond:
                while self._queued is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                # An engine in another process hands out the cancel event its child checks (D3).
                new_cancel = getattr(self.engine, "new_cancel_event", threading.Event)
                running = _Running(self._queued, cancel=new_cancel())
                self._queued = None
                self._running = running
            try:
                outcome = self._run(running)
            except Exception as exc:  # the job wrapper itself failed: still report it (D4)
                log.exception("job %d crashed outside the engine", running.job.job_id)
                outcome = outcome_for(
                    running.job, "failed", f"{type(exc).__name__}: {exc}", self._clock()
                )
            finally:
                with self._cond:
                    self._running = None
            self._report(outcome)

    def _run(self, running: _Running) -> JobOutcome:
        job = running.job = prepare_job(running.job)  # the request is built here, off the OSC loop
        if job.request is None:
            return outcome_for(job, "failed", job.error or "no request", self._clock())
        started = self._clock()
        if job.deadline is not None and started >= job.deadline:
            late_ms = 1e3 * (started - job.deadline)
            return outcome_for(
                job, "dropped", f"deadline passed {late_ms:.0f} ms before it could start", started
            )
        if running.cancel.is_set():  # cancelled between leaving the queue and starting
            return outcome_for(job, "cancelled", running.reason or "cancelled", started)
        self._call(self.on_start, job)
        timer = None
        if job.deadline is not None:
            timer = threading.Timer(
                max(job.deadline - started, 0.0), running.stop, args=("deadline",)
            )
            timer.daemon = True
            timer.start()
        try:
            score = job.snapshot.to_score()
            session = self.engine.session(score, job.request, running.cancel, rest_on_silence=True)
            result = session.run()
        except GenerationCancelled:
            return outcome_for(job, "cancelled", running.reason or "cancelled", self._clock())
        except RequestError as exc:
            return outcome_for(job, "failed", f"invalid request: {exc}", self._clock())
        except GenerationFailed as exc:
            return outcome_for(job, "failed", str(exc), self._clock())
        except Exception as exc:
            log.exception("job %d failed", job.job_id)
            return outcome_for(job, "failed", f"{type(exc).__name__}: {exc}", self._clock())
        finally:
            if timer is not None:
                timer.cancel()
        finished = self._clock()
        notes = extract_notes(job, result.score.notes)
        status, reason = "done", ""
        if job.deadline is not None and finished > job.deadline:
            status, reason = (
                "late",
                f"finished {1e3 * (finished - job.deadline):.0f} ms after its deadline",
            )
        elif not any(len(columns[2]) for columns in notes.values()):
            reason = "silent bar"  # a rest is music, not an error (D43)
        return outcome_for(
            job,
            status,
            reason,
            finished,
            notes=notes,
            sampled_attrs=self._sampled_attrs(job, result.score),
            generated_tokens=int(getattr(result, "generated_tokens", 0)),
        )

    def _sampled_attrs(self, job: Job, score: Any) -> dict[str, int] | None:
        """Track-level attributes of the first agent over the job's bars (§5.3), if computable."""
        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is None or not job.agent_track_ids:
            return None
        index = job.snapshot.track_ids.index(job.agent_track_ids[0])
        bar_mask = np.zeros((score.n_tracks, score.n_bars), dtype=bool)
        bar_mask[index, [b - job.window_start for b in job.bars]] = True
        try:
            values = tokenizer.compute_attributes(score, bar_mask=bar_mask)[index]
        except Exception:
            log.exception("job %d: sampled attributes could not be computed", job.job_id)
            return None
        attrs = {
            name: int(values[i])
            for i, name in enumerate(ATTRIBUTE_NAMES)
            if name in SAMPLED_ATTRIBUTE_NAMES and values[i] >= 0
        }
        return attrs or None

    def _report(self, outcome: JobOutcome) -> None:
        with self._cond:
            self._counts[outcome.status] += 1
            if outcome.status in ("done", "late"):
                self._last_latency_ms = outcome.latency_ms
        log.debug(
            "job %d bar %d: %s %s",
            outcome.job_id,
            outcome.target_bar,
            outcome.status,
            outcome.reason,
        )
        self._call(self.on_outcome, outcome)

    @staticmethod
    def _call(callback: Callable[[Any], None] | None, value: Any) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.exception("worker callback %r raised", callback)


def extract_notes(job: Job, notes: NoteArrays) -> dict[tuple[int, int], NoteColumns]:
    """The agents' notes of the job's bars from a result in window coordinates, keyed by
    (track_id, absolute bar): velocity > 0 only, melodic pitches octave-folded into range."""
    out: dict[tuple[int, int], NoteColumns] = {}
    sounding = notes.velocity > 0
    for track_id in job.agent_track_ids:
        index = job.snapshot.track_ids.index(track_id)
        in_track = sounding & (notes.track == index)
        pitch_range = job.pitch_ranges.get(track_id)
        for bar in job.bars:
            sel = notes.select(in_track & (notes.bar == bar - job.window_start))
            pitch = sel.pitch if pitch_range is None else fold_pitches(sel.pitch, *pitch_range)
            out[(track_id, bar)] = (sel.onset, sel.duration, pitch.astype(np.int32), sel.velocity)
    return out


def fold_pitches(pitch: np.ndarray, low: int, high: int) -> np.ndarray:
    """Move pitches by whole octaves into [low, high]; where a range narrower than an octave has
    no octave of the pitch, it goes to the nearer bound."""
    pitch = pitch.astype(np.int64)
    up = pitch + 12 * np.maximum((low - pitch + 11) // 12, 0)
    down = pitch - 12 * np.maximum((pitch - high + 11) // 12, 0)
    out = np.where(pitch < low, np.where(up <= high, up, low), pitch)
    return np.where(pitch > high, np.where(down >= low, down, high), out)


__all__ = ["GenerationWorker", "extract_notes", "fold_pitches"]
