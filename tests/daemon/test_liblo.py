"""A whole session driven by liblo's ``oscsend`` and watched by its ``oscdump``.

liblo is an OSC implementation independent of python-osc (which both the daemon and the other
tests use), so this catches wire-format mistakes the two could share: type tags, padding, string
termination. Every message is its own ``oscsend`` process (a fresh ephemeral source port, as Max
``[udpsend]`` does); the daemon's replies reach ``oscdump`` because ``/session/init`` names its port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("oscsend") is None or shutil.which("oscdump") is None,
    reason="liblo-tools (oscsend, oscdump) is not installed; .ci/run installs it with apt-get",
)

PIANO, BASS = 0, 1


@dataclass(frozen=True)
class Dumped:
    """One message as ``oscdump`` printed it."""

    address: str
    types: str
    args: tuple


def parse_dump_line(line: str) -> Dumped | None:
    """``<timetag> <address> <types> <args…>``; strings are printed in double quotes, unescaped."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or not parts[1].startswith("/"):
        return None
    address, types = parts[1], parts[2]
    rest = parts[3] if len(parts) > 3 else ""
    args: list = []
    for position, tag in enumerate(types):
        rest = rest.lstrip(" ")
        if tag == "s":
            # A trailing string may contain anything, quotes included.
            if position == len(types) - 1:
                text, rest = rest[1:-1] if rest.endswith('"') else rest[1:], ""
            else:
                end = rest.index('" ', 1)
                text, rest = rest[1:end], rest[end + 1 :]
            args.append(text)
            continue
        token, _, rest = rest.partition(" ")
        args.append(int(token) if tag in "ih" else float(token) if tag in "fd" else token)
    return Dumped(address, types, tuple(args))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def oscsend(port: int, address: str, types: str = "", *args) -> None:
    values = [repr(a) if isinstance(a, float) else str(a) for a in args]
    command = ["oscsend", "127.0.0.1", str(port), address, *([types] if types else []), *values]
    subprocess.run(command, check=True, capture_output=True, timeout=10)


class OscDump:
    """``oscdump -L <port>`` in a child process; its lines parsed as they arrive."""

    def __init__(self, attempts: int = 5) -> None:
        self.messages: list[Dumped] = []
        self._condition = threading.Condition()
        for _ in range(attempts):
            self.port = free_udp_port()
            self.proc = subprocess.Popen(
                ["oscdump", "-L", str(self.port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
            if self._listening():
                return
            self.close()
        raise RuntimeError("oscdump did not start listening")

    def _read(self) -> None:
        for line in self.proc.stdout:
            message = parse_dump_line(line)
            if message is not None:
                with self._condition:
                    self.messages.append(message)
                    self._condition.notify_all()

    def _listening(self) -> bool:
        """Probe until oscdump prints our own message (the port may have been taken meanwhile)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            oscsend(self.port, "/probe")
            try:
                self.wait_for("/probe", timeout=0.2)
                return True
            except TimeoutError:
                continue
        return False

    def of(self, address: str) -> list[tuple]:
        with self._condition:
            return [m.args for m in self.messages if m.address == address]

    def wait_for(self, address: str, predicate=lambda args: True, timeout: float = 10.0) -> tuple:
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for message in self.messages:
                    if message.address == address and predicate(message.args):
                        return message.args
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.address for m in self.messages][-20:]
                    raise TimeoutError(f"oscdump saw no {address} within {timeout} s; last: {seen}")
                self._condition.wait(remaining)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def dump():
    listener = OscDump()
    yield listener
    listener.close()


def test_parse_dump_line_reads_each_type_and_strings_with_spaces_and_quotes():
    line = 'eeb13c6b.3ff51efb /midigpt/error is 4 "/midigpt/note: argument \'pitch\' must be "x""\n'
    assert parse_dump_line(line) == Dumped(
        "/midigpt/error", "is", (4, "/midigpt/note: argument 'pitch' must be \"x\"")
    )
    assert parse_dump_line('0.0 /midigpt/session/saved si "a b.mid" 12') == Dumped(
        "/midigpt/session/saved", "si", ("a b.mid", 12)
    )
    assert parse_dump_line("0.0 /midigpt/session/ready ") == Dumped(
        "/midigpt/session/ready", "", ()
    )
    note = parse_dump_line("0.0 /midigpt/generated/note iiiiff 1 2 40 90 0.250000 0.125000")
    assert note.args == (1, 2, 40, 90, 0.25, 0.125)


def test_a_whole_session_through_liblo(daemon, dump):
    port = daemon.address[1]
    oscsend(port, "/midigpt/session/init", "si", "liblo", dump.port)
    dump.wait_for("/midigpt/session/ready")
    assert json.loads(dump.of("/midigpt/capabilities")[0][0])["note_density"] is True

    oscsend(port, "/midigpt/param/set", "si", "buffer_bars", 2)
    oscsend(port, "/midigpt/track/create", "iiii", PIANO, 0, 10, 0)
    oscsend(port, "/midigpt/track/create", "iiii", BASS, 32, 10, 1)
    oscsend(port, "/midigpt/session/start")
    dump.wait_for("/midigpt/session/started")
    oscsend(port, "/midigpt/tempo", "f", 240.0)

    bars = 8
    for bar in range(bars):
        for step in range(2):
            oscsend(port, "/midigpt/note", "iiiffi", PIANO, 60 + 7 * step, 90, step / 2, 0.5, bar)
        oscsend(port, "/midigpt/bar/end", "iii", bar, 4, 4)
        time.sleep(0.2)

    # A string where an int is expected: error 4 naming the argument, sent to the subscriber.
    oscsend(port, "/midigpt/track/create", "siii", "one", 0, 10, 0)
    code, message = dump.wait_for("/midigpt/error", lambda a: "track_id" in a[1])
    assert code == 4 and "/midigpt/track/create" in message

    oscsend(port, "/midigpt/state/query")
    state = json.loads(dump.wait_for("/midigpt/state")[0])
    assert state["state"] == "RUNNING" and state["playhead"] == bars

    finished = lambda args: json.loads(args[0])["status"] not in ("queued",)  # noqa: E731
    dump.wait_for("/midigpt/job", finished, timeout=30)
    oscsend(port, "/midigpt/session/stop")
    dump.wait_for("/midigpt/session/stopped")

    reports = [json.loads(args[0]) for args in dump.of("/midigpt/job")]
    assert {r["status"] for r in reports} >= {"queued"}
    ended = [r for r in reports if r["status"] != "queued"]
    assert any(r["status"] in ("done", "late") for r in ended), reports
    assert {r["status"] for r in ended} <= {"done", "late", "cancelled", "dropped"}, reports

    with dump._condition:
        messages = list(dump.messages)
    frames: dict[int, list] = {}
    current = None
    for m in messages:
        if m.address == "/midigpt/generated/open":
            assert m.types == "iii" and current is None
            current = m.args[1]
            frames[current] = [m.args[2], 0]
        elif m.address == "/midigpt/generated/note":
            assert m.types == "iiiiff" and m.args[:2] == (BASS, current)
            assert 0 <= m.args[2] <= 127 and 1 <= m.args[3] <= 127
            assert 0 <= m.args[4] < 1 and 0 < m.args[5] <= 1
            frames[current][1] += 1
        elif m.address == "/midigpt/generated/close":
            assert m.types == "ii" and m.args == (BASS, current)
            current = None
    assert current is None
    assert len(dump.of("/midigpt/generated/open")) == len(dump.of("/midigpt/generated/close")) > 0
    assert all(announced == received for announced, received in frames.values()), frames
    sent = {bar for r in ended if r["status"] == "done" for bar in r["sent_bars"]}
    assert sent <= set(frames), (sent, frames)
