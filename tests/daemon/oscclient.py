"""A small OSC client for the daemon tests: a real UDP socket, a receiving thread, waits with timeouts.

It sends from the socket it listens on, so the daemon's default reply target (the /session/init
sender) is this client. Messages are built with python-osc; ``send_raw`` sends arbitrary bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket


class OscTestClient:
    def __init__(self, server: tuple[str, int], bind_port: int = 0) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", bind_port))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.received: list[tuple[str, tuple, float]] = []
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    # ---- sending ---------------------------------------------------------------------------
    def send(self, address: str, *args, types: str | None = None) -> None:
        builder = OscMessageBuilder(address)
        for i, value in enumerate(args):
            builder.add_arg(value, types[i] if types else None)
        self.sock.sendto(builder.build().dgram, self.server)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    # ---- receiving -------------------------------------------------------------------------
    def _receive(self) -> None:
        while not self._closed:
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for timed in OscPacket(data).messages:
                message: OscMessage = timed.message
                with self._condition:
                    self.received.append((message.address, tuple(message.params), time.monotonic()))
                    self._condition.notify_all()

    def messages(self, address: str | None = None) -> list[tuple]:
        with self._condition:
            return [args for a, args, _ in self.received if address is None or a == address]

    def addresses(self) -> list[str]:
        with self._condition:
            return [a for a, _, _ in self.received]

    def clear(self) -> None:
        with self._condition:
            self.received.clear()

    def wait_for(self, address: str, predicate: Callable[[tuple], bool] = lambda args: True, timeout: float = 10.0) -> tuple:
        """The first message at ``address`` whose args satisfy ``predicate`` (already received or arriving)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for a, args, _ in self.received:
                    if a == address and predicate(args):
                        return args
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [a for a, _, _ in self.received][-20:]
                    raise TimeoutError(f"no {address} within {timeout} s; last received: {seen}")
                self._condition.wait(remaining)

    def errors(self) -> list[tuple[int, str]]:
        return [(int(a[0]), str(a[1])) for a in self.messages("/midigpt/error")]

    def request(self, address: str, reply: str, *args, timeout: float = 5.0) -> tuple:
        """Send and wait for the next ``reply`` message after this send."""
        with self._condition:
            start = len(self.received)
        self.send(address, *args)
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for a, reply_args, _ in self.received[start:]:
                    if a == reply:
                        return reply_args
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {reply} after {address} within {timeout} s")
                self._condition.wait(remaining)

    def error_after(self, address: str, *args, timeout: float = 5.0) -> tuple[int, str]:
        code, message = self.request(address, "/midigpt/error", *args, timeout=timeout)
        return int(code), str(message)

    def state(self) -> dict:
        return json.loads(self.request("/midigpt/state/query", "/midigpt/state")[0])

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=1)
        self.sock.close()


class DaemonProcess:
    """``sideman serve`` in a child process on an ephemeral port; ``stop()`` sends SIGTERM."""

    READY = re.compile(r"sideman ready on ([\d.]+):(\d+)")

    SERVE_ARGS: tuple[str, ...] = ("--port", "0", "--no-monitor")

    def __init__(self, *args: str, timeout: float = 120.0, cwd: Path | None = None) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sideman.daemon.cli", "serve", *self.SERVE_ARGS, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        )  # fmt: skip
        self.output: list[str] = []
        self.address = self._wait_ready(timeout)
        self.stderr_lines: list[str] = []
        self._stderr = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr.start()

    def _wait_ready(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sideman serve exited with {self.proc.returncode}: {self.proc.stderr.read()[-3000:]}")
                continue
            self.output.append(line)
            match = self.READY.search(line)
            if match:
                return match.group(1), int(match.group(2))
        self.proc.kill()
        raise TimeoutError(f"sideman serve not ready within {timeout} s: {''.join(self.output)}")

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


class InProcessDaemon:
    """A ``Daemon`` on its own asyncio loop in a background thread, for tests that need its event
    bus or ``call()``; records every error the loop's exception handler sees."""

    def __init__(self, engine: Any, options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict] = []
        self.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))
        self.daemon: Any = None
        self._started = threading.Event()
        self._options = options
        self._engine = engine
        self.thread = threading.Thread(target=self._run, name="test-daemon", daemon=True)
        self.thread.start()
        if not self._started.wait(60) or self.daemon.address is None:
            raise RuntimeError("in-process daemon did not start")
        self.address = ("127.0.0.1", self.daemon.address[1])

    def _run(self) -> None:
        from sideman.daemon.app import Daemon

        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.daemon = Daemon(self._engine, self._options)
            try:
                await self.daemon.start()
            finally:
                self._started.set()
            await self.daemon.run(install_signals=False)

        self.loop.run_until_complete(main())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.daemon.stop)
        self.thread.join(20)
