"""``sideman bench daemon``: the daemon as a performer meets it, over real UDP on 127.0.0.1.

``sideman serve`` runs in a child process; this process is the client. Printed: start-up time to
"ready" (cold and warm numba cache), ``/midigpt/ping`` round trips idle and while the worker
generates, the highest inbound ``/midigpt/note`` rate that loses nothing, simulated sessions on a
real clock at several tempos (bars delivered before their downbeat, slack), and the daemon's RSS
after many bars. As in ``engine.bench``, nothing asserts a time: the figures stand beside their
targets and same-run baselines for people to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError

from sideman.daemon.server import RateLimiter

HOST = "127.0.0.1"
PIANO, BASS = 0, 1
DEFAULT_PARAMS = (("density_hard_limit", "16"),)  # a random model writes ~2,000 tokens a bar uncapped
NOTES_PER_BAR = 8
FINISHED = ("done", "late", "cancelled", "failed", "dropped")
TARGETS = {
    "ping_p99_generating_ms": 1.0,
    "on_time_share": {120: 1.0, 180: 1.0},
    "rss_growth": 0.05,
}


def datagram(address: str, *args: object) -> bytes:
    builder = OscMessageBuilder(address)
    for value in args:
        builder.add_arg(value)
    return builder.build().dgram


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


# ---- the daemon in a child process ------------------------------------------------------------
@dataclass(frozen=True)
class ServeArgs:
    """What the child ``sideman serve`` is started with (the model and its --param defaults)."""

    model: str | None = None  # a bundle path; None: --random-init (yellow_small shape)
    params: tuple[tuple[str, str], ...] = DEFAULT_PARAMS
    threads: int = 1
    in_process: bool = False  # the model in the daemon's own process (the baseline of the ping figures)
    monitor: bool = False  # start the web monitor too (on a free port; DaemonChild.monitor_url)

    def argv(self) -> list[str]:
        argv = ["--model", self.model] if self.model else ["--random-init"]
        for name, value in self.params:
            argv += ["--param", f"{name}={value}"]
        return argv + ["--threads", str(self.threads)] + (["--in-process"] if self.in_process else [])

    def describe(self) -> str:
        model = self.model or "random-init yellow_small shape (n_embd 512, 6 layers, 8 heads; no checkpoint shipped yet)"
        params = " ".join(f"{n}={v}" for n, v in self.params) or "none"
        return f"model: {model}\nserve params: {params}; torch threads {self.threads}"


class DaemonChild:
    """``sideman serve --port 0`` in a child; ``ready_s`` is the wall time from spawn to its ready line."""

    READY = re.compile(r"sideman ready on ([\d.]+):(\d+)")

    def __init__(self, serve: ServeArgs, numba_cache: Path | None, timeout: float = 300.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if numba_cache is not None:
            env["NUMBA_CACHE_DIR"] = str(numba_cache)
        monitor = ["--monitor-port", "0"] if serve.monitor else ["--no-monitor"]
        argv = [sys.executable, "-m", "sideman.daemon.cli", "serve", "--port", "0", *monitor, *serve.argv()]
        self.monitor_url = ""
        started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True).start()
        self.ready_line = ""
        self.address = self._wait_ready(timeout)
        self.ready_s = time.perf_counter() - started
        if serve.monitor:
            line = self.proc.stdout.readline()
            match = re.search(r"web monitor on (http://\S+)", line)
            if match is None:
                raise RuntimeError(f"expected the monitor's address after the ready line, got {line!r}")
            self.monitor_url = match.group(1)
        threading.Thread(target=self._pump, args=(self.proc.stdout, []), daemon=True).start()

    @staticmethod
    def _pump(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            del lines[:-200]

    def _wait_ready(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                time.sleep(0.2)  # let the stderr pump catch the reason
                raise RuntimeError(f"sideman serve exited with {self.proc.returncode}: {''.join(self.stderr)[-3000:]}")
            match = self.READY.search(line)
            if match:
                self.ready_line = line.strip()
                return match.group(1), int(match.group(2))
        self.proc.kill()
        raise TimeoutError(f"sideman serve not ready within {timeout:.0f} s")

    def rss_mib(self) -> float:
        """VmRSS of the daemon process and its children (the engine process), from /proc (Linux)."""
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        total = 0.0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
                    break
            else:
                raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
        return total

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# ---- the client -------------------------------------------------------------------------------
class SessionClient:
    """One UDP socket that sends and, on a thread, records every reply as (address, args, time)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.1)
        self.received: list[tuple[str, tuple, float]] = []
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def send(self, address: str, *args: object) -> None:
        self.sock.sendto(datagram(address, *args), self.server)

    def _receive(self) -> None:
        while not self._closed:
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            try:
                messages = OscPacket(data).messages
            except ParseError:
                continue
            with self._condition:
                self.received += [(m.message.address, tuple(m.message.params), now) for m in messages]
                self._condition.notify_all()

    def mark(self) -> int:
        with self._condition:
            return len(self.received)

    def since(self, mark: int, address: str) -> list[tuple[tuple, float]]:
        with self._condition:
            return [(args, t) for a, args, t in self.received[mark:] if a == address]

    def wait_for(self, address: str, after: int = 0, predicate: Callable[[tuple], bool] = lambda a: True, timeout: float = 10.0) -> tuple:
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for a, args, _ in self.received[after:]:
                    if a == address and predicate(args):
                        return args
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {address} from the daemon within {timeout} s")
                self._condition.wait(remaining)

    def request(self, address: str, reply: str, *args: object, timeout: float = 10.0) -> tuple:
        mark = self.mark()
        self.send(address, *args)
        return self.wait_for(reply, after=mark, timeout=timeout)

    def state(self, attempts: int = 5) -> dict:
        """The /midigpt/state JSON; retried, since a query right after a flood can be rate-limited."""
        for attempt in range(attempts):
            try:
                return json.loads(self.request("/midigpt/state/query", "/midigpt/state", timeout=2.0)[0])
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def jobs(self, mark: int = 0) -> list[dict]:
        return [json.loads(args[0]) for args, _ in self.since(mark, "/midigpt/job")]

    def start_session(self, params: Sequence[tuple[str, object]] = (), bpm: float | None = None) -> None:
        """init, params, a piano conditioning track and a bass agent, start (osc-protocol §10.1)."""
        mark = self.mark()
        self.send("/midigpt/session/init", "bench")
        self.wait_for("/midigpt/session/ready", after=mark)
        for name, value in params:
            self.send("/midigpt/param/set", name, value)
        if bpm is not None:
            self.send("/midigpt/tempo", float(bpm))
        self.send("/midigpt/track/create", PIANO, 0, 0, 0)
        self.send("/midigpt/track/create", BASS, 32, 0, 1)
        self.send("/midigpt/session/start")
        self.wait_for("/midigpt/session/started", after=mark)

    def play_bar(self, bar: int) -> None:
        for i in range(NOTES_PER_BAR):
            self.send("/midigpt/note", PIANO, 60 + (i * 5 + bar) % 24, 80, i / NOTES_PER_BAR, 1 / NOTES_PER_BAR, bar)
        self.send("/midigpt/bar/end", bar, 4, 4)

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=1)
        self.sock.close()


# ---- start-up -----------------------------------------------------------------------------------
def measure_startup(serve: ServeArgs, numba_cache: Path | None) -> tuple[dict[str, float], DaemonChild]:
    """Cold (empty numba cache) then warm (same cache); the warm daemon is kept for the rest.
    Without ``numba_cache`` (--quick) one start with the environment's cache, whatever its state."""
    if numba_cache is None:
        daemon = DaemonChild(serve, None)
        print(f"start-up to ready (environment's numba cache)   {daemon.ready_s:6.1f} s   [{_inner(daemon.ready_line)}]")
        return {"startup_s": daemon.ready_s}, daemon
    cold = DaemonChild(serve, numba_cache)
    cold_line = cold.ready_line
    cold.stop()
    warm = DaemonChild(serve, numba_cache)
    figures = {"startup_cold_s": cold.ready_s, "startup_warm_s": warm.ready_s}
    print(f"start-up to ready, cold (empty NUMBA_CACHE_DIR)  {cold.ready_s:6.1f} s   [{_inner(cold_line)}]")
    print(f"start-up to ready, warm (same cache again)       {warm.ready_s:6.1f} s   [{_inner(warm.ready_line)}]")
    return figures, warm


def _inner(ready_line: str) -> str:
    match = re.search(r"\((.*)\)", ready_line)
    return match.group(1) if match else ready_line


# ---- ping ---------------------------------------------------------------------------------------
class Pinger:
    """Sequential /midigpt/ping → /midigpt/pong on its own blocking socket (no receive thread in
    the way); returns (send time, round trip in ms) per ping."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(1.0)

    def ping(self, token: int) -> tuple[float, float]:
        message = datagram("/midigpt/ping", token)
        sent = time.monotonic()
        self.sock.sendto(message, self.server)
        while True:
            try:
                data, _ = self.sock.recvfrom(4096)
            except TimeoutError:
                return sent, float("inf")  # lost or refused: counted, shown as max
            packet = OscPacket(data)
            if any(m.message.address == "/midigpt/pong" and tuple(m.message.params) == (token,) for m in packet.messages):
                return sent, 1e3 * (time.monotonic() - sent)

    def run(self, count: int | None = None, until: float | None = None, gap_s: float = 0.002) -> list[tuple[float, float]]:
        results = []
        token = 0
        while (count is not None and token < count) or (until is not None and time.monotonic() < until):
            results.append(self.ping(token))
            token += 1
            time.sleep(gap_s)
        return results

    def close(self) -> None:
        self.sock.close()


def ping_from_child(
    server: tuple[str, int], count: int | None = None, until: float | None = None, gap_s: float = 0.002
) -> list[tuple[float, float]]:
    """``Pinger.run`` in a separate interpreter, so the round trips measure the daemon and not
    this process's own threads (session driver, receiver) competing for its interpreter lock.
    Send times are CLOCK_MONOTONIC, comparable across processes on Linux."""
    spec = json.dumps({"server": list(server), "count": count, "until": until, "gap_s": gap_s})
    code = "import sys; from sideman.daemon.bench import _pinger_main; _pinger_main(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ping child failed: {done.stderr[-2000:]}")
    return [tuple(pair) for pair in json.loads(done.stdout)]


def _pinger_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    pinger = Pinger(tuple(spec["server"]))
    try:
        results = pinger.run(count=spec["count"], until=spec["until"], gap_s=spec["gap_s"])
    finally:
        pinger.close()
    print(json.dumps(results))  # a lost ping's inf round trip travels as Infinity


def _rtt_row(label: str, rtts: Sequence[float], extra: str = "") -> dict[str, float]:
    p50, p99 = percentile(rtts, 50), percentile(rtts, 99)
    worst = max(rtts) if rtts else float("nan")
    print(f"{label:34s} n={len(rtts):5d}  p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {worst:7.3f} ms{extra}")
    return {"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "n": len(rtts)}


def busy_intervals(client: SessionClient, mark: int, stopped: float) -> list[tuple[float, float]]:
    """(start, end) of each job the worker ran, from /midigpt/status generating → ready arrivals;
    a job still running at ``stopped`` (cancelled by the stop, no "ready" follows) ends there."""
    intervals, start = [], None
    for args, t in client.since(mark, "/midigpt/status"):
        if args[0] == "generating":
            start = t
        elif args[0] == "ready" and start is not None:
            intervals.append((start, t))
            start = None
    if start is not None:
        intervals.append((start, stopped))
    return intervals


def _overlap(intervals: Sequence[tuple[float, float]], first: float, last: float) -> float:
    return sum(max(0.0, min(b, last) - max(a, first)) for a, b in intervals)


def measure_ping(daemon: DaemonChild, quick: bool, baseline: bool = False) -> dict[str, float]:
    """Ping round trips idle and while a generation runs; ``baseline``: only the latter, for a
    daemon started with --in-process, under its own label."""
    client = SessionClient(daemon.address)
    try:
        figures: dict[str, float] = {}
        if not baseline:
            idle = [rtt for _, rtt in ping_from_child(daemon.address, count=300 if quick else 3000, gap_s=0.001)[50:]]
            figures = {f"ping_idle_{k}": v for k, v in _rtt_row("ping, idle", idle).items()}

        # Keep the worker busy: bars every 0.25 s, a long gen_timeout so no job is dropped for its
        # deadline; each new job supersedes the waiting one, so one always runs.
        client.start_session(params=[("buffer_bars", 2), ("gen_timeout", 60.0)])
        mark = client.mark()
        stop = threading.Event()

        def drive() -> None:
            bar = 0
            while not stop.is_set():
                client.play_bar(bar)
                bar += 1
                stop.wait(0.25)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        client.wait_for("/midigpt/status", after=mark, predicate=lambda a: a[0] == "generating", timeout=60)
        pings = ping_from_child(daemon.address, until=time.monotonic() + (4.0 if quick else 20.0))
        stop.set()
        driver.join()
        stopped = time.monotonic()
        client.request("/midigpt/session/stop", "/midigpt/session/stopped")
        time.sleep(0.1)
        busy = busy_intervals(client, mark, stopped)
        during = [rtt for sent, rtt in pings if any(a <= sent <= b for a, b in busy)]
        first, last = pings[0][0], pings[-1][0]
        busy_share = _overlap(busy, first, last) / max(last - first, 1e-9)
        label = "baseline: --in-process engine" if baseline else "ping, while a generation runs"
        row = _rtt_row(label, during, f"  (worker busy {100 * busy_share:.0f}% of the time)")
        if baseline:
            return {f"ping_generating_in_process_{k}": v for k, v in row.items()}
        figures.update({f"ping_generating_{k}": v for k, v in row.items()})
        verdict = "met" if row["p99_ms"] <= TARGETS["ping_p99_generating_ms"] else "NOT met"
        print(f"target: ping p99 <= {TARGETS['ping_p99_generating_ms']:.0f} ms while generating: {verdict}")
        return figures
    finally:
        client.close()


def measure_ping_baseline(serve: ServeArgs, cache: Path | None, quick: bool, p99_ms: float) -> dict[str, float]:
    """The same busy-worker ping run against a daemon whose model shares its process (and its
    interpreter lock) with the OSC loop: what the child-process engine is measured against."""
    daemon = DaemonChild(replace(serve, in_process=True), cache)
    try:
        figures = measure_ping(daemon, quick, baseline=True)
    finally:
        daemon.stop()
    base = figures["ping_generating_in_process_p99_ms"]
    print(
        f"ping p99 while generating: engine process {p99_ms:.3f} ms vs in-process engine {base:.3f} ms "
        f"(x{p99_ms / base:.2f})"
    )
    return figures


# ---- inbound note rate ------------------------------------------------------------------------
def send_paced(sock: socket.socket, server: tuple[str, int], datagrams: list[bytes], rate: float) -> float:
    """Send ``datagrams`` at ``rate`` per second (busy-wait pacing); returns the achieved rate."""
    started = time.perf_counter()
    sent = 0
    n = len(datagrams)
    while sent < n:
        due = min(n, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            try:
                sock.sendto(datagrams[sent], server)
            except BlockingIOError:
                break
            sent += 1
    return n / max(time.perf_counter() - started, 1e-9)


def measure_note_rate(daemon: DaemonChild, quick: bool) -> dict[str, float]:
    limiter = RateLimiter()
    burst_s = 1.0 if quick else 2.0
    rates = (1_000, 5_000, 20_000) if quick else (1_000, 2_000, 5_000, 10_000, 20_000, 40_000)
    print(
        f"note bursts of {burst_s:.0f} s per rate; the daemon limits each source host to "
        f"{limiter.rate:,.0f} msg/s with bursts to {limiter.burst:,.0f} (daemon/server.py RateLimiter)"
    )
    print("stored: pending notes the state query counts; refused: by the rate limiter; lost udp: never read by the daemon")
    print(f"{'rate msg/s':>10s} {'sent at':>9s} {'sent':>7s} {'stored':>7s} {'refused':>8s} {'lost udp':>8s}  verdict")
    client = SessionClient(daemon.address)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    figures: dict[str, float] = {"lossless_note_rate": 0.0, "udp_lossless_note_rate": 0.0}
    try:
        for rate in rates:
            client.start_session()
            client.send("/midigpt/bar/end", 0, 4, 4)  # origin 0, playhead 1
            n = int(rate * burst_s)
            # Bars 2..61 are pending (ahead of the playhead, within max_future_bars 64): all accepted.
            notes = [
                datagram("/midigpt/note", PIANO, 36 + i % 48, 90, (i % 16) / 16, 1 / 16, 2 + i % 60) for i in range(n)
            ]
            before = client.state()
            time.sleep(limiter.burst / limiter.rate + 0.2)  # the bucket refills between rates
            achieved = send_paced(sender, daemon.address, notes, rate)
            after, queries = _settled_state(client)
            received = after["wire"]["received"] - before["wire"]["received"] - queries
            refused = after["wire"]["rate_limited"] - before["wire"]["rate_limited"]
            stored = after["score"]["pending_notes"]
            lost_udp = max(0, n - received)
            lossless = stored == n
            if lossless:
                figures["lossless_note_rate"] = rate
            if lost_udp == 0:
                figures["udp_lossless_note_rate"] = rate
            verdict = "lossless" if lossless else ("refused by the rate limiter" if refused else "lost")
            print(f"{rate:10,d} {achieved:9,.0f} {n:7,d} {stored:7,d} {refused:8,d} {lost_udp:8,d}  {verdict}")
            figures[f"stored_share_{rate}"] = stored / n
            if not lossless:
                break
        print(
            f"highest lossless note rate: {figures['lossless_note_rate']:,.0f} msg/s for {burst_s:.0f} s bursts; "
            f"nothing lost on the socket up to {figures['udp_lossless_note_rate']:,.0f} msg/s "
            f"(platform-notes §3.3: bare asyncio python-osc 20 k msg/s)"
        )
        client.send("/midigpt/session/stop")
        return figures
    finally:
        sender.close()
        client.close()


def _settled_state(client: SessionClient, timeout: float = 10.0) -> tuple[dict, int]:
    """The state once the daemon has read everything (its received counter moves only by our
    queries), and how many queries that took."""
    limiter = RateLimiter()
    time.sleep(limiter.burst / limiter.rate + 0.1)  # a full bucket: the queries are never counted as refused notes
    deadline = time.monotonic() + timeout
    state, queries = client.state(), 1
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = client.state()
        queries += 1
        if again["wire"]["received"] == state["wire"]["received"] + 1:
            return again, queries
        state = again
    return state, queries


# ---- simulated sessions on a real clock -------------------------------------------------------
@dataclass
class SessionRun:
    bpm: float
    n_bars: int
    reports: list[dict] = field(default_factory=list)
    queued: list[dict] = field(default_factory=list)

    def expected_bars(self) -> set[int]:
        first = min((r["target_bar"] for r in self.queued), default=self.n_bars)
        return set(range(first, self.n_bars))

    def on_time_bars(self) -> set[int]:
        return {b for r in self.reports if r["status"] == "done" for b in r["sent_bars"]}


def simulate_session(client: SessionClient, bpm: float, n_bars: int) -> SessionRun:
    """4/4 at ``bpm``, lookahead 1: each bar's 8 notes at their onsets, /bar/end on the barline."""
    bar_s = 4 * 60.0 / bpm
    client.start_session(params=[("lookahead_bars", 1)], bpm=bpm)
    mark = client.mark()
    t0 = time.monotonic() + 0.2
    for bar in range(n_bars):
        for i in range(NOTES_PER_BAR):
            _sleep_until(t0 + (bar + i / NOTES_PER_BAR) * bar_s)
            client.send("/midigpt/note", PIANO, 60 + (i * 5 + bar) % 24, 80, i / NOTES_PER_BAR, 1 / NOTES_PER_BAR, bar)
        _sleep_until(t0 + (bar + 1) * bar_s)
        client.send("/midigpt/bar/end", bar, 4, 4)
    time.sleep(bar_s + 0.5)  # the job the last barline triggered reports by its own deadline
    client.send("/midigpt/session/stop")
    client.wait_for("/midigpt/session/stopped", after=mark)
    time.sleep(0.2)
    jobs = client.jobs(mark)
    return SessionRun(
        bpm, n_bars, reports=[r for r in jobs if r["status"] in FINISHED], queued=[r for r in jobs if r["status"] == "queued"]
    )


def _sleep_until(when: float) -> None:
    remaining = when - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def measure_sessions(daemon: DaemonChild, quick: bool) -> dict[str, float]:
    tempos, n_bars = ((240,), 16) if quick else ((120, 180, 240), 128)
    print(f"simulated sessions: {n_bars} bars of 4/4, lookahead 1, one conditioning track of {NOTES_PER_BAR} notes a bar, real clock")
    print(
        f"{'bpm':>4s} {'bar s':>6s} {'on time':>12s} {'done':>5s} {'late':>5s} {'drop':>5s} {'canc':>5s} {'fail':>5s}"
        f"  {'slack p10/p50/p90 ms':>22s}  {'latency p50/p90 ms':>19s}  target"
    )
    figures: dict[str, float] = {}
    client = SessionClient(daemon.address)
    try:
        for bpm in tempos:
            run = simulate_session(client, bpm, n_bars)
            expected = run.expected_bars()
            on_time = run.on_time_bars() & expected
            share = len(on_time) / max(len(expected), 1)
            counts = {s: sum(r["status"] == s for r in run.reports) for s in FINISHED}
            ran = [r for r in run.reports if r["status"] in ("done", "late") and "slack_ms" in r]
            slack = [r["slack_ms"] for r in ran]
            latency = [r["latency_ms"] for r in ran]
            target = TARGETS["on_time_share"].get(bpm)
            verdict = "-" if target is None else (f"100% {'met' if share >= target else 'NOT met'}")
            print(
                f"{bpm:4d} {4 * 60 / bpm:6.2f} {len(on_time):4d}/{len(expected):3d} {100 * share:3.0f}%"
                f" {counts['done']:5d} {counts['late']:5d} {counts['dropped']:5d} {counts['cancelled']:5d} {counts['failed']:5d}"
                f"  {percentile(slack, 10):6.0f} {percentile(slack, 50):6.0f} {percentile(slack, 90):6.0f}"
                f"  {percentile(latency, 50):9.0f} {percentile(latency, 90):6.0f}    {verdict}"
            )
            figures[f"on_time_share_{bpm}"] = share
            figures[f"slack_p10_ms_{bpm}"] = percentile(slack, 10)
            figures[f"slack_p50_ms_{bpm}"] = percentile(slack, 50)
            figures[f"slack_p90_ms_{bpm}"] = percentile(slack, 90)
            failures = {r["reason"] for r in run.reports if r["status"] == "failed"}
            if failures:
                print(f"     failed: {'; '.join(sorted(failures))[:300]}")
        print("on time: the job reported done and its bar was sent before the barline that starts it")
        return figures
    finally:
        client.close()


# ---- memory over a long session -----------------------------------------------------------------
def measure_rss(daemon: DaemonChild, quick: bool) -> dict[str, float]:
    """RSS after 100 and after many bars sent fast: each job's deadline has passed by the time
    the worker could start it, so jobs are dropped or cancelled and cost almost nothing."""
    checkpoints = (100, 1_000) if quick else (100, 1_000, 10_000)
    bars_per_s = 300  # x 9 messages = 2,700 msg/s, well under the per-source rate limit
    client = SessionClient(daemon.address)
    readings: dict[int, float] = {}
    try:
        client.start_session()
        mark = client.mark()
        started = time.monotonic()
        for bar in range(checkpoints[-1]):
            _sleep_until(started + bar / bars_per_s)
            client.play_bar(bar)
            if (bar + 1) % 100 == 0:
                # Backpressure: the query is answered after the bars before it, so a daemon that
                # falls behind slows the sender instead of losing bars (a gap over 64 bars would
                # leave every later bar refused as too far ahead).
                state = client.state()
                if state["playhead"] != bar + 1:
                    raise RuntimeError(f"playhead {state['playhead']} after {bar + 1} bars: messages were refused or lost")
                if bar + 1 in checkpoints:
                    readings[bar + 1] = daemon.rss_mib()
                started = time.monotonic() - (bar + 1) / bars_per_s
        final = client.state()
        client.send("/midigpt/session/stop")
        jobs = client.jobs(mark)
    finally:
        client.close()
    counts = {s: sum(r["status"] == s for r in jobs) for s in FINISHED}
    base = readings[checkpoints[0]]
    last = checkpoints[-1]
    growth = readings[last] / base - 1
    text = ", ".join(f"{n:,} bars {readings[n]:.1f} MiB" for n in checkpoints)
    print(f"daemon RSS (VmRSS, daemon and engine processes): {text}")
    score = final["score"]
    print(
        f"after {last:,} bars: x{readings[last] / base:.3f} of RSS after {checkpoints[0]} "
        f"(target within {100 * TARGETS['rss_growth']:.0f}%: {'met' if growth <= TARGETS['rss_growth'] else 'NOT met'}); "
        f"{score['bars_in_memory']} bars in memory, {score['journal_bars']:,} in the journal; "
        f"jobs: {', '.join(f'{k} {v}' for k, v in counts.items() if v)}"
    )
    return {f"rss_mib_{n}": v for n, v in readings.items()} | {"rss_ratio": readings[last] / base}


# ---- the suite ----------------------------------------------------------------------------------
def run_daemon_bench(
    quick: bool = False,
    model: str | None = None,
    params: Sequence[tuple[str, str]] | None = None,
    threads: int = 1,
) -> dict[str, float]:
    serve = ServeArgs(model=model, params=tuple(params) if params is not None else DEFAULT_PARAMS, threads=threads)
    print("== sideman bench daemon ==")
    print(f"cores: {os.cpu_count()}  client and daemon on {HOST} (UDP), daemon in a child process")
    print(serve.describe())
    cache = None if quick else Path(tempfile.mkdtemp(prefix="sideman-bench-numba-"))
    figures: dict[str, float] = {}
    daemon = None
    try:
        startup, daemon = measure_startup(serve, cache)
        figures.update(startup)
        figures.update(measure_ping(daemon, quick))
        figures.update(measure_ping_baseline(serve, cache, quick, figures["ping_generating_p99_ms"]))
        figures.update(measure_note_rate(daemon, quick))
        figures.update(measure_sessions(daemon, quick))
        figures.update(measure_rss(daemon, quick))
    finally:
        if daemon is not None:
            code = daemon.stop()
            if code != 0:
                print(f"sideman serve exited with {code}: {''.join(daemon.stderr)[-2000:]}")
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    return figures
