"""Generation jobs: when to trigger, which bars, what window, and the engine request for them.

Everything here runs on the I/O loop and is O(window): ``trigger_target`` decides on a rising
playhead (osc-protocol §11.2, D19/D49), ``build_job`` snapshots the bounded window of the rolling
score and turns it, the parameter snapshot, the attribute overrides and the per-track parameters
into one immutable ``Job`` carrying a ``GenerationRequest`` in window coordinates. ``BarClock``
estimates the tempo from ``/bar/end`` arrivals so each job gets a deadline (the start of its
target bar). ``JobOutcome`` is what the worker reports for every job, whatever happened (D33).

Window rule (D46, D48): the window is ``model_dim`` bars ending at the job's last bar, but never
starting before the session's first bar (``origin``): during warm-up it is ``[origin, origin + M)``
and its bars after the job's bars are padded empty with their meters. Conditioning bars at or after
the playhead are masked, except bars a declared loop makes known (D60: the snapshot fills them with
the loop's content, so they are context); agent bars after the job's bars are masked too. An autoregressive track
would still sample those masked bars (the decoder continues a suffix to the window's end), so a
warm-up job whose bars do not end the window generates the agent by infilling exactly its bars;
once the window is right-anchored on the job's bars the agent is autoregressive.
"""

from __future__ import annotations

import logging
import math
import secrets
import statistics
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from sideman.engine.planner import plan_request
from sideman.engine.request import (
    FrozenMap,
    GenerationRequest,
    InferenceConfig,
    RequestError,
    TrackPrompt,
)
from sideman.engine.score import Score
from sideman.engine.vocab import EncoderConfig

log = logging.getLogger(__name__)

# Values used when a parameter snapshot lacks a name (osc-protocol §12.2 defaults).
DEFAULT_PARAMS: Mapping[str, Any] = FrozenMap(
    {
        "lookahead_bars": 1,
        "buffer_bars": 4,
        "num_anticipated_bars": 1,
        "adapt_buffer": True,
        "model_dim": 8,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "mask_k": 0,
        "mask_p": 0.0,
        "temperature_escalation": 1.0,
        "novelty_check": True,
        "silence_check": True,
        "sampling_seed": -1,
        "max_attempts": 3,
        "num_candidates": 3,
        "warmup_policy": "a_empty",
        "mask_mode": "attention",
        "polyphony_hard_limit": 0,
        "density_hard_limit": 0,
        "gen_timeout": 0.0,
    }
)
OUTCOME_STATUSES = ("done", "late", "cancelled", "failed", "dropped")
SAMPLED_ATTRIBUTE_NAMES = (
    "note_density",
    "min_polyphony",
    "max_polyphony",
    "onset_polyphony",
    "min_note_duration",
    "max_note_duration",
)
CLOCK_INTERVALS = 8  # the tempo estimate is the median of this many recent bar intervals


def _param(params: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    return DEFAULT_PARAMS[name] if value is None else value


# ---- trigger ---------------------------------------------------------------------------------


def trigger_target(
    playhead_before: int, playhead: int, params: Mapping[str, Any], origin: int | None = 0
) -> int | None:
    """The target bar of the job a ``/bar/end`` triggers, or None (osc-protocol §11.2, fixed).

    Only a rising playhead triggers, so repeated or old ``/bar/end`` never queue a duplicate (D19).
    The buffer counts bars since ``origin`` (the session's first bar, D18): with ``adapt_buffer``
    a job starts once p + k >= B, otherwise once p >= B. The target is always p + k (absolute).
    """
    if playhead <= playhead_before:
        return None
    k = int(_param(params, "lookahead_bars"))
    buffer_bars = int(_param(params, "buffer_bars"))
    played = playhead - (origin or 0)
    ready = played + k >= buffer_bars if _param(params, "adapt_buffer") else played >= buffer_bars
    return playhead + k if ready else None


def job_bars(target_bar: int, num_anticipated: int, already: Collection[int]) -> tuple[int, ...]:
    """Bars of [target, target + j) not generated (or in flight) yet: no bar is made twice (D47)."""
    return tuple(b for b in range(target_bar, target_bar + num_anticipated) if b not in already)


def job_window(bars: Sequence[int], origin: int, model_dim: int) -> tuple[int, int]:
    """``model_dim`` bars ending at the job's last bar, never starting before ``origin``."""
    end = max(max(bars) + 1, origin + model_dim)
    return end - model_dim, end


def derive_seed(sampling_seed: int, target_bar: int) -> int:
    """A 31-bit seed from (sampling_seed, target_bar): reproducible runs, a different draw per bar
    (D44). The engine adds the attempt number to it."""
    state = np.random.SeedSequence([int(sampling_seed), int(target_bar)]).generate_state(1)
    return int(state[0] >> 1)


# ---- tempo -------------------------------------------------------------------------------------


MeterOf = Callable[[int], tuple[int, int]]


def bar_quarters(meter: tuple[int, int]) -> float:
    """Length of a bar in quarter notes (6/8 = 3.0, 7/8 = 3.5)."""
    num, den = meter
    return num * 4 / den


class BarClock:
    """Seconds per quarter from ``/bar/end`` arrival times; predicts when a future bar starts.

    An interval counts only between consecutive bars (a jump re-anchors the clock); the estimate is
    the median of the last ``CLOCK_INTERVALS`` intervals, each divided by its bar's length in
    quarters, so meter changes do not disturb it. ``set_tempo`` overrides the estimate.
    """

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._per_quarter: deque[float] = deque(maxlen=CLOCK_INTERVALS)
        self._override: float | None = None
        self._last_bar: int | None = None
        self._last_time: float | None = None

    def bar_ended(self, bar_index: int, meter: tuple[int, int], now: float | None = None) -> None:
        """Record that ``bar_index`` (of this meter) just ended, i.e. bar_index + 1 starts now."""
        now = self._now() if now is None else now
        if self._last_bar is not None and bar_index <= self._last_bar:
            return  # an old or repeated bar says nothing about the tempo
        if (
            self._last_bar is not None
            and bar_index == self._last_bar + 1
            and self._last_time is not None
        ):
            interval = now - self._last_time
            if interval > 0:
                self._per_quarter.append(interval / bar_quarters(meter))
        self._last_bar, self._last_time = bar_index, now

    def set_tempo(self, bpm: float | None) -> None:
        """Fix the tempo (quarter notes per minute); None goes back to the measured estimate."""
        if bpm is not None and not (math.isfinite(bpm) and bpm > 0):
            raise ValueError(f"tempo must be a finite number of beats per minute > 0, got {bpm}")
        self._override = None if bpm is None else 60.0 / bpm

    def reset(self) -> None:
        """Forget arrivals, estimates and any tempo override (a new session)."""
        self._per_quarter.clear()
        self._override = None
        self._last_bar = self._last_time = None

    def seconds_per_quarter(self) -> float | None:
        if self._override is not None:
            return self._override
        return statistics.median(self._per_quarter) if self._per_quarter else None

    def bpm(self) -> float | None:
        spq = self.seconds_per_quarter()
        return None if spq is None else 60.0 / spq

    def bar_start_time(self, bar_index: int, playhead: int, meter_of: MeterOf) -> float | None:
        """Expected monotonic time at which ``bar_index`` starts; the last arrival started the
        playhead bar. None until a tempo and an arrival are known."""
        spq = self.seconds_per_quarter()
        if spq is None or self._last_time is None:
            return None
        if bar_index >= playhead:
            quarters = sum(bar_quarters(meter_of(b)) for b in range(playhead, bar_index))
        else:
            quarters = -sum(bar_quarters(meter_of(b)) for b in range(bar_index, playhead))
        return self._last_time + quarters * spq


# ---- jobs and outcomes ---------------------------------------------------------------------------


class SnapshotLike(Protocol):
    """What a job needs of ``rolling.WindowSnapshot``."""

    track_ids: tuple[int, ...]
    n_bars: int

    def bar_note_counts(self) -> np.ndarray: ...

    def to_score(self) -> Score: ...


@dataclass(frozen=True)
class Job:
    """One generation: bars ``bars`` (absolute) for the agent tracks, from a window snapshot.

    ``request`` is in snapshot coordinates (bar 0 = ``window_start``, track i = snapshot
    ``track_ids[i]``). ``error`` is set, and ``request`` None, when no valid request could be
    built; the worker then reports the job failed with that text.
    """

    job_id: int
    session_token: int
    target_bar: int
    bars: tuple[int, ...]
    snapshot: Any
    window_start: int
    agent_track_ids: tuple[int, ...]
    request: GenerationRequest | None
    deadline: float | None
    created: float
    params: Mapping[str, Any] = field(default_factory=FrozenMap)
    pitch_ranges: Mapping[int, tuple[int, int]] = field(default_factory=FrozenMap)
    prompt_state: Mapping[str, Any] = field(default_factory=dict)
    seed: int = -1
    error: str | None = None
    drum_track_ids: frozenset[int] = frozenset()
    # Inputs of the request when it is built off the loop (``build_job(defer=True)``); the worker
    # turns them into ``request`` and ``prompt_state`` with ``prepare_job``.
    recipe: Mapping[str, Any] | None = None


NoteColumns = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray
]  # onset, duration, pitch, velocity


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended. ``notes[(track_id, bar)]`` = (onset, duration, pitch, velocity) int32
    arrays in ticks, velocity > 0 only, pitch range applied; present for every agent and bar of a
    done or late job (empty arrays for a rest)."""

    job_id: int
    session_token: int
    target_bar: int
    bars: tuple[int, ...]
    status: str
    reason: str = ""
    latency_ms: float = 0.0
    notes: Mapping[tuple[int, int], NoteColumns] = field(default_factory=dict)
    sampled_attrs: Mapping[str, int] | None = None
    prompt_state: Mapping[str, Any] = field(default_factory=dict)
    generated_tokens: int = 0
    deadline: float | None = None
    agent_track_ids: tuple[int, ...] = ()
    seed: int = -1

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"job status must be one of {OUTCOME_STATUSES}, got {self.status!r}")


def outcome_for(
    job: Job, status: str, reason: str = "", now: float | None = None, **fields: Any
) -> JobOutcome:
    """An outcome carrying the job's identity, with latency measured from its creation."""
    now = time.monotonic() if now is None else now
    return JobOutcome(
        job_id=job.job_id,
        session_token=job.session_token,
        target_bar=job.target_bar,
        bars=job.bars,
        status=status,
        reason=reason,
        latency_ms=1e3 * (now - job.created),
        prompt_state=job.prompt_state,
        deadline=job.deadline,
        agent_track_ids=job.agent_track_ids,
        seed=job.seed,
        **fields,
    )


# ---- building a job ------------------------------------------------------------------------------


class TrackLike(Protocol):
    """What ``build_job`` reads of a session track (``session.TrackState``)."""

    track_id: int
    is_drum: bool
    is_agent: bool
    params: Mapping[str, Any]


def build_job(
    *,
    job_id: int,
    session_token: int,
    target_bar: int,
    score: Any,
    tracks: Mapping[int, TrackLike],
    params: Mapping[str, Any],
    attributes: Mapping[str, int] | None = None,
    encoder_config: EncoderConfig | None = None,
    deadline: float | None = None,
    now: float | None = None,
    in_flight: Collection[int] = (),
    bar_attributes: Mapping[int, Mapping[str, int]] | None = None,
    regenerate: bool = False,
    defer: bool = False,
) -> Job | None:
    """Snapshot the window of the rolling ``score`` and build the job for ``target_bar``.

    Returns None when every bar of [target, target + j) is already generated or in flight
    (``in_flight``: bars of the running job, see ``GenerationWorker.in_flight_bars``), unless
    ``regenerate`` asks for those bars again (``/midigpt/agent/regenerate``, D58). A request
    that cannot be built or does not validate against ``encoder_config`` gives a job with
    ``error`` set, so it is still reported (as failed) rather than vanishing. With ``defer`` only
    the O(window) snapshot is taken here and the request is built by ``prepare_job`` in the
    worker, keeping the OSC loop's work at a barline small (D7).
    """
    now = time.monotonic() if now is None else now
    agents = tuple(t.track_id for t in tracks.values() if t.is_agent)
    generated = [score.generated_bars(agent) for agent in agents]
    already = set.intersection(*generated) if generated else set()
    skipped = set() if regenerate else already | set(in_flight)
    bars = job_bars(target_bar, int(_param(params, "num_anticipated_bars")), skipped)
    if not bars:
        return None
    origin = score.origin if score.origin is not None else score.playhead
    start, end = job_window(bars, origin, int(_param(params, "model_dim")))
    snapshot = score.window(start, end)
    sampling_seed = int(_param(params, "sampling_seed"))
    # A free-running seed is still drawn here and recorded in the job, so a bar can be replayed.
    seed = derive_seed(sampling_seed, target_bar) if sampling_seed >= 0 else secrets.randbits(31)
    pitch_ranges = {
        t.track_id: (int(t.params.get("min_pitch", 0)), int(t.params.get("max_pitch", 127)))
        for t in tracks.values()
        if t.is_agent and not t.is_drum
    }
    job = dict(
        job_id=job_id,
        session_token=session_token,
        target_bar=target_bar,
        bars=bars,
        snapshot=snapshot,
        window_start=start,
        agent_track_ids=agents,
        deadline=deadline,
        created=now,
        params=FrozenMap(params),
        pitch_ranges=FrozenMap({k: v for k, v in pitch_ranges.items() if v != (0, 127)}),
        seed=seed,
        drum_track_ids=frozenset(t.track_id for t in tracks.values() if t.is_drum),
    )
    recipe = FrozenMap(
        {
            "playhead": score.playhead,
            "tracks": FrozenMap({tid: _FrozenTrack.of(t) for tid, t in tracks.items()}),
            "params": FrozenMap(params),
            "attributes": FrozenMap(attributes or {}),
            "bar_attributes": FrozenMap(bar_attributes or {}),
            "encoder_config": encoder_config,
        }
    )
    deferred = Job(request=None, recipe=recipe, **job)
    return deferred if defer else prepare_job(deferred)


@dataclass(frozen=True)
class _FrozenTrack:
    """A session track as it was at snapshot time (the live one may change under the worker)."""

    track_id: int
    is_drum: bool
    is_agent: bool
    params: Mapping[str, Any]

    @classmethod
    def of(cls, track: TrackLike) -> _FrozenTrack:
        return cls(track.track_id, track.is_drum, track.is_agent, FrozenMap(track.params))


def prepare_job(job: Job) -> Job:
    """Build the engine request and the prompt state of a job from its recipe (idempotent)."""
    recipe = job.recipe
    if job.request is not None or job.error is not None or recipe is None:
        return job
    try:
        request = build_request(
            job.snapshot,
            window_start=job.window_start,
            bars=job.bars,
            playhead=recipe["playhead"],
            tracks=recipe["tracks"],
            params=recipe["params"],
            attributes=recipe["attributes"],
            seed=job.seed,
            bar_attributes=recipe["bar_attributes"],
        )
        window_score = job.snapshot.to_score()
        if recipe["encoder_config"] is not None:
            request.validate(window_score, recipe["encoder_config"])
        state = prompt_state(
            request, window_score, job.window_start, job.target_bar, job.snapshot.track_ids, job.agent_track_ids
        )
    except RequestError as exc:
        log.warning("job %d (bar %d) cannot be built: %s", job.job_id, job.target_bar, exc)
        return replace(job, error=f"invalid request: {exc}")
    return replace(job, request=request, prompt_state=state)


def build_request(
    snapshot: SnapshotLike,
    *,
    window_start: int,
    bars: Sequence[int],
    playhead: int,
    tracks: Mapping[int, TrackLike],
    params: Mapping[str, Any],
    attributes: Mapping[str, int],
    seed: int,
    bar_attributes: Mapping[int, Mapping[str, int]] = FrozenMap(),
) -> GenerationRequest:
    """The engine request for ``bars`` on a window snapshot (raises RequestError).

    ``bar_attributes`` ({absolute bar: {name: level}}, D61) go to the agents for the job's bars."""
    n_bars = snapshot.n_bars
    local_bars = tuple(b - window_start for b in bars)
    future = tuple(range(max(playhead - window_start, 0), n_bars))
    after_job = tuple(range(max(local_bars) + 1, n_bars))
    policy = _param(params, "warmup_policy")
    if policy in ("b", "b_collapse"):
        # Bootstrapping would send bars at or before the playhead (D34); mask the silent prefix
        # instead. Logged only while the window is still anchored at the session start.
        if after_job:
            log.info("warmup_policy %r never sends past bars; using a_masked", policy)
        policy = "a_masked"
    counts = snapshot.bar_note_counts()
    agents = [tracks[t] for t in snapshot.track_ids if t in tracks and tracks[t].is_agent]
    # One temperature per request: the global one times the (first) agent track's factor.
    agent_temperature = float(agents[0].params.get("temperature", 1.0)) if agents else 1.0
    prompts = []
    for index, track_id in enumerate(snapshot.track_ids):
        track = tracks.get(track_id)
        if track is None:
            continue  # removed since the snapshot: its notes are still context
        if not track.is_agent:
            if track.params.get("ignore"):
                prompts.append(TrackPrompt(id=index, ignore=True))  # dropped from the prompt (D38)
            else:
                looped = getattr(snapshot, "looped", frozenset())  # known through a loop (D60)
                unknown = tuple(b for b in future if (track_id, window_start + b) not in looped)
                prompts.append(TrackPrompt(id=index, mask_bars=unknown))
            continue
        masked = list(after_job)
        if policy == "a_masked":
            masked += [b for b in range(min(local_bars)) if counts[index, b] == 0]
        prompts.append(
            TrackPrompt(
                id=index,
                bars=local_bars,
                autoregressive=not after_job,  # infill when masked bars follow (see module doc)
                mask_bars=tuple(sorted(masked)),
                attributes=FrozenMap(attributes),
                bar_attributes=FrozenMap(
                    {b - window_start: bar_attributes[b] for b in bars if b in bar_attributes}
                ),
            )
        )
    num_candidates = int(_param(params, "num_candidates"))
    config = InferenceConfig(
        temperature=float(_param(params, "temperature")) * agent_temperature,
        top_k=int(_param(params, "top_k")),
        top_p=float(_param(params, "top_p")),
        mask_k=int(_param(params, "mask_k")),
        mask_p=float(_param(params, "mask_p")),
        model_dim=int(_param(params, "model_dim")),
        bars_per_step=len(local_bars),
        mask_mode=str(_param(params, "mask_mode")),
        polyphony_hard_limit=int(_param(params, "polyphony_hard_limit")),
        density_hard_limit=int(_param(params, "density_hard_limit")),
        seed=int(seed),
        num_candidates=num_candidates,
        max_attempts=1 if num_candidates > 1 else int(_param(params, "max_attempts")),
        temperature_escalation=float(_param(params, "temperature_escalation")),
        novelty_check=bool(_param(params, "novelty_check")),
        silence_check=bool(_param(params, "silence_check")),
    )
    return GenerationRequest(tracks=tuple(prompts), config=config)


def prompt_state(
    request: GenerationRequest,
    window_score: Score,
    window_start: int,
    target_bar: int,
    track_ids: Sequence[int],
    agent_track_ids: Collection[int],
) -> dict[str, Any]:
    """The §5.2 ``/midigpt/prompt/state`` JSON for the first planner step, absolute bars.

    ``C`` context, ``T`` generated by this job (now or in a later step), ``M``/``A`` masked in a
    token/remove or an attention mode; an ignored track (dropped from the prompt) reads masked.
    """
    steps = plan_request(request, window_score)
    if not steps:
        return {}
    step = steps[0]
    mask_code = "M" if request.config.mask_mode in ("token", "remove") else "A"
    to_generate = {(p.id, b) for p in request.tracks for b in p.bars}
    tracks = []
    for index, track_id in enumerate(track_ids):
        states = [
            "T"
            if (index, b) in to_generate
            else "C"
            if step.context[index, b - step.start_bar]
            else mask_code
            for b in range(step.start_bar, step.end_bar)
        ]
        tracks.append({"id": index, "is_agent": track_id in agent_track_ids, "states": states})
    return {
        "target_bar": target_bar,
        "start_bar": window_start + step.start_bar,
        "end_bar": window_start + step.end_bar,
        "tracks": tracks,
    }


__all__ = [
    "BarClock",
    "DEFAULT_PARAMS",
    "Job",
    "JobOutcome",
    "OUTCOME_STATUSES",
    "bar_quarters",
    "build_job",
    "build_request",
    "derive_seed",
    "job_bars",
    "job_window",
    "outcome_for",
    "prompt_state",
    "trigger_target",
]
