"""From a barline to notes on the wire: trigger, job, deadline, and delivery of the outcome.

On the loop: a new bar closes → the trigger rule (rising playhead only) picks a target → the job is
built from an O(window) snapshot with its session token and deadline → the worker gets it (a
queued older job is superseded). The worker calls back from its thread; the callbacks hop onto the
loop, where a result is checked (session token current? target still in the future?) before it is
merged into the rolling score and sent framed open / note… / close / features. Every job ends in
one ``/midigpt/job`` report, so a client always knows what happened to each bar (D33, D57).

Output control (D58, ``daemon.controls``): while *frozen* no barline triggers a job; while *muted*
results still enter the agent's history but nothing ``/midigpt/generated/*`` is sent (the report
says ``"muted": true``); ``regenerate`` queues a job for a future bar even though it was generated,
and its result replaces the earlier version; a client ``cancel`` ends jobs without error 5.

Adaptation (D50, ``daemon.adapt``): every job is measured against its budget, deadline − created.
When the last job used more than 80% of it, or missed its deadline (late, or cancelled or dropped
at it), the next job runs one level more degraded: level 1 samples ``num_candidates`` 1, levels 2
and up step ``model_dim`` down through the checkpoint's smaller windows (8 → 4 for yellow), never
below lookahead + anticipated + 1 bars. After 4 consecutive jobs under 50% of their budget it steps
back up one level. The level is in ``/midigpt/state`` and in each job report (``"degraded"``).
Jobs without a known deadline (before the tempo is known) are not measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Any

import numpy as np

from sideman.daemon import jobs as jobs_mod
from sideman.daemon.adapt import DegradationPolicy, budget_used, degradation_steps, degrade
from sideman.daemon.controls import CLIENT_CANCEL_REASON, OutputControls
from sideman.daemon.events import EventBus
from sideman.daemon.jobs import BarClock, Job, JobOutcome, trigger_target
from sideman.daemon.protocol import ErrorCode
from sideman.daemon.session import RUNNING, Session
from sideman.dsp.features import bar_features

log = logging.getLogger(__name__)

SEND_MARGIN_S = 0.010  # a result must be ready this long before its bar starts: time to put it on the wire


class Scheduler:
    def __init__(self, session: Session, worker: Any, bus: EventBus, loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.worker = worker
        self.bus = bus
        self.loop = loop
        self.clock = BarClock()
        self.counts: Counter[str] = Counter()
        self.last_job: dict[str, Any] | None = None
        self._started: set[int] = set()
        self.controls = OutputControls()
        self.adapt = DegradationPolicy()
        self._submitted: dict[int, tuple[int, float | None]] = {}  # job_id -> (level, budget s)
        session.on_bar.append(self.on_bar)
        session.on_reset.append(self.on_reset)
        worker.on_start = self._from_worker_start
        worker.on_outcome = self._from_worker_outcome

    # ---- loop side: triggers ---------------------------------------------------------------
    def on_bar(self, closed: Any) -> None:
        session = self.session
        now = time.monotonic()
        self.clock.bar_ended(closed.bar_index, session.score.meter(closed.bar_index), now)
        if session.state != RUNNING or self.controls.frozen:
            return
        target = trigger_target(closed.playhead_before, closed.playhead, session.params.values(), session.score.origin)
        if target is None:
            return
        self._submit(target, now)

    def regenerate(self, bar_index: int) -> None:
        """Queue a one-bar job for ``bar_index`` even though it was generated (D58)."""
        if self.session.state == RUNNING:
            self._submit(bar_index, time.monotonic(), regenerate=True)

    def cancel(self, reason: str) -> None:
        """Cancel the running and the queued job; each is reported cancelled with ``reason``."""
        self.worker.cancel_all(reason)

    def _submit(self, target: int, now: float, *, regenerate: bool = False) -> None:
        session = self.session
        params = session.params.take_snapshot()  # consumes one-shot values exactly here (D6)
        if regenerate:
            params["num_anticipated_bars"] = 1
        params, level = degrade(params, self.adapt.level, session.encoder_config.num_bars_map)
        job = jobs_mod.build_job(
            job_id=session.next_job_id(),
            session_token=session.token,
            target_bar=target,
            score=session.score,
            tracks=session.tracks,
            params=params,
            attributes=dict(session.attributes),
            bar_attributes=session.bar_attributes.levels(),
            encoder_config=session.encoder_config,
            deadline=self._deadline(target, params, now),
            now=now,
            in_flight=self.worker.in_flight_bars(),
            regenerate=regenerate,
            defer=True,
        )
        if job is None:  # every bar of [target, target + j) was generated already (D47)
            return
        self.counts["queued"] += 1
        budget = None if job.deadline is None else job.deadline - job.created
        self._submitted[job.job_id] = (level, budget)
        self._report_queued(job, level)
        self.worker.submit(job)

    def _deadline(self, target: int, params: dict[str, Any], now: float) -> float | None:
        timeout = params.get("gen_timeout") or 0.0
        if timeout > 0:
            return now + timeout  # the client's explicit override
        start = self.clock.bar_start_time(target, self.session.score.playhead, self.session.score.meter)
        return None if start is None else start - SEND_MARGIN_S

    def on_reset(self, reason: str) -> None:
        self.worker.cancel_all(reason)
        if reason.endswith("re-initialised"):
            self.clock.reset()
            self.controls.reset()
            self.adapt.reset()

    def set_tempo(self, bpm: float) -> None:
        self.clock.set_tempo(bpm)

    # ---- worker side: hop onto the loop -----------------------------------------------------
    def _from_worker_start(self, job: Job) -> None:
        self.loop.call_soon_threadsafe(self._job_started, job)

    def _from_worker_outcome(self, outcome: JobOutcome) -> None:
        self.loop.call_soon_threadsafe(self._deliver, outcome)

    # ---- loop side: delivery ---------------------------------------------------------------
    def _current(self, session_token: int) -> bool:
        return session_token == self.session.token and self.session.state == RUNNING

    def _job_started(self, job: Job) -> None:
        if not self._current(job.session_token):
            return
        self._started.add(job.job_id)
        self.session.broadcast("/midigpt/status", ("generating",))
        if job.prompt_state:
            self.session.broadcast("/midigpt/prompt/state", (json.dumps(job.prompt_state),))
            self.bus.publish("prompt", job_id=job.job_id, **job.prompt_state)

    def _deliver(self, outcome: JobOutcome) -> None:
        started = outcome.job_id in self._started
        self._started.discard(outcome.job_id)
        level = self._adapt(outcome)
        status, reason = outcome.status, outcome.reason
        sent_bars: list[int] = []
        muted = False
        if not self._current(outcome.session_token):
            status, reason = "dropped", "stale: the session was re-initialised or stopped (D1, D5)"
            started = False  # nothing more goes out for an old session
        elif status in ("done", "late"):
            # The worker's "late" means past the deadline margin; what counts is whether each bar
            # has started: a bar still in the future is sent, one already playing never is (D32, D36).
            playhead = self.session.score.playhead
            late = [bar for bar in outcome.bars if bar <= playhead]
            in_time = [bar for bar in outcome.bars if bar not in late]
            muted = self.controls.muted and bool(in_time)
            for bar in in_time:
                self._send_bar(outcome, bar, muted=muted)
            sent_bars = [] if muted else in_time
            if late:
                status, reason = "late", f"bar(s) {late} had started (playhead {playhead}); not sent"
            else:
                status = "done"
            if muted:
                reason = "; ".join(filter(None, (f"muted: bar(s) {in_time} kept in the agent's history, not sent", reason)))
            elif status == "done":
                if outcome.sampled_attrs:
                    payload = {"start_bar": outcome.target_bar, "end_bar": outcome.target_bar + len(outcome.bars), "attrs": dict(outcome.sampled_attrs)}
                    self.session.broadcast("/midigpt/sampled/attrs", (json.dumps(payload),))
        client_cancel = status == "cancelled" and reason == CLIENT_CANCEL_REASON  # asked for: no error
        if status in ("failed", "cancelled") and not client_cancel and self._current(outcome.session_token):
            self.session.broadcast("/midigpt/error", (int(ErrorCode.GENERATION), f"bar {outcome.target_bar}: {reason}"))
        self._report(outcome, status, reason, sent_bars, level=level, muted=muted)
        if started:
            self.session.broadcast("/midigpt/status", ("ready",))

    def _adapt(self, outcome: JobOutcome) -> int:
        """Account the job's budget use (D50); returns the level the job ran at."""
        level, budget = self._submitted.pop(outcome.job_id, (self.adapt.level, None))
        used = budget_used(outcome.status, outcome.reason, outcome.latency_ms / 1e3, budget)
        if used is not None and outcome.session_token == self.session.token:
            steps = degradation_steps(self.session.params.values(), self.session.encoder_config.num_bars_map)
            self.adapt.record(used, max_level=len(steps) - 1)
        return level

    def _send_bar(self, outcome: JobOutcome, bar: int, *, muted: bool = False) -> None:
        """Store the bar in the agent's history and, unless ``muted``, send it framed."""
        session = self.session
        num, den = session.score.meter(bar)
        bar_ticks = num * 4 * session.encoder_config.resolution // den
        for track_id in outcome.agent_track_ids:
            onset, duration, pitch, velocity = outcome.notes.get((track_id, bar), _EMPTY)
            # One rule for history and output (D31): a generated note ends at its barline.
            duration = np.minimum(duration, bar_ticks - onset).clip(min=1)
            session.score.set_generated(track_id, bar, onset, duration, pitch, velocity)
            if muted:
                continue
            session.broadcast("/midigpt/generated/open", (track_id, bar, len(pitch)))
            for i in range(len(pitch)):
                session.broadcast(
                    "/midigpt/generated/note",
                    (track_id, bar, int(pitch[i]), int(velocity[i]),
                     min(onset[i] / bar_ticks, 0.9999), min(max(duration[i] / bar_ticks, 0.0001), 1.0)),
                )  # fmt: skip
            session.broadcast("/midigpt/generated/close", (track_id, bar))
            features = None
            if len(pitch):
                features = bar_features(onset, duration, pitch, velocity, num, bar_ticks)
                session.broadcast("/midigpt/generated/features", (track_id, bar, *features))
            self.bus.publish(
                "generated", track_id=track_id, bar_index=bar, meter=(num, den), bar_ticks=bar_ticks,
                notes=np.stack([onset, duration, pitch, velocity], axis=1).tolist(),
                features=None if features is None else [float(f) for f in features],
            )  # fmt: skip

    def _report_queued(self, job: Job, level: int) -> None:
        report = {"job_id": job.job_id, "target_bar": job.target_bar, "bars": list(job.bars), "status": "queued", "degraded": level}
        if job.deadline is not None:
            report["budget_ms"] = round(1e3 * (job.deadline - job.created), 1)
        self.session.broadcast("/midigpt/job", (json.dumps(report),))
        self.bus.publish("job", **report)

    def _report(
        self, outcome: JobOutcome, status: str, reason: str, sent_bars: list[int], *, level: int = 0, muted: bool = False
    ) -> None:
        self.counts[status] += 1
        report = {
            "job_id": outcome.job_id,
            "target_bar": outcome.target_bar,
            "bars": list(outcome.bars),
            "sent_bars": sent_bars,
            "status": status,
            "reason": reason,
            "latency_ms": round(outcome.latency_ms, 1),
            "generated_tokens": outcome.generated_tokens,
            "degraded": level,
        }
        if muted:
            report["muted"] = True
        if outcome.deadline is not None:
            report["slack_ms"] = round(1e3 * (outcome.deadline - time.monotonic()), 1)
        self.last_job = report
        self.session.broadcast("/midigpt/job", (json.dumps(report),))
        self.bus.publish("job", **report, sampled_attrs=dict(outcome.sampled_attrs or {}) if status == "done" else None)

    def describe(self) -> dict[str, Any]:
        return {
            "last_job": self.last_job,
            "jobs": dict(self.counts),
            "seconds_per_quarter": self.clock.seconds_per_quarter(),
            "worker": self.worker.stats(),
            "degraded": self.adapt.level,
            **self.controls.describe(),
            "meters_ahead": self._meters_ahead(),
        }

    def _meters_ahead(self, bars: int = 8) -> dict[str, list[int]]:
        """The meters jobs will size the next bars with (recorded, announced or the last seen, D35)."""
        score = self.session.score
        return {str(b): list(score.meter(b)) for b in range(score.playhead, score.playhead + bars)}


_EMPTY = tuple(np.zeros(0, dtype=np.int32) for _ in range(4))
