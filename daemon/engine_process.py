"""The generation engine in a child process.

The model's per-token Python work (sampling, grammar, cache bookkeeping) holds the interpreter
lock between torch calls; in the daemon's own process that lock is shared with the OSC loop, and
a ping waits for it (p99 ~2 ms on two cores). In a child process the model runs on its own core
with its own interpreter, and the daemon's worker thread only waits on a pipe.

``EngineProcess`` has the engine interface the worker uses (``session(...).run()``,
``encoder_config``, ``tokenizer``, ``name``, ``precision``). Cancellation crosses with a shared
event the child checks between tokens. If the child dies (a crash, the OOM killer), the job in
flight fails with the reason and the next job starts a fresh child.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from sideman.engine.inference import GenerationCancelled, GenerationFailed
from sideman.engine.request import RequestError
from sideman.engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.002  # how often the waiting worker passes a local cancel on to the child


class EngineStartError(RuntimeError):
    """The child could not load the model; the message says why."""


@dataclass(frozen=True)
class EngineSpec:
    """What the child loads: a bundle path or model name, or a random-init model."""

    model: str | None = None
    random_init: bool = False
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1
    warm_up: bool = True


def load_engine(spec: EngineSpec) -> Any:
    from sideman.engine.inference import InferenceEngine

    if spec.random_init:
        return InferenceEngine.random_init(device=spec.device, precision=spec.precision)
    return InferenceEngine.from_pretrained(spec.model or "default", device=spec.device, precision=spec.precision)


def _child_main(spec: EngineSpec, conn: Connection, cancel: Any) -> None:
    """The child: load, warm up, then run one request per message until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the daemon shuts us down
    import torch

    torch.set_num_threads(max(1, spec.threads))
    started = time.perf_counter()
    try:
        engine = load_engine(spec)
        warm_s = 0.0
        if spec.warm_up:
            from sideman.daemon.serve import warm_up

            warm_s = warm_up(engine)
    except Exception as exc:
        conn.send(("error", _describe(exc)))
        return
    conn.send(("ready", {
        "name": engine.name,
        "precision": engine.precision,
        "encoder_config": engine.encoder_config,
        "load_s": time.perf_counter() - started,
        "warm_s": warm_s,
    }))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the daemon is gone
            return
        if message[0] == "close":
            return
        _, score, request, rest_on_silence = message
        try:
            result = engine.session(score, request, cancel, rest_on_silence=rest_on_silence).run()
            reply = ("ok", result)
        except GenerationCancelled as exc:
            reply = ("cancelled", str(exc))
        except RequestError as exc:
            reply = ("request", (exc.field, exc.message))
        except GenerationFailed as exc:
            reply = ("failed", str(exc))
        except Exception as exc:
            reply = ("failed", _describe(exc))
        try:
            conn.send(reply)
        except Exception as exc:  # a result that cannot be pickled is still an answer
            conn.send(("failed", f"result could not be sent back: {_describe(exc)}"))


def _describe(exc: BaseException) -> str:
    """The message alone for the errors the CLI reports as user errors, else with its type."""
    from sideman.daemon.cli import user_errors

    text = str(exc)
    return text if isinstance(exc, user_errors()) and text else f"{type(exc).__name__}: {exc}"


class EngineProcess:
    """A model loaded in a child process, used like an in-process ``InferenceEngine``."""

    def __init__(self, spec: EngineSpec, start_timeout: float = 600.0) -> None:
        self.spec = spec
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")  # never fork a process that may hold torch's threads
        self._lock = threading.Lock()  # one request at a time, as the worker runs them
        self._process: Any = None
        self._conn: Connection | None = None
        self._cancel = self._ctx.Event()
        self.restarts = 0
        info = self._start()
        self.name: str = info["name"]
        self.precision: str = info["precision"]
        self.encoder_config = info["encoder_config"]
        self.tokenizer = Tokenizer(self.encoder_config)
        self.load_s: float = info["load_s"]
        self.warm_s: float = info["warm_s"]

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> dict:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_child_main, args=(self.spec, child, self._cancel), name="sideman-engine", daemon=True
        )
        process.start()
        child.close()
        ready = wait([parent, process.sentinel], timeout=self.start_timeout)
        if parent in ready:
            try:
                kind, payload = parent.recv()
            except EOFError:
                kind, payload = "error", f"the engine process exited with code {process.exitcode} while loading"
        elif process.sentinel in ready:
            process.join()
            kind, payload = "error", f"the engine process exited with code {process.exitcode} while loading"
        else:
            kind, payload = "error", f"the engine process was not ready after {self.start_timeout:.0f} s"
        if kind != "ready":
            process.kill()
            process.join()
            raise EngineStartError(payload)
        self._process, self._conn = process, parent
        return payload

    def new_cancel_event(self) -> Any:
        """The event the child checks between tokens, cleared: a worker that cancels through it
        reaches the child at once, where a plain ``threading.Event`` is relayed by polling."""
        self._cancel.clear()
        return self._cancel

    def session(self, score: Any, request: Any, cancel: threading.Event | None = None, *, rest_on_silence: bool = False) -> _RemoteSession:
        return _RemoteSession(self, score, request, cancel or threading.Event(), rest_on_silence)

    def _run(self, score: Any, request: Any, cancel: threading.Event, rest_on_silence: bool) -> Any:
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._restart("the engine process had exited")
            shared = cancel is self._cancel
            if not shared:
                self._cancel.clear()
            try:
                self._conn.send(("run", score, request, rest_on_silence))
            except (OSError, ValueError) as exc:
                self._restart(f"could not send the request: {exc}")
                raise GenerationFailed(f"engine process unavailable: {exc}") from exc
            while True:
                ready = wait([self._conn, self._process.sentinel], timeout=None if shared else CANCEL_POLL_S)
                if self._conn in ready:
                    try:
                        kind, payload = self._conn.recv()
                    except (EOFError, OSError):
                        kind, payload = None, None
                    if kind is not None:
                        break
                if ready:  # the sentinel, or a pipe closed by a dying child
                    self._process.join(1.0)
                    code = self._process.exitcode
                    self._restart(f"the engine process died (exit code {code})")
                    raise GenerationFailed(f"the engine process died (exit code {code}); a new one was started")
                if not shared and cancel.is_set() and not self._cancel.is_set():
                    self._cancel.set()
        if kind == "ok":
            return payload
        if kind == "cancelled":
            raise GenerationCancelled(payload)
        if kind == "request":
            raise RequestError(*payload)
        raise GenerationFailed(payload)

    def _restart(self, why: str) -> None:
        log.error("%s; starting a new engine process", why)
        self._stop_child()
        self.restarts += 1
        self._start()

    def _stop_child(self, timeout: float = 5.0) -> None:
        if self._process is None:
            return
        try:
            self._conn.send(("close",))
        except (OSError, ValueError):
            pass
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()
        self._process = self._conn = None

    def close(self) -> None:
        """Stop the child (cancelling a request in flight)."""
        self._cancel.set()
        with self._lock:
            self._stop_child()


class _RemoteSession:
    def __init__(self, engine: EngineProcess, score: Any, request: Any, cancel: threading.Event, rest_on_silence: bool) -> None:
        self.engine, self.score, self.request, self.cancel, self.rest_on_silence = engine, score, request, cancel, rest_on_silence

    def run(self) -> Any:
        return self.engine._run(self.score, self.request, self.cancel, self.rest_on_silence)


__all__ = ["EngineProcess", "EngineSpec", "EngineStartError", "load_engine"]
