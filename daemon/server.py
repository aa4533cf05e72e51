"""The OSC endpoint: a python-osc ``Dispatcher`` on an asyncio datagram socket, kept thin.

Per datagram, on the loop: source allowed? (D10) → rate limit (D12) → parse (a parse error is
logged, counted and answered, D65) → each message routed by the dispatcher (wildcard patterns are
refused, never fanned out, D10) → state check → argument validation against the protocol table →
the session's handler. Bundles with future timetags are scheduled on the loop, never slept on
(D12, platform-notes §3.2). Replies leave through the server's own socket, paced, so a bar of
notes is not lost to a small receive buffer (platform-notes §3.3).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pythonosc.dispatcher import Dispatcher, Handler
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError

from sideman.daemon.protocol import (
    INBOUND,
    OUTBOUND,
    ErrorCode,
    MessageSpec,
    ProtocolError,
    check_state,
    validate,
)
from sideman.daemon.subscribers import Subscribers

log = logging.getLogger(__name__)

WILDCARD_CHARS = frozenset("*?[]{}")
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024  # the kernel caps it at 2 x rmem_max (platform-notes §3.3)
SEND_BATCH = 32  # datagrams per loop turn before yielding ~1 ms: <= ~30 k msg/s, lossless on loopback
MAX_TIMETAG_DELAY_S = 60.0
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Counters:
    """What went wrong on the wire, for the state query (D64/D65)."""

    received: int = 0
    rejected_sources: int = 0
    rate_limited: int = 0
    parse_errors: int = 0
    unknown_addresses: int = 0
    errors_sent: int = 0
    sent: int = 0
    send_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """A token bucket per source host: ``rate`` messages per second, bursts up to ``burst``."""

    rate: float = 5_000.0
    burst: float = 10_000.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, host: str, now: float) -> bool:
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) > 1024:  # bounded: forget idle sources
                self._buckets.clear()
            bucket = self._buckets[host] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


def parse_networks(specs: Iterable[str]) -> list[IpNetwork]:
    """``--allow`` values (addresses or CIDR ranges) as networks; ValueError names a bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"--allow {spec!r} is not an IP address or CIDR range (e.g. 192.168.1.0/24)") from None
    return networks


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _StrictDispatcher(Dispatcher):
    """A dispatcher that refuses OSC wildcard patterns in incoming addresses (D10)."""

    def __init__(self, on_wildcard: Callable[..., None]) -> None:
        super().__init__(strict_timing=False)
        self._on_wildcard = Handler(on_wildcard, [], True)

    def handlers_for_address(self, address_pattern: str):
        if WILDCARD_CHARS.intersection(address_pattern):
            yield self._on_wildcard
            return
        yield from super().handlers_for_address(address_pattern)


def build_datagram(address: str, args: tuple) -> bytes:
    """One OSC message with the outbound table's exact type tags (ints as i, floats as f)."""
    tags = OUTBOUND.get(address)
    if tags is None or len(tags) != len(args):
        raise ValueError(f"outbound {address} with {len(args)} argument(s) does not match the protocol table ({tags!r})")
    builder = OscMessageBuilder(address)
    for tag, value in zip(tags, args, strict=True):
        if tag == "i":
            builder.add_arg(int(value), "i")
        elif tag == "f":
            builder.add_arg(float(value), "f")
        elif tag == "s":
            builder.add_arg(str(value), "s")
        else:  # "*": echo as is (ping tokens)
            builder.add_arg(value, "d" if _needs_double(value) else None)
    return builder.build().dgram


def _needs_double(value: Any) -> bool:
    """Whether an echoed float would not survive float32 ``f`` (a ``d`` token such as 1e300)."""
    if not isinstance(value, float) or math.isnan(value):
        return False
    try:
        return struct.unpack(">f", struct.pack(">f", value))[0] != value
    except OverflowError:
        return True


class OscServer(asyncio.DatagramProtocol):
    """The UDP endpoint. ``handlers`` maps a protocol handler name to a callable taking
    ``(sender, *validated_args)`` and returning replies for the sender (a list of (address, args))."""

    def __init__(
        self,
        handlers: dict[str, Callable[..., Any]],
        subscribers: Subscribers,
        state_of: Callable[[], str],
        *,
        allow: list[IpNetwork] | None = None,
        rate_limiter: RateLimiter | None = None,
        on_error: Callable[[int, str, tuple], None] | None = None,
    ) -> None:
        self.handlers = handlers
        self.subscribers = subscribers
        self.state_of = state_of
        self.allow = allow or []
        self.rate_limiter = rate_limiter or RateLimiter()
        self.on_error = on_error
        # (direction "in"/"out", peer, address, args) per message, for the monitor's traffic log;
        # None (the default) costs nothing.
        self.on_traffic: Callable[[str, str, str, tuple], None] | None = None
        self.counters = Counters()
        self.transport: asyncio.DatagramTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._outbox: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._outbox_ready = asyncio.Event()
        self._drain_task: asyncio.Task | None = None
        self.dispatcher = _StrictDispatcher(self._wildcard)
        self.dispatcher.set_default_handler(self._unknown, needs_reply_address=True)
        for address, spec in INBOUND.items():
            self.dispatcher.map(address, self._message, spec, needs_reply_address=True)

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind and start draining the outbox; returns the bound (host, port)."""
        self.loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RECEIVE_BUFFER_BYTES)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {host}:{port} ({exc.strerror}); is another sideman running? use --port") from None
        await self.loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._drain_task = self.loop.create_task(self._drain())
        return sock.getsockname()[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable from a gone listener
        log.debug("socket error: %s", exc)

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until every queued datagram has been handed to the socket."""
        deadline = time.monotonic() + timeout
        while self._outbox and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    def close(self) -> None:
        if self._drain_task:
            self._drain_task.cancel()
        if self.transport:
            self.transport.close()

    # ---- receiving -------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple) -> None:
        sender = (addr[0], addr[1])
        self.counters.received += 1
        if not self._allowed(sender[0]):
            self.counters.rejected_sources += 1  # changes nothing, gets nothing (D8, D10)
            return
        now = time.monotonic()
        if not self.rate_limiter.allow(sender[0], now):
            self.counters.rate_limited += 1
            return
        try:
            packet = OscPacket(data)
        except (ParseError, ValueError, IndexError, TypeError) as exc:  # python-osc raises several kinds
            self.counters.parse_errors += 1
            log.info("unparsable OSC packet from %s:%d: %s", *sender, exc)
            self.reply_error(sender, ErrorCode.INVALID_PARAM, f"unparsable OSC packet ({len(data)} bytes): {exc}")
            return
        for timed in packet.messages:
            delay = (timed.time - time.time()) if timed.time else 0.0
            if delay > MAX_TIMETAG_DELAY_S:
                self.reply_error(sender, ErrorCode.INVALID_PARAM, f"{timed.message.address}: bundle timetag {delay:.0f} s in the future (at most {MAX_TIMETAG_DELAY_S:.0f} s)")
            elif delay > 0.0005:
                self.loop.call_later(delay, self._route, sender, timed.message)
            else:
                self._route(sender, timed.message)

    def _allowed(self, host: str) -> bool:
        if is_loopback(host):
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.allow)

    def _route(self, sender: tuple[str, int], message: OscMessage) -> None:
        if self.on_traffic is not None:
            self.on_traffic("in", f"{sender[0]}:{sender[1]}", message.address, tuple(message.params))
        for handler in self.dispatcher.handlers_for_address(message.address):
            handler.invoke(sender, message)

    def _wildcard(self, sender: tuple[str, int], address: str, *_args: Any) -> None:
        self.reply_error(sender, ErrorCode.INVALID_PARAM, f"{address}: OSC wildcard patterns are not accepted; send one full address per message")

    def _unknown(self, sender: tuple[str, int], address: str, *_args: Any) -> None:
        self.counters.unknown_addresses += 1
        log.info("unknown OSC address %s from %s:%d", address, *sender)
        self.reply_error(sender, ErrorCode.INVALID_PARAM, f"{address}: unknown address (sideman serve --list-messages lists them)")

    def _message(self, sender: tuple[str, int], address: str, fixed: list, *args: Any) -> None:
        try:
            replies = self.handle(sender, fixed[0], args)
        except ProtocolError as exc:
            self.reply_error(sender, exc.code, exc.message)
            return
        for reply_address, reply_args in replies:
            self.reply(sender, reply_address, reply_args)

    def handle(self, sender: tuple[str, int], spec: MessageSpec, args: Sequence[Any]) -> list[tuple[str, tuple]]:
        """Check the state, validate the arguments and run the handler of one message; its replies.
        A refusal raises its ``ProtocolError``; a handler bug is logged and raised as error 5, so it
        never takes the endpoint down (D4). OSC and in-process callers (``Daemon.call``) share it."""
        try:
            check_state(spec, self.state_of())
            values = validate(spec, args)
            return list(self.handlers[spec.handler](sender, *values) or ())
        except ProtocolError:
            raise
        except Exception as exc:
            log.exception("handler for %s failed", spec.address)
            raise ProtocolError(ErrorCode.GENERATION, f"{spec.address}: internal error: {type(exc).__name__}: {exc}") from exc

    # ---- sending ---------------------------------------------------------------------------
    def reply_targets(self, sender: tuple[str, int]) -> list[tuple[str, int]]:
        """The sender, plus subscribers on the sender's host (Max sends from an ephemeral port)."""
        targets = [sender]
        targets += [s for s in self.subscribers.targets() if s[0] == sender[0] and s != sender]
        return targets

    def reply(self, sender: tuple[str, int], address: str, args: tuple) -> None:
        """Straight to the socket: a reply (pong, state, error) is one datagram per target and must
        not wait behind a paced burst of generated notes for other listeners."""
        if self.on_traffic is not None:
            self.on_traffic("out", f"{sender[0]}:{sender[1]}", address, args)
        if self.transport is None:
            self._enqueue(address, args, self.reply_targets(sender))
            return
        datagram = build_datagram(address, args)
        for target in self.reply_targets(sender):
            self._send(datagram, target)

    def reply_error(self, sender: tuple[str, int], code: int, message: str) -> None:
        self.counters.errors_sent += 1
        if self.on_error:
            self.on_error(int(code), message, sender)
        self.reply(sender, "/midigpt/error", (int(code), message))

    def broadcast(self, address: str, args: tuple) -> None:
        """To every subscriber, in order with everything else queued."""
        if self.on_traffic is not None:
            self.on_traffic("out", "subscribers", address, args)
        self._enqueue(address, args, self.subscribers.targets())

    def _enqueue(self, address: str, args: tuple, targets: Iterable[tuple[str, int]]) -> None:
        datagram = build_datagram(address, args)
        for target in targets:
            self._outbox.append((datagram, target))
        self._outbox_ready.set()

    def _send(self, datagram: bytes, target: tuple[str, int]) -> None:
        try:
            self.transport.sendto(datagram, target)
            self.counters.sent += 1
        except OSError as exc:
            self.counters.send_failures += 1
            log.warning("send to %s:%d failed: %s", *target, exc)

    async def _drain(self) -> None:
        while True:
            await self._outbox_ready.wait()
            sent = 0
            while self._outbox and sent < SEND_BATCH:
                self._send(*self._outbox.popleft())
                sent += 1
            if self._outbox:
                await asyncio.sleep(0.001)  # pace bursts: a bar of notes must not overrun the receiver
            else:
                self._outbox_ready.clear()
