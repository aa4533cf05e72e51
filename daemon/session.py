"""The session: state machine, tracks, parameters and the rolling score, one method per message.

Every handler takes already-validated arguments (``daemon.protocol`` checked types and ranges),
checks what depends on state (unknown track, duplicate id, meter in the vocabulary …) *before*
changing anything, and raises ``ProtocolError`` with the spec's code otherwise. Handlers run on
the asyncio loop and do O(1) or O(notes in the message) work; the one O(window) copy is the
job's snapshot at a barline. Replies meant for the sender are returned; messages for every
subscriber go through ``broadcast``.

Scheduling and delivery (what happens after a barline) live in ``daemon.scheduler``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sideman.daemon.bar_attributes import BarAttributes
from sideman.daemon.events import EventBus
from sideman.daemon.live_input import LiveInput, LiveInputError
from sideman.daemon.params import (
    ParamStore,
    capabilities,
    check_attribute,
    coerce_track_param,
    track_param_defaults,
)
from sideman.daemon.protocol import ErrorCode, ProtocolError
from sideman.daemon.rolling import RollingScore, ScoreWindowError, UnsupportedMeterError
from sideman.daemon.session_file import SavedSession
from sideman.engine.vocab import EncoderConfig

log = logging.getLogger(__name__)

UNINITIALIZED, INITIALIZING, RUNNING, STOPPED = "UNINITIALIZED", "INITIALIZING", "RUNNING", "STOPPED"
DRUM_TRACK_TYPE = 11  # osc-protocol §2: 11 = drum, every other value melodic

Broadcast = Callable[[str, tuple], None]


@dataclass(frozen=True)
class SessionConfig:
    """What ``sideman serve`` fixes for the life of the process."""

    param_defaults: dict[str, Any] = field(default_factory=dict)  # the CLI's --param values
    retain_bars: int = 64
    grace_bars: int = 1
    max_future_bars: int = 64
    save_dir: Path = Path(".")
    journal_dir: Path | None = None


@dataclass
class TrackState:
    track_id: int
    program: int
    is_drum: bool
    is_agent: bool
    params: dict[str, Any]


class Session:
    """One performer's session; owned by the asyncio loop (not thread-safe by design)."""

    def __init__(
        self,
        encoder_config: EncoderConfig,
        bus: EventBus,
        broadcast: Broadcast,
        config: SessionConfig | None = None,
    ) -> None:
        self.encoder_config = encoder_config
        self.config = config or SessionConfig()
        self.bus = bus
        self.broadcast = broadcast
        self.capabilities = capabilities(encoder_config)
        self.supported_meters = frozenset(tuple(ts) for ts in encoder_config.time_signatures)
        self.params = self._new_params()
        self.attributes: dict[str, int] = {}  # agent overrides; kept across init (osc-protocol §12.4)
        self.state = UNINITIALIZED
        self.name = ""
        self.token = 0  # bumped by every init: results of older sessions are stale (D1)
        self.tracks: dict[int, TrackState] = {}
        self.score = self._new_score()
        self.live_input = LiveInput(self.score)  # note-on/note-off pairing (D59)
        self.bar_attributes = BarAttributes(encoder_config)  # per-bar agent attributes (D61)
        self.on_reset: list[Callable[[str], None]] = []  # scheduler hooks: cancel work, forget state
        self.on_bar: list[Callable[[Any], None]] = []  # scheduler hooks: a new bar closed
        self._job_ids = itertools.count(1)

    # ---- construction helpers ------------------------------------------------------------
    def _new_params(self) -> ParamStore:
        return ParamStore.for_encoder(self.encoder_config, self.config.param_defaults)

    def _new_score(self) -> RollingScore:
        return RollingScore(
            supported_meters=self.supported_meters,
            resolution=self.encoder_config.resolution,
            retain_bars=self.config.retain_bars,
            grace_bars=self.config.grace_bars,
            max_future_bars=self.config.max_future_bars,
            journal_dir=self.config.journal_dir,
        )

    def next_job_id(self) -> int:
        return next(self._job_ids)

    # ---- session lifecycle ---------------------------------------------------------------
    def session_init(self, name: str | None = None, reply_port: int | None = None) -> None:
        """``/midigpt/session/init [name] [reply_port]`` — any state; a fresh piece and params."""
        for hook in self.on_reset:
            hook("session re-initialised")
        self.score.close()
        self.score = self._new_score()
        self.live_input = LiveInput(self.score)
        self.bar_attributes.clear()
        self.tracks = {}
        self.params = self._new_params()
        self.token += 1
        self.name = name or ""
        self._set_state(INITIALIZING)
        self.broadcast("/midigpt/capabilities", (_json(self.capabilities),))
        self.broadcast("/midigpt/session/ready", ())

    def session_start(self) -> None:
        """``/midigpt/session/start`` — INITIALIZING only; needs an agent and a conditioning track."""
        if not self.agents():
            raise ProtocolError(ErrorCode.NO_AGENT, "No agent track defined: create one with /midigpt/track/create <id> <program> <type> 1")
        if not any(not t.is_agent for t in self.tracks.values()):
            raise ProtocolError(ErrorCode.INVALID_STATE, "No conditioning tracks defined")
        values = self.params.values()
        if values["buffer_bars"] < 2:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"buffer_bars = {values['buffer_bars']} must be at least 2 to start")
        if values["buffer_bars"] > values["model_dim"]:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"buffer_bars = {values['buffer_bars']} must not exceed model_dim = {values['model_dim']} to start",
            )
        self._set_state(RUNNING)
        self.broadcast("/midigpt/session/started", ())

    def session_stop(self) -> None:
        """``/midigpt/session/stop`` — any state; cancels work in flight, keeps the piece (D5)."""
        for hook in self.on_reset:
            hook("session stopped")
        self._set_state(STOPPED)
        self.broadcast("/midigpt/session/stopped", ())

    def _set_state(self, state: str) -> None:
        self.state = state
        self.bus.publish("session", state=state, name=self.name, token=self.token)

    # ---- tracks --------------------------------------------------------------------------
    def agents(self) -> list[TrackState]:
        return [t for t in self.tracks.values() if t.is_agent]

    def _track(self, track_id: int) -> TrackState:
        track = self.tracks.get(track_id)
        if track is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TRACK, f"Unknown track ID: {track_id}")
        return track

    def track_create(self, track_id: int, instrument: int, track_type: int, is_agent: int) -> None:
        if track_id in self.tracks:
            raise ProtocolError(ErrorCode.DUPLICATE_TRACK, f"Duplicate track ID: {track_id}")
        is_drum = track_type == DRUM_TRACK_TYPE
        if is_agent:
            max_agents = self.params.values()["max_agents"]
            if len(self.agents()) >= max_agents:
                raise ProtocolError(
                    ErrorCode.MULTI_AGENT,
                    "Only one agent track allowed per session" if max_agents == 1
                    else f"At most {max_agents} agent tracks allowed (param max_agents)",
                )
            self._check_overrides_fit(is_drum)
        self.tracks[track_id] = TrackState(track_id, instrument, is_drum, bool(is_agent), track_param_defaults(bool(is_agent)))
        self.score.add_track(track_id, instrument, is_drum, bool(is_agent))
        self.bus.publish("track", action="created", track_id=track_id, program=instrument, is_drum=is_drum, is_agent=bool(is_agent))

    def _check_overrides_fit(self, is_drum: bool) -> None:
        """Attribute overrides set before the agent existed must suit its track type (D27)."""
        for name, level in self.attributes.items():
            try:
                check_attribute(name, level, self.encoder_config, is_drum)
            except ProtocolError as exc:
                raise ProtocolError(
                    ErrorCode.INVALID_PARAM,
                    f"{exc.message}; clear it with /midigpt/attr/set {name} -1 or /midigpt/attr/reset_all before creating this agent",
                ) from None

    def track_remove(self, track_id: int) -> None:
        track = self._track(track_id)
        if track.is_agent:
            raise ProtocolError(ErrorCode.INVALID_STATE, "Cannot remove the agent track (re-initialise the session to change it)")
        del self.tracks[track_id]
        self.score.remove_track(track_id)
        self.bus.publish("track", action="removed", track_id=track_id)

    def track_set_ignore(self, track_id: int, ignored: int) -> None:
        self.track_param_set(track_id, "ignore", ignored)

    def track_param_set(self, track_id: int, name: str, value: Any) -> None:
        track = self._track(track_id)
        coerced = coerce_track_param(track.is_agent, name, value, current=track.params)
        track.params = {**track.params, name: coerced}
        self.bus.publish("param", name=name, value=coerced, track_id=track_id, once=False)

    # ---- notes and bars ------------------------------------------------------------------
    def note(self, track_id: int, pitch: int, velocity: int, onset: float, duration: float, bar_index: int) -> None:
        track = self._track(track_id)
        if track.is_agent:
            raise ProtocolError(ErrorCode.AGENT_NOTE, "Note for agent track ignored")
        try:
            where = self.score.add_note(track_id, bar_index, pitch, velocity, onset, duration)
        except ScoreWindowError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/note: bar_index {bar_index}: {exc}") from None
        self.bus.publish(
            "note_in", track_id=track_id, bar_index=bar_index, pitch=pitch, velocity=velocity,
            onset=onset, duration=duration, late=where == "late",
        )  # fmt: skip

    def bar_end(self, bar_index: int, ts_num: int, ts_den: int) -> None:
        try:
            closed = self.score.end_bar(bar_index, ts_num, ts_den)
        except UnsupportedMeterError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/bar/end: {exc}") from None
        except ScoreWindowError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/bar/end: bar_index {bar_index}: {exc}") from None
        self.bus.publish(
            "bar", bar_index=bar_index, meter=(ts_num, ts_den), new=closed.new,
            playhead=closed.playhead, merged=dict(closed.merged),
        )  # fmt: skip
        if closed.new:
            self.live_input.bars_closed(closed.playhead)  # held notes first: jobs see them
            for hook in self.on_bar:
                hook(closed)

    # ---- parameters and attributes -------------------------------------------------------
    def param_set(self, name: str, value: Any) -> None:
        self.params.set(name, value)
        self.bus.publish("param", name=name, value=self.params.values()[name], once=False)

    def param_set_once(self, name: str, value: Any) -> None:
        self.params.set_once(name, value)
        self.bus.publish("param", name=name, value=self.params.values()[name], once=True)

    def param_reset(self, name: str) -> None:
        self.params.reset(name)
        self.bus.publish("param", name=name, value=self.params.values()[name], once=False)

    def param_reset_all(self) -> None:
        self.params.reset_all()
        self.bus.publish("param", name="*", value=None, once=False)

    def attr_set(self, name: str, level: int) -> None:
        if level < 0:
            self.attributes.pop(name, None)
        else:
            agents = self.agents()
            agent_is_drum = agents[0].is_drum if agents else None
            check_attribute(name, level, self.encoder_config, agent_is_drum)
            self.attributes[name] = level
        self.bus.publish("param", name=f"attr:{name}", value=level, once=False)

    def attr_reset_all(self) -> None:
        self.attributes.clear()
        self.bus.publish("param", name="attr:*", value=None, once=False)

    # ---- live input, loops, per-bar attributes, load (D59-D62) ---------------------------
    def note_on(self, track_id: int, pitch: int, velocity: int, onset: float, bar_index: int) -> None:
        """``/midigpt/note/on`` — held until its note-off; it belongs to ``bar_index`` (D31, D59)."""
        self._live_track(track_id)
        try:
            self.live_input.note_on(track_id, pitch, velocity, onset, bar_index)
        except ScoreWindowError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/note/on: bar_index {bar_index}: {exc}") from None

    def note_off(self, track_id: int, pitch: int, offset: float, bar_index: int) -> None:
        """``/midigpt/note/off`` — completes the oldest held note-on of this track and pitch."""
        self._live_track(track_id)
        try:
            note = self.live_input.note_off(track_id, pitch, offset, bar_index)
        except (LiveInputError, ScoreWindowError) as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/note/off: {exc}") from None
        bar_ticks = self.score.bar_ticks(*self.score.meter(note.bar_index))
        self.bus.publish(
            "note_in", track_id=track_id, bar_index=note.bar_index, pitch=pitch, velocity=note.velocity,
            onset=note.onset, duration=note.duration_ticks / bar_ticks, late=note.placed != "pending",
        )  # fmt: skip

    def _live_track(self, track_id: int) -> None:
        if self._track(track_id).is_agent:
            raise ProtocolError(ErrorCode.AGENT_NOTE, "Note for agent track ignored")

    def loop(self, track_id: int, start_bar: int, end_bar: int) -> None:
        """``/midigpt/loop`` — a conditioning track repeats [start, end): its future bars are known (D60)."""
        if self._track(track_id).is_agent:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/loop: track {track_id} is the agent; only conditioning tracks loop")
        try:
            self.score.set_loop(track_id, start_bar, end_bar)
        except ScoreWindowError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/loop: {exc}") from None
        self.bus.publish("param", name=f"loop:{track_id}", value=[start_bar, end_bar], once=False)

    def loop_clear(self, track_id: int) -> None:
        self._track(track_id)
        self.score.clear_loop(track_id)
        self.bus.publish("param", name=f"loop:{track_id}", value=None, once=False)

    def attr_set_bar(self, bar_index: int, name: str, level: int) -> None:
        """``/midigpt/attr/set_bar`` — one bar's agent attribute, where the vocabulary has them (D61)."""
        self.bar_attributes.set(bar_index, name, level, self.score.playhead)
        self.bus.publish("param", name=f"attr:{name}@{bar_index}", value=level, once=False)

    def load_saved(self, saved: SavedSession) -> int:
        """Replace the piece with a saved session (INITIALIZING only): its tracks, and its bars as
        closed history, so play continues at the next bar (D55, D62). Returns the notes loaded."""
        if self.state != INITIALIZING:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"Message not allowed in state '{self.state}'")
        agents = [t for t in saved.tracks if t.is_agent]
        max_agents = self.params.values()["max_agents"]
        if len(agents) > max_agents:
            raise ProtocolError(
                ErrorCode.MULTI_AGENT,
                f"/midigpt/session/load: the file has {len(agents)} agent tracks; param max_agents is {max_agents}",
            )
        for agent in agents:
            self._check_overrides_fit(agent.is_drum)
        unsupported = sorted({(n, d) for n, d in saved.meters.tolist()} - self.supported_meters)
        if unsupported:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/session/load: time signatures {unsupported} are not supported by the model")
        self.score.close()
        self.score = self._new_score()
        self.live_input = LiveInput(self.score)
        self.bar_attributes.clear()
        self.tracks = {}
        for t in saved.tracks:
            self.tracks[t.track_id] = TrackState(t.track_id, t.program, t.is_drum, t.is_agent, track_param_defaults(t.is_agent))
            self.score.add_track(t.track_id, t.program, t.is_drum, t.is_agent)
            self.bus.publish("track", action="created", track_id=t.track_id, program=t.program, is_drum=t.is_drum, is_agent=t.is_agent)
        self.score.load_history(saved.meters, saved.rows, generated_track_ids=[t.track_id for t in agents])
        return len(saved.rows)

    # ---- introspection -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The session part of the ``/midigpt/state`` JSON (the scheduler and server add theirs)."""
        playhead = self.score.playhead
        first = max(self.score.origin or 0, playhead - 16)
        return {
            "state": self.state,
            "name": self.name,
            "session_token": self.token,
            "playhead": playhead,
            "origin": self.score.origin,
            "tracks": [
                {"track_id": t.track_id, "program": t.program, "is_drum": t.is_drum, "is_agent": t.is_agent, "params": t.params}
                for t in self.tracks.values()
            ],
            "params": self.params.values(),
            "attributes": dict(self.attributes),
            "capabilities": self.capabilities,
            "bars": {str(b): self.score.bar_summary(b) for b in range(first, playhead)},
            "score": self.score.stats(),
            "live_input": self.live_input.describe(),
            "bar_attributes": self.bar_attributes.describe(),
        }

    def save_path(self, path: str, address: str = "/midigpt/session/save") -> Path:
        """Resolve a ``/session/save`` (or ``/session/load``) path inside the save directory (a remote client cannot reach elsewhere)."""
        base = self.config.save_dir.resolve()
        target = (base / path).resolve()
        if target.suffix.lower() not in (".mid", ".midi"):
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"{address}: path must end in .mid, got {path!r}")
        if base != target.parent and base not in target.parents:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"{address}: {path!r} is outside the save directory {base} (sideman serve --save-dir)",
            )
        return target

    def close(self) -> None:
        self.score.close()


def _json(value: Any) -> str:
    import json

    return json.dumps(value, allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
