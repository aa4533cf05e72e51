"""Who receives the daemon's output: explicit reply targets, never "whoever sent last" (D8, D9).

The target set is the sender of the latest ``/session/init`` (at the port it names, or at
``--reply-port``, or at its source port) plus every ``/midigpt/subscribe host port`` (and
``--subscribe`` from the command line) until unsubscribed. Unrelated packets never change it.
A subscriber's host must be loopback or inside the ``--allow`` ranges, so the daemon cannot be
told to send to third parties.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

Target = tuple[str, int]
MAX_SUBSCRIBERS = 16


class SubscriberError(ValueError):
    """A subscribe request the daemon refuses (bad host, not allowed, too many)."""


class Subscribers:
    def __init__(self, host_allowed: Callable[[str], bool], fixed: list[Target] | None = None) -> None:
        self._host_allowed = host_allowed
        self._init_target: Target | None = None
        self._explicit: list[Target] = []
        self._fixed = list(fixed or [])
        self.changes = 0

    def targets(self) -> list[Target]:
        seen: list[Target] = []
        for target in (*self._fixed, *((self._init_target,) if self._init_target else ()), *self._explicit):
            if target not in seen:
                seen.append(target)
        return seen

    def set_init_target(self, target: Target) -> None:
        self._init_target = target
        self.changes += 1

    def subscribe(self, host: str, port: int) -> Target:
        target = (self._normalise(host), port)
        if target not in self._explicit:
            if len(self._explicit) >= MAX_SUBSCRIBERS:
                raise SubscriberError(f"at most {MAX_SUBSCRIBERS} subscribers; unsubscribe one first")
            self._explicit.append(target)
            self.changes += 1
        return target

    def unsubscribe(self, host: str, port: int) -> bool:
        target = (self._normalise(host), port)
        removed = False
        if target in self._explicit:
            self._explicit.remove(target)
            removed = True
        if self._init_target == target:
            self._init_target = None
            removed = True
        self.changes += removed
        return removed

    def _normalise(self, host: str) -> str:
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SubscriberError(f"host {host!r} must be an IP address (or localhost)") from None
        if not self._host_allowed(host):
            raise SubscriberError(f"host {host} is not loopback and not in the --allow ranges")
        return host

    def describe(self) -> list[str]:
        return [f"{host}:{port}" for host, port in self.targets()]
