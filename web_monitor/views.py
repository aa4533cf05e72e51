"""What the monitor page shows, built from the daemon's event bus (socket_events.md has the shapes).

``MonitorView`` is a bus subscriber. On the daemon's loop it only appends the event to an inbox
(no conversion, no lock held for long), so a slow page can never slow the daemon. The monitor's
emitter thread calls ``take_update()`` a few times a second: that folds the inbox into a bounded
view (the roll window of bars and notes, the last job's prompt, job and attribute histories, a
message log) and returns what changed as one ``update`` batch. ``snapshot()`` gives the whole
view to a page that connects or lost updates.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from sideman.daemon.events import Event
from sideman.daemon.params import (
    AGENT_TRACK_PARAMS,
    CAPABILITY_ATTRIBUTES,
    CONDITIONING_TRACK_PARAMS,
    GLOBAL_PARAMS,
    ParamSpec,
    attribute_levels,
    capabilities,
    known_attributes,
)

FEATURE_NAMES = (  # the order of /midigpt/generated/features (osc-protocol §11.10)
    "note_density", "mean_pitch", "mean_velocity", "max_polyphony", "mean_duration",
    "min_polyphony", "min_note_duration", "max_note_duration",
)  # fmt: skip
LOG_PER_UPDATE = 200  # log lines one batch carries; the rest are counted, not queued
INBOX_LIMIT = 50_000  # events waiting for the emitter; beyond it the oldest are dropped and counted


def param_info(spec: ParamSpec, choices: tuple | None = None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.kind,
        "min": spec.lo,
        "max": spec.hi,
        "min_open": spec.lo_open,
        "max_open": spec.hi_open,
        "choices": list(choices if choices is not None else spec.choices or ()) or None,
        "default": spec.default,
        "structural": spec.structural,
        "help": spec.doc,
    }


def model_info(engine: Any, *, limits: Mapping[str, int], demo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``info`` block: model, capabilities, parameters with the server's ranges, attributes."""
    config = engine.encoder_config
    known = set(known_attributes(config))
    params = []
    for spec in GLOBAL_PARAMS.values():
        choices = tuple(config.num_bars_map) if spec.name == "model_dim" else None
        params.append(param_info(spec, choices))
    track_params = {**CONDITIONING_TRACK_PARAMS, **AGENT_TRACK_PARAMS}
    attributes = []
    for name in CAPABILITY_ATTRIBUTES:  # the attributes; capabilities() also has supports_* flags
        levels = attribute_levels(config, name) if name in known else 0
        attributes.append({"name": name, "levels": levels, "labels": [str(i) for i in range(levels)], "supported": name in known})
    return {
        "model": getattr(engine, "name", ""),
        "precision": str(getattr(engine, "precision", "")),
        "capabilities": capabilities(config),
        "num_bars_map": list(config.num_bars_map),
        "params": params,
        "track_params": [param_info(spec) for spec in track_params.values()],
        "attributes": attributes,
        "limits": dict(limits),
        "demo": dict(demo or {}),
    }


def session_view(state: Mapping[str, Any], status: str) -> dict[str, Any]:
    """SESSION from the ``/midigpt/state`` JSON."""
    tracks = [
        {
            "track_id": t["track_id"],
            "program": t["program"],
            "is_drum": t["is_drum"],
            "is_agent": t["is_agent"],
            "ignore": bool(t.get("params", {}).get("ignore", False)),
        }
        for t in state.get("tracks", [])
    ]
    spq = state.get("seconds_per_quarter")
    return {
        "state": state.get("state", "UNINITIALIZED"),
        "name": state.get("name", ""),
        "playhead": state.get("playhead"),
        "status": status,
        "tracks": tracks,
        "params": state.get("params", {}),
        "attributes": state.get("attributes", {}),
        "subscribers": state.get("subscribers", []),
        "seconds_per_quarter": spq,
        "bar_period_s": None if spq is None else 4 * spq,
        "engine": state.get("engine", {}),
        "jobs": state.get("jobs", {}),
        "degraded": state.get("degraded", 0),
        "frozen": state.get("frozen", False),
        "muted": state.get("muted", False),
    }


class MonitorView:
    """Bounded, thread-safe view of the daemon for the page; see the module docstring."""

    def __init__(
        self,
        *,
        roll_bars: int = 32,
        max_jobs: int = 256,
        max_attrs: int = 256,
        max_log: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"roll_bars": roll_bars, "jobs": max_jobs, "attrs": max_attrs, "log": max_log}
        self._clock = clock
        self._started = clock()
        self._inbox: deque[Event | tuple[str, dict]] = deque(maxlen=INBOX_LIMIT)
        self._received = itertools.count()  # events appended, for the dropped count
        self._folded = 0
        self._lock = threading.Lock()
        self.seq = 0
        self.inbox_dropped = 0
        # the view
        self.session: dict[str, Any] = session_view({}, "ready")
        self.bars: OrderedDict[int, dict] = OrderedDict()
        self.human: dict[int, list[dict]] = {}
        self.generated: dict[tuple[int, int], dict] = {}
        self.playhead: int | None = None
        self.prompt: dict | None = None
        self.jobs: deque[dict] = deque(maxlen=max_jobs)
        self.attrs: deque[dict] = deque(maxlen=max_attrs)
        self.log: deque[dict] = deque(maxlen=max_log)
        self.demo: dict[str, Any] = {"running": False, "piece": None, "bpm": 0.0, "meter": [4, 4], "bar": None, "loop_bars": 0, "message": ""}
        self.requested: dict[str, int] = {}
        self.status = "ready"
        self.session_dirty = True
        self._budgets: OrderedDict[int, float] = OrderedDict()
        self._features: OrderedDict[tuple[int, int], list[float] | None] = OrderedDict()
        self._pending: dict[str, Any] = {}

    # ---- producers (any thread; on the daemon loop this must stay cheap) ----------------------
    def on_event(self, event: Event) -> None:
        """The bus subscriber: append only."""
        if len(self._inbox) == self._inbox.maxlen:
            self.inbox_dropped += 1
        self._inbox.append(event)

    def on_demo(self, kind: str, payload: dict) -> None:
        """The demo performer's DEMO and CLOCK events."""
        self._inbox.append((kind, payload))

    def set_session(self, state: Mapping[str, Any]) -> None:
        """A fresh ``/midigpt/state`` JSON (fetched by the emitter when the session changed)."""
        with self._lock:
            self.session = session_view(state, self.status)
            self.requested = {k: v for k, v in self.session["attributes"].items() if isinstance(v, int) and v >= 0}
            if state.get("playhead") is not None:
                self._move_playhead(int(state["playhead"]))
            self._pending["session"] = self.session
            self.session_dirty = False

    # ---- consumer: the emitter thread --------------------------------------------------------
    def take_update(self) -> dict[str, Any] | None:
        """Fold the inbox into the view; the changes as one ``update`` (None if nothing changed)."""
        with self._lock:
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, Event):
                    self._fold(item.kind, item.data, item.time)
                else:
                    self._fold_demo(*item)
            if not self._pending:
                return None
            update, self._pending = self._pending, {}
            log = update.get("log")
            if log is not None and len(log) > LOG_PER_UPDATE:
                update["dropped_log"] = len(log) - LOG_PER_UPDATE
                update["log"] = log[-LOG_PER_UPDATE:]
            self.seq += 1
            update["seq"] = self.seq
            return update

    def snapshot(self, info: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {
                "seq": self.seq,
                "info": dict(info),
                "session": self.session,
                "bars": list(self.bars.values()),
                "notes": self._notes_in_window(),
                "prompt": self.prompt,
                "jobs": list(self.jobs),
                "attrs": list(self.attrs),
                "log": list(self.log),
                "demo": self.demo,
            }

    # ---- folding ---------------------------------------------------------------------------
    def _add(self, key: str, item: Any) -> None:
        self._pending.setdefault(key, []).append(item)

    def _fold(self, kind: str, data: Mapping[str, Any], at: float) -> None:
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(data, at)
        if kind in ("session", "track", "param", "subscribers"):
            self.session_dirty = True
        if kind == "error":
            self._log("out", data.get("source", ""), "/midigpt/error", [data.get("code"), data.get("message")], at)

    def _on_note_in(self, data: Mapping[str, Any], at: float) -> None:
        note = {
            "track": data["track_id"], "bar": data["bar_index"], "pitch": data["pitch"], "velocity": data["velocity"],
            "onset": float(data["onset"]), "duration": float(data["duration"]), "kind": "human",
        }  # fmt: skip
        if self.playhead is not None and note["bar"] < self.playhead - self.limits["roll_bars"]:
            return
        self.human.setdefault(note["bar"], []).append(note)
        self._add("notes", note)

    def _on_bar(self, data: Mapping[str, Any], at: float) -> None:
        if not data.get("new", True):
            return
        bar = {"bar": data["bar_index"], "meter": list(data["meter"]), "playhead": data["playhead"]}
        self.bars[bar["bar"]] = bar
        self._add("bars", bar)
        self._move_playhead(int(data["playhead"]))
        self.session["playhead"] = self.playhead
        self._pending["session"] = self.session

    def _on_generated(self, data: Mapping[str, Any], at: float) -> None:
        track, bar, ticks = data["track_id"], data["bar_index"], max(int(data.get("bar_ticks") or 1), 1)
        notes = [
            {
                "track": track, "bar": bar, "pitch": int(pitch), "velocity": int(velocity),
                "onset": onset / ticks, "duration": duration / ticks, "kind": "generated",
            }
            for onset, duration, pitch, velocity in data["notes"]
        ]  # fmt: skip
        entry = {"track": track, "bar": bar, "meter": list(data.get("meter", (4, 4))), "notes": notes}
        self.generated[(track, bar)] = entry
        self._add("generated", entry)
        self._features[(track, bar)] = data.get("features")
        while len(self._features) > 64:
            self._features.popitem(last=False)

    def _on_prompt(self, data: Mapping[str, Any], at: float) -> None:
        self.prompt = dict(data)
        self._pending["prompt"] = self.prompt
        self.status = "generating"
        self.session["status"] = self.status
        self._pending["session"] = self.session

    def _on_job(self, data: Mapping[str, Any], at: float) -> None:
        job = {k: v for k, v in data.items() if k != "sampled_attrs"}
        job["t"] = round(at - self._started, 3)
        if job["status"] == "queued":
            if "budget_ms" in job:
                self._budgets[job["job_id"]] = job["budget_ms"]
                while len(self._budgets) > 256:
                    self._budgets.popitem(last=False)
        else:
            job.setdefault("budget_ms", self._budgets.pop(job["job_id"], None))
            counts = self.session.setdefault("jobs", {})
            counts[job["status"]] = counts.get(job["status"], 0) + 1
            self.session["degraded"] = job.get("degraded", self.session.get("degraded", 0))
            self._pending["session"] = self.session
            if self.status == "generating":
                self.status = "ready"
                self.session["status"] = self.status
                self._pending["session"] = self.session
            for bar in job.get("sent_bars", []):
                for (track, feature_bar), realised in list(self._features.items()):
                    if feature_bar == bar:
                        self._attr(track, bar, realised, data.get("sampled_attrs") or {})
        self.jobs.append(job)
        self._add("jobs", job)

    def _attr(self, track: int, bar: int, realised: list[float] | None, sampled: Mapping[str, int]) -> None:
        entry = {
            "track": track,
            "bar": bar,
            "realised": None if realised is None else dict(zip(FEATURE_NAMES, realised, strict=True)),
            "requested": dict(self.requested),
            "sampled": dict(sampled),
        }
        self.attrs.append(entry)
        self._add("attrs", entry)

    def _on_param(self, data: Mapping[str, Any], at: float) -> None:
        name = str(data.get("name", ""))
        if name.startswith("attr:") and "@" not in name:
            attr = name[5:]
            if attr == "*":
                self.requested.clear()
            elif isinstance(data.get("value"), int) and data["value"] >= 0:
                self.requested[attr] = data["value"]
            else:
                self.requested.pop(attr, None)

    def _on_session(self, data: Mapping[str, Any], at: float) -> None:
        if data.get("state") != "RUNNING":
            self.status = "ready"
        if data.get("state") == "INITIALIZING":  # a fresh session: nothing of the old one is shown
            self.bars.clear()
            self.human.clear()
            self.generated.clear()
            self.prompt = None
            self.playhead = None
            self._pending["reset"] = True

    def _on_osc(self, data: Mapping[str, Any], at: float) -> None:
        self._log(data["direction"], data["peer"], data["address"], list(data["args"]), at)

    def _on_local(self, data: Mapping[str, Any], at: float) -> None:
        self._log("local", "monitor", data["address"], list(data["args"]), at, data.get("error"))

    def _log(self, direction: str, peer: str, address: str, args: list, at: float, error: str | None = None) -> None:
        line = {"t": round(at - self._started, 3), "dir": direction, "peer": peer, "address": address, "args": args, "error": error}
        self.log.append(line)
        self._add("log", line)

    def _fold_demo(self, kind: str, payload: dict) -> None:
        if kind == "demo":
            self.demo = dict(payload)
            self._pending["demo"] = self.demo
        elif kind == "clock":
            self._add("clock", dict(payload))

    def _move_playhead(self, playhead: int) -> None:
        """Advance the roll window; bars and notes that leave it are forgotten (bounded memory)."""
        if self.playhead is not None and playhead <= self.playhead:
            return
        self.playhead = playhead
        first = playhead - self.limits["roll_bars"]
        while self.bars and next(iter(self.bars)) < first:
            self.bars.popitem(last=False)
        for bar in [b for b in self.human if b < first]:
            del self.human[bar]
        for key in [k for k in self.generated if k[1] < first]:
            del self.generated[key]

    def _notes_in_window(self) -> list[dict]:
        notes = [note for bar_notes in self.human.values() for note in bar_notes]
        notes += [note for entry in self.generated.values() for note in entry["notes"]]
        return notes


__all__ = ["FEATURE_NAMES", "MonitorView", "model_info", "param_info", "session_view"]
