"""Heartbeats (osc-protocol §16 D56): ``/midigpt/heartbeat <json>`` to every subscriber.

With the global parameter ``heartbeat_s`` above 0, one beat goes out every ``heartbeat_s``
seconds, carrying what a client needs to know the daemon is alive and where it stands: session
state, playhead, whether a job is running, the last job's status, and the output switches. The
beat runs as an asyncio task on the daemon's loop; it reads the interval on every tick, so a
``/param/set heartbeat_s`` takes effect within ``POLL_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the interval is re-read while heartbeats are off (or long)


def heartbeat_payload(session: Any, scheduler: Any, seq: int) -> dict[str, Any]:
    """The heartbeat JSON: state, playhead, busy, last job, output switches and degradation."""
    last = scheduler.last_job
    return {
        "seq": seq,
        "state": session.state,
        "playhead": session.score.playhead,
        "busy": bool(scheduler.worker.busy),
        "last_job": None
        if last is None
        else {k: last.get(k) for k in ("job_id", "target_bar", "status")},
        "degraded": scheduler.adapt.level,
        **scheduler.controls.describe(),
    }


class Heartbeat:
    """Calls ``beat()`` every ``interval_s()`` seconds while that is > 0; ``run`` until cancelled."""

    def __init__(
        self,
        interval_s: Callable[[], float],
        beat: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = POLL_S,
    ) -> None:
        self._interval_s = interval_s
        self._beat = beat
        self._clock = clock
        self._poll_s = poll_s

    async def run(self) -> None:
        last: float | None = None
        while True:
            interval = self._interval()
            now = self._clock()
            if interval <= 0:
                last = None
                await asyncio.sleep(self._poll_s)
                continue
            if last is None or now - last >= interval:
                last = now
                try:
                    self._beat()
                except Exception:  # a failed beat must not end the heartbeats
                    log.exception("heartbeat failed")
            await asyncio.sleep(max(0.0, min(self._poll_s, last + interval - now)))

    def _interval(self) -> float:
        try:
            return float(self._interval_s())
        except Exception:
            log.exception("heartbeat interval could not be read")
            return 0.0


__all__ = ["POLL_S", "Heartbeat", "heartbeat_payload"]
