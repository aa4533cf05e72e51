"""In-process event bus: everything the daemon does, published for the monitor and for tests.

Publishing happens on the asyncio loop (and, rarely, on the worker thread); a subscriber is a
plain callable invoked synchronously, so it must be quick and must not block (the monitor
hands events to its own thread). A subscriber that raises is logged and kept; the loop never
sees the exception. ``EventRecorder`` is a bounded, thread-safe subscriber that tests and
benchmarks can wait on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# The kinds published, so subscribers can filter without string guessing.
KINDS = (
    "session",  # state changes: init, start, stop (data: state, name, token)
    "note_in",  # a human note accepted (track_id, bar_index, pitch, velocity, onset, duration, late)
    "bar",  # a bar closed (bar_index, meter, playhead, merged counts)
    "job",  # a job's life: queued, started, then its outcome (status, target_bar, latency_ms, ...)
    "generated",  # a generated bar sent (track_id, bar_index, notes)
    "prompt",  # the prompt window the engine used (the /prompt/state JSON)
    "error",  # an error reply (code, message, source)
    "param",  # a parameter change (name, value, once)
    "track",  # a track created or removed
    "subscribers",  # the reply targets changed
    "osc",  # one OSC message in or out (direction, peer, address, args); only with traffic events on
    "local",  # a message from an in-process caller (the monitor): address, args, and error if refused
)


@dataclass(frozen=True)
class Event:
    kind: str
    data: Mapping[str, Any]
    time: float = field(default_factory=time.monotonic)


Subscriber = Callable[[Event], None]


class EventBus:
    """Publish/subscribe within the process; thread-safe subscription, synchronous delivery."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def publish(self, kind: str, **data: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        event = Event(kind, data)
        self.published += 1
        for subscriber in self._subscribers:  # a tuple snapshot: safe against concurrent changes
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", subscriber, kind)


class EventRecorder:
    """A bounded subscriber that keeps the last ``maxlen`` events and lets a thread wait for one."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.events: deque[Event] = deque(maxlen=maxlen)
        self._condition = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._condition:
            self.events.append(event)
            self._condition.notify_all()

    def of_kind(self, kind: str) -> list[Event]:
        with self._condition:
            return [e for e in self.events if e.kind == kind]

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event | None:
        """The first recorded event matching ``predicate``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)
