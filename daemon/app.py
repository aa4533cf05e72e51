"""``sideman serve``: load the model, warm it, wire session, worker, scheduler and endpoint, run.

The process's pieces, in the order data flows: ``OscServer`` (asyncio, UDP) → ``Session`` (state,
tracks, params, rolling score) → ``Scheduler`` (trigger, jobs, delivery) → ``GenerationWorker``
(one thread, one inference at a time). An ``EventBus`` sees everything; the web monitor, when
present, subscribes to it. Ctrl-C and SIGTERM cancel the job in flight and tell subscribers the
session stopped before the socket closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sideman.daemon.controls import CONTROL_HANDLERS, ControlHandlers
from sideman.daemon.events import EventBus
from sideman.daemon.heartbeat import Heartbeat, heartbeat_payload
from sideman.daemon.protocol import INBOUND, ErrorCode, ProtocolError
from sideman.daemon.scheduler import Scheduler
from sideman.daemon.server import OscServer, RateLimiter, is_loopback, parse_networks
from sideman.daemon.session import Session, SessionConfig
from sideman.daemon.subscribers import SubscriberError, Subscribers

log = logging.getLogger(__name__)

LOCAL_SENDER = ("local", 0)  # the sender handlers see for an in-process call
# What in-process callers may send: the session API (no save/load paths, no subscriptions).
LOCAL_ADDRESSES = frozenset(
    "/midigpt/" + name
    for name in (
        "session/init", "session/start", "session/stop", "track/create", "track/remove",
        "track/set_ignore", "note", "note/on", "note/off", "bar/end", "param/set", "param/set_once",
        "param/reset", "param/reset_all", "attr/set", "attr/reset_all", "tempo", "meter",
        "state/query", "agent/cancel", "agent/regenerate", "agent/freeze", "agent/mute",
    )
)  # fmt: skip


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``sideman serve`` takes; CLI values are the defaults init and reset restore (D39)."""

    host: str = "127.0.0.1"
    port: int = 7400
    reply_port: int | None = None
    allow: tuple[str, ...] = ()
    subscribe: tuple[tuple[str, int], ...] = ()
    param_defaults: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    save_dir: Path = Path(".")
    retain_bars: int = 64
    traffic_events: bool = False  # publish every OSC message in and out on the bus (the monitor's log)


class Daemon:
    """The running daemon: built from an ``InferenceEngine`` and options; ``await run()``."""

    def __init__(self, engine: Any, options: ServeOptions, bus: EventBus | None = None) -> None:
        self.engine = engine
        self.options = options
        self.bus = bus or EventBus()
        self.allow = parse_networks(options.allow)
        if not is_loopback(options.host) and not self.allow:
            raise ValueError(
                f"--host {options.host} exposes sideman beyond this machine; name who may drive it with "
                "--allow (addresses or CIDR ranges, e.g. --allow 192.168.1.0/24)"
            )
        self.subscribers = Subscribers(self._host_allowed, list(options.subscribe))
        self.server: OscServer | None = None
        self.session: Session | None = None
        self.scheduler: Scheduler | None = None
        self.worker: Any = None
        self.controls: ControlHandlers | None = None
        self._heartbeat: asyncio.Task | None = None
        self._beats = 0
        self.address: tuple[str, int] | None = None
        self.ready = asyncio.Event()
        self.started_at = time.monotonic()
        self._stop = asyncio.Event()

    def _host_allowed(self, host: str) -> bool:
        return self.server._allowed(host) if self.server else is_loopback(host)

    # ---- run -------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        from sideman.daemon.worker import GenerationWorker

        loop = asyncio.get_running_loop()
        config = SessionConfig(
            param_defaults=dict(self.options.param_defaults),
            retain_bars=self.options.retain_bars,
            save_dir=self.options.save_dir,
        )
        self.server = OscServer(
            self._handlers(), self.subscribers, lambda: self.session.state,
            allow=self.allow, rate_limiter=RateLimiter(), on_error=self._published_error,
        )  # fmt: skip
        self.session = Session(self.engine.encoder_config, self.bus, self.server.broadcast, config)
        self.worker = GenerationWorker(self.engine, threads=self.options.threads)
        self.scheduler = Scheduler(self.session, self.worker, self.bus, loop)
        self.controls = ControlHandlers(self.session, self.scheduler)
        self._heartbeat = loop.create_task(Heartbeat(self._heartbeat_interval, self._beat).run())
        self._loop = loop
        if self.options.traffic_events:
            self.server.on_traffic = self._traffic
        self.address = await self.server.start(self.options.host, self.options.port)
        self.ready.set()
        log.info("sideman ready on %s:%d (model %s)", *self.address, getattr(self.engine, "name", "?"))
        return self.address

    async def run(self, install_signals: bool = True) -> None:
        """Start, serve until ``stop()`` or SIGINT/SIGTERM, then shut down cleanly."""
        if self.server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        """Cancel work in flight, tell subscribers the session stopped, close the socket."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self.session is not None and self.session.state != "UNINITIALIZED":
            self.session.session_stop()
        if self.worker is not None:
            self.worker.close()
        if self.server is not None:
            await self.server.flush()
            self.server.close()
        if self.session is not None:
            self.session.close()

    def _traffic(self, direction: str, peer: str, address: str, args: tuple) -> None:
        self.bus.publish("osc", direction=direction, peer=peer, address=address, args=args)

    # ---- in-process callers (the web monitor, its demo performer) -----------------------------
    def call(self, address: str, *args: Any) -> concurrent.futures.Future:
        """Run one protocol message from any thread, as if it had arrived over OSC: the same
        table, state checks, argument validation and handlers. The future's result is the
        handler's replies ``[(address, args), ...]``; a refusal raises its ``ProtocolError``.
        Only the addresses of ``LOCAL_ADDRESSES`` are accepted: this is a session API, not a
        relay."""
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed() or self._stop.is_set():
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(ProtocolError(ErrorCode.GENERATION, f"{address}: the daemon is not running"))
            return future
        return asyncio.run_coroutine_threadsafe(self._call(address, args), loop)

    async def _call(self, address: str, args: tuple) -> list[tuple[str, tuple]]:
        try:
            if address not in LOCAL_ADDRESSES:
                raise ProtocolError(ErrorCode.INVALID_PARAM, f"{address}: not available to in-process callers")
            replies = self.server.handle(LOCAL_SENDER, INBOUND[address], args)
        except ProtocolError as exc:
            self.bus.publish("local", address=address, args=args, error=exc.message, code=int(exc.code))
            raise
        self.bus.publish("local", address=address, args=args, error=None, code=0)
        return replies

    # ---- handlers the server routes to ------------------------------------------------------
    def _handlers(self) -> dict[str, Any]:
        def session_call(name: str):
            def call(sender, *args):
                getattr(self.session, name)(*args)
                return None

            return call

        names = (
            "session_start", "session_stop", "track_create", "track_remove", "track_set_ignore",
            "note", "bar_end", "param_set", "param_set_once", "param_reset", "param_reset_all",
            "track_param_set", "attr_set", "attr_reset_all",
            "note_on", "note_off", "loop", "loop_clear", "attr_set_bar",
        )  # fmt: skip
        handlers = {name: session_call(name) for name in names}

        def controls_call(name: str):
            def call(sender, *args):
                getattr(self.controls, name)(*args)

            return call

        handlers.update({name: controls_call(name) for name in CONTROL_HANDLERS})
        handlers.update(
            session_init=self._session_init,
            subscribe=self._subscribe,
            unsubscribe=self._unsubscribe,
            ping=self._ping,
            state_query=self._state_query,
            tempo=self._tempo,
            session_save=self._session_save,
            session_load=self._session_load,
        )
        return handlers

    def _session_init(self, sender, name=None, reply_port=None):
        if sender != LOCAL_SENDER:  # an in-process init leaves the OSC reply targets as they are
            port = reply_port or self.options.reply_port or sender[1]
            self.subscribers.set_init_target((sender[0], port))
            self.bus.publish("subscribers", targets=self.subscribers.describe())
        self.session.session_init(name, reply_port)

    def _subscribe(self, sender, host, port):
        try:
            target = self.subscribers.subscribe(host, port)
        except SubscriberError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/subscribe: {exc}") from None
        self.bus.publish("subscribers", targets=self.subscribers.describe())
        return [("/midigpt/subscribed", (target[0], target[1]))]

    def _unsubscribe(self, sender, host, port):
        try:
            self.subscribers.unsubscribe(host, port)
        except SubscriberError as exc:
            raise ProtocolError(ErrorCode.INVALID_PARAM, f"/midigpt/unsubscribe: {exc}") from None
        self.bus.publish("subscribers", targets=self.subscribers.describe())

    def _ping(self, sender, token=None):
        return [("/midigpt/pong", ("" if token is None else token,))]

    def _tempo(self, sender, bpm):
        self.scheduler.set_tempo(bpm)

    def _state_query(self, sender):
        import json

        return [("/midigpt/state", (json.dumps(self.describe(), default=str),))]

    def _session_save(self, sender, path):
        """Write the session off the loop (reading the journal is O(session)); reply when done."""
        target = self.session.save_path(path)
        score = self.session.score
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, score.save_midi, target)

        def done(future: asyncio.Future) -> None:
            try:
                count = future.result()
            except OSError as exc:
                message = f"/midigpt/session/save: cannot write {target}: {exc.strerror or exc}"
                self.server.reply_error(sender, ErrorCode.INVALID_PARAM, message)
                return
            except Exception as exc:  # reported, never a silent drop
                log.exception("saving the session to %s failed", target)
                self.server.reply_error(sender, ErrorCode.INVALID_PARAM, f"/midigpt/session/save: failed: {exc}")
                return
            self.server.reply(sender, "/midigpt/session/saved", (str(target), count))

        future.add_done_callback(done)

    def _heartbeat_interval(self) -> float:
        return self.session.params.values()["heartbeat_s"] if self.session is not None else 0.0

    def _beat(self) -> None:
        """One ``/midigpt/heartbeat <json>`` to every subscriber (D56)."""
        import json

        self._beats += 1
        payload = heartbeat_payload(self.session, self.scheduler, self._beats)
        self.server.broadcast("/midigpt/heartbeat", (json.dumps(payload),))

    def _session_load(self, sender, path):
        """Read a saved session off the loop, then apply it on the loop and reply (D55, D62)."""
        from sideman.daemon.session_file import SessionFileError, read_session_file

        target = self.session.save_path(path, "/midigpt/session/load")
        session = self.session
        token = session.token
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, read_session_file, target, session.encoder_config)

        def done(future: asyncio.Future) -> None:
            try:
                saved = future.result()
                if session.token != token:
                    raise ProtocolError(ErrorCode.INVALID_STATE, "/midigpt/session/load: the session was re-initialised while the file was read")
                notes = session.load_saved(saved)
            except ProtocolError as exc:
                self.server.reply_error(sender, exc.code, exc.message)
                return
            except SessionFileError as exc:
                self.server.reply_error(sender, ErrorCode.INVALID_PARAM, f"/midigpt/session/load: {exc}")
                return
            except Exception as exc:  # reported, never a silent drop
                log.exception("loading the session from %s failed", target)
                self.server.reply_error(sender, ErrorCode.INVALID_PARAM, f"/midigpt/session/load: failed: {exc}")
                return
            log.info("loaded %d bars, %d notes from %s", saved.n_bars, notes, target)
            self.server.reply(sender, "/midigpt/session/loaded", (str(target), saved.n_bars, notes))

        future.add_done_callback(done)

    def _published_error(self, code: int, message: str, sender: tuple[str, int]) -> None:
        self.bus.publish("error", code=code, message=message, source=f"{sender[0]}:{sender[1]}")

    def describe(self) -> dict[str, Any]:
        state = self.session.describe()
        state.update(self.scheduler.describe())
        state["subscribers"] = self.subscribers.describe()
        state["wire"] = self.server.counters.as_dict()
        state["model"] = getattr(self.engine, "name", "")
        state["engine"] = {
            "precision": str(getattr(self.engine, "precision", "")),
            "process": getattr(self.engine, "pid", None),  # None: the model runs in this process
            "restarts": getattr(self.engine, "restarts", 0),
        }
        state["uptime_s"] = round(time.monotonic() - self.started_at, 1)
        return state
