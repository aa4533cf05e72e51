"""Property tests over the protocol table through a real UDP socket, against an in-process daemon.

A fuzzing client sends random messages: known and unknown addresses, OSC wildcards, every OSC
type the wire can carry (int32/int64, float32/double with NaN and inf, strings, blobs, booleans,
nil, MIDI, arrays) in random arities, alone or inside a bundle. Each message is followed by a
``/midigpt/ping`` sentinel, so everything the daemon answered in between is that message's reply:
an invalid message gets exactly one ``/midigpt/error`` (the code the table predicts), a valid one
at most its normal reply or a domain error, never an internal error. Meanwhile another client
plays a session in the same daemon, which must keep generating framed bars.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from sideman.daemon.app import ServeOptions
from sideman.daemon.params import AGENT_TRACK_PARAMS, CAPABILITY_ATTRIBUTES, GLOBAL_PARAMS
from sideman.daemon.protocol import (
    INBOUND,
    INT32_MAX,
    INT32_MIN,
    RUNNING,
    WILDCARD_CHARACTERS,
    Arg,
    ErrorCode,
    ProtocolError,
    check_state,
    validate,
)
from sideman.daemon.server import build_datagram
from sideman.engine.inference import InferenceEngine

from .oscclient import InProcessDaemon, OscTestClient

PIANO, BASS = 0, 1
# The only messages the fuzzer sends when the table accepts them: the rest could end, reset,
# re-route, silence or move the other client's session (and a new address lands there by default).
# Every address is still fuzzed with arguments the table refuses.
SENT_WHEN_VALID = frozenset({
    "/midigpt/ping", "/midigpt/state/query", "/midigpt/param/set", "/midigpt/param/set_once",
    "/midigpt/param/reset", "/midigpt/track/param/set", "/midigpt/attr/set", "/midigpt/track/create",
    "/midigpt/track/set_ignore", "/midigpt/note", "/midigpt/note/on", "/midigpt/note/off",
    "/midigpt/tempo", "/midigpt/session/save",
})  # fmt: skip
# Global parameters a valid /param/set may change without slowing or failing the other session's jobs.
HARMLESS_PARAMS = ("temperature", "top_p", "top_k", "temperature_escalation", "sampling_seed")
NAMES = (
    *GLOBAL_PARAMS, *AGENT_TRACK_PARAMS, *CAPABILITY_ATTRIBUTES, "ignore", "no_such_name", "",
    "session.mid", "../outside.mid", "sub/dir/x.mid", "127.0.0.1", "localhost", "TEMPERATURE",
)  # fmt: skip
NORMAL_REPLIES = {
    "/midigpt/ping": "/midigpt/pong",
    "/midigpt/state/query": "/midigpt/state",
    "/midigpt/session/save": "/midigpt/session/saved",
}
INTERNAL = "internal error"


# ---- the daemon in this process ---------------------------------------------------------------


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def in_process(tiny_model, tmp_path_factory):
    engine = InferenceEngine.from_checkpoint(tiny_model, device="cpu")
    options = ServeOptions(
        port=0,
        param_defaults={"density_hard_limit": 8, "model_dim": 4, "polyphony_hard_limit": 2},
        save_dir=tmp_path_factory.mktemp("fuzz-saves"),
    )
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    server = InProcessDaemon(engine, options)
    server.errors = errors
    yield server
    server.stop()
    logging.getLogger().removeHandler(errors)
    assert not server.thread.is_alive()


# ---- strategies -------------------------------------------------------------------------------

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24
)
_SCALARS = st.one_of(
    st.integers(INT32_MIN, INT32_MAX).map(lambda v: ("i", v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: ("h", v)),
    st.floats(width=32).map(lambda v: ("f", v)),
    st.floats().map(lambda v: ("d", v)),
    _TEXT.map(lambda v: ("s", v)),
    st.sampled_from(NAMES).map(lambda v: ("s", v)),
    st.binary(min_size=1, max_size=16).map(lambda v: ("b", v)),  # python-osc cannot build b""
    st.booleans().map(lambda v: ("T" if v else "F", v)),
    st.just(("N", None)),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda v: ("m", v)),
)
OSC_VALUES = st.one_of(
    _SCALARS,
    # an array
    st.lists(st.integers(INT32_MIN, INT32_MAX) | _TEXT, max_size=3).map(lambda v: (None, v)),
)


def valid_value(arg: Arg) -> st.SearchStrategy[tuple[str | None, Any]]:
    """Mostly values the table accepts for ``arg`` (its kind, inside its range)."""
    if arg.kind == "any":
        return OSC_VALUES
    if arg.kind == "str":
        return st.sampled_from(NAMES).map(lambda v: ("s", v)) | _TEXT.map(lambda v: ("s", v))
    if arg.name == "track_id":
        return st.sampled_from((PIANO, BASS, 2, 3, 99)).map(lambda v: ("i", v))
    lo = INT32_MIN if arg.lo is None else arg.lo
    hi = INT32_MAX if arg.hi is None else arg.hi
    if arg.kind == "int":
        return st.integers(int(lo), int(hi)).map(lambda v: ("i", v))
    return st.floats(lo, hi, exclude_min=arg.lo_open, exclude_max=arg.hi_open).map(
        lambda v: ("d", v)
    )


@st.composite
def table_messages(draw) -> tuple[str, list]:
    """A known address with per-argument values, sometimes mutated: a value swapped for any OSC
    value, arguments dropped or appended."""
    spec = INBOUND[draw(st.sampled_from(sorted(INBOUND)))]
    args = [draw(valid_value(arg)) for arg in spec.args]
    mutation = draw(st.sampled_from(("none", "none", "none", "swap", "drop", "extra")))
    if mutation == "swap" and args:
        args[draw(st.integers(0, len(args) - 1))] = draw(OSC_VALUES)
    elif mutation == "drop" and args:
        args = args[: draw(st.integers(0, len(args) - 1))]
    elif mutation == "extra":
        args += draw(st.lists(OSC_VALUES, min_size=1, max_size=3))
    return spec.address, args


_SEGMENT = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/#,"),
    min_size=1,
    max_size=8,
)


@st.composite
def odd_addresses(draw) -> str:
    """Unknown addresses, near-misses of known ones and OSC patterns (which must never fan out)."""
    known = draw(st.sampled_from(sorted(INBOUND)))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return "/" + "/".join(draw(st.lists(_SEGMENT, min_size=1, max_size=4)))
    if choice == 1:
        return "/midigpt/" + "/".join(draw(st.lists(_SEGMENT, min_size=1, max_size=3)))
    if choice == 2:
        return known + draw(st.sampled_from(("/", "x", "/extra", " ", ".", "+", "|")))
    position = draw(st.integers(1, len(known)))
    wildcard = draw(st.sampled_from(("*", "?", "[a-z]", "{ping,stop}", "[!x]", "]", "{")))
    return known[:position] + wildcard + known[position:]


FUZZ_MESSAGES = st.one_of(
    table_messages(),
    table_messages(),
    st.tuples(odd_addresses(), st.lists(OSC_VALUES, max_size=6)),
)


def datagram(address: str, args: list[tuple[str | None, Any]]) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value, tag)
    return builder.build().dgram


# ---- what the table predicts --------------------------------------------------------------------


def expected_error(address: str, params: list) -> int | None:
    """The error code the daemon must answer with (None: the table accepts the message)."""
    if WILDCARD_CHARACTERS.intersection(address) or address not in INBOUND:
        return ErrorCode.INVALID_PARAM
    spec = INBOUND[address]
    try:
        check_state(spec, RUNNING)
        validate(spec, params)
    except ProtocolError as refusal:
        return refusal.code
    return None


def disturbs_the_session(address: str, params: list) -> bool:
    """A valid message the fuzzer must not send: it would end or reroute the other session."""
    if address not in SENT_WHEN_VALID:
        return True
    values = validate(INBOUND[address], params)
    if address in ("/midigpt/param/set", "/midigpt/param/set_once", "/midigpt/param/reset"):
        return values[0] in GLOBAL_PARAMS and values[0] not in HARMLESS_PARAMS
    if address == "/midigpt/track/create":
        # A few tracks at most: the prompt must fit the tiny model.
        return values[0] not in (2, 3)
    if address == "/midigpt/track/set_ignore":  # the other session's only conditioning track stays
        return values[0] == PIANO
    return False


# ---- the other client's session -----------------------------------------------------------------


class SessionPlayer:
    """Plays bars of a valid session from its own socket until stopped."""

    def __init__(self, address: tuple[str, int], bar_seconds: float = 0.5) -> None:
        self.client = OscTestClient(address)
        self.bar_seconds = bar_seconds
        self.next_bar = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_session(self) -> None:
        c = self.client
        c.send("/midigpt/session/init", "fuzz-session")
        c.wait_for("/midigpt/session/ready")
        c.send("/midigpt/param/set", "buffer_bars", 2)
        c.send("/midigpt/track/create", PIANO, 0, 10, 0)
        c.send("/midigpt/track/create", BASS, 32, 10, 1)
        c.send("/midigpt/session/start")
        c.wait_for("/midigpt/session/started")
        c.send("/midigpt/tempo", 240.0 / self.bar_seconds)  # 4/4 bars as long as they are played

    def play_bar(self) -> None:
        bar = self.next_bar
        for step in range(4):
            self.client.send("/midigpt/note", PIANO, 60 + step, 80, step / 4, 0.25, bar)
        self.client.send("/midigpt/bar/end", bar, 4, 4)
        self.next_bar += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.play_bar()
            self._stop.wait(self.bar_seconds)

    def play_in_background(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def wait_for_job(
        self, statuses: tuple[str, ...], after: int = 0, timeout: float = 30.0
    ) -> None:
        """Until a job that ended after the first ``after`` ended ones has one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while not any(r["status"] in statuses for r in self.ended_jobs()[after:]):
            ended = [
                (r["target_bar"], r["status"], r.get("reason")) for r in self.ended_jobs()[after:]
            ]
            assert time.monotonic() < deadline, (
                f"no job ended {statuses} within {timeout} s: {ended}"
            )
            time.sleep(0.05)

    def ended_jobs(self) -> list[dict]:
        reports = [json.loads(args[0]) for args in self.client.messages("/midigpt/job")]
        return [r for r in reports if r["status"] != "queued"]


def assert_framed(client: OscTestClient) -> int:
    """Every generated bar is open → its announced count of notes → close; returns the bar count."""
    with client._condition:
        received = [
            (a, args) for a, args, _ in client.received if a.startswith("/midigpt/generated/")
        ]
    current, announced, notes, bars = None, 0, 0, 0
    for address, args in received:
        if address == "/midigpt/generated/open":
            assert current is None, "open inside an open bar"
            current, announced, notes = args[1], args[2], 0
        elif address == "/midigpt/generated/note":
            assert args[:2] == (BASS, current)
            notes += 1
        elif address == "/midigpt/generated/close":
            assert args == (BASS, current) and notes == announced
            current, bars = None, bars + 1
    return bars


# ---- the property -----------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, address: tuple[str, int], server: InProcessDaemon) -> None:
        self.client = OscTestClient(address)
        self.server = server
        self.sequence = 0
        self.sent = {"invalid": 0, "valid": 0}

    def replies_to(self, data: bytes, answered_later: bool = False) -> list[tuple[str, tuple]]:
        """Send ``data``, then a ping; what arrived before that ping's pong answered ``data``.

        ``answered_later``: the reply comes when work off the loop ends (a save), so also wait
        for it after the pong.
        """
        self.sequence += 1
        token = f"sentinel-{self.sequence}"
        sentinel = ("/midigpt/pong", (token,))
        with self.client._condition:
            start = len(self.client.received)
        self.client.send_raw(data)
        self.client.send("/midigpt/ping", token)
        self.client.wait_for("/midigpt/pong", lambda a: a == (token,), timeout=10)
        if answered_later:
            self._wait_after(start, ("/midigpt/session/saved", "/midigpt/error"))
        with self.client._condition:
            after = [(a, args) for a, args, _ in self.client.received[start:]]
        return [reply for reply in after if reply != sentinel]

    def _wait_after(self, start: int, addresses: tuple[str, ...], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client._condition:
            while not any(a in addresses for a, _, _ in self.client.received[start:]):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"none of {addresses} within {timeout} s")
                self.client._condition.wait(remaining)

    def check(self, address: str, args: list, bundled: bool = False) -> None:
        data = datagram(address, args)
        params = list(OscMessage(data).params)  # what the daemon will decode
        if bundled:  # the same message inside a bundle whose timetag is "immediately"
            data = b"#bundle\x00" + (1).to_bytes(8, "big") + len(data).to_bytes(4, "big") + data
        code = expected_error(address, params)
        if code is None:
            assume(not disturbs_the_session(address, params))
        logged = len(self.server.errors.records) + len(self.server.loop_errors)
        replies = self.replies_to(
            data, answered_later=code is None and address == "/midigpt/session/save"
        )
        assert self.server.thread.is_alive()
        assert len(self.server.errors.records) + len(self.server.loop_errors) == logged, (
            self.server.errors.records[-1:] or self.server.loop_errors[-1:]
        )
        errors = [r for a, r in replies if a == "/midigpt/error"]
        assert not [e for e in errors if INTERNAL in e[1]], errors
        if code is not None:
            self.sent["invalid"] += 1
            assert replies == [("/midigpt/error", replies[0][1])] and errors[0][0] == code, (
                address, params, replies,
            )  # fmt: skip
            return
        self.sent["valid"] += 1
        assert len(replies) <= 1, replies
        if replies and replies[0][0] != "/midigpt/error":
            assert replies[0][0] == NORMAL_REPLIES.get(address), (address, params, replies)
        if address in ("/midigpt/ping", "/midigpt/state/query"):
            assert replies and replies[0][0] == NORMAL_REPLIES[address], (address, params, replies)


def test_fuzzed_messages_get_one_error_each_while_a_session_keeps_generating(in_process):
    player = SessionPlayer(in_process.address)
    fuzzer = Fuzzer(in_process.address, in_process)
    try:
        player.start_session()
        player.play_in_background()

        @settings(
            max_examples=300, deadline=None, database=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )  # fmt: skip
        @given(FUZZ_MESSAGES, st.booleans())
        def fuzz(message: tuple[str, list], bundled: bool) -> None:
            fuzzer.check(*message, bundled=bundled)

        fuzz()
        # The session kept going meanwhile: its jobs end (a loaded machine may need a few more bars).
        player.wait_for_job(("done", "late"))
        player.pause()
        assert fuzzer.sent["invalid"] > 100 and fuzzer.sent["valid"] > 40, fuzzer.sent

        state = player.client.state()
        assert state["state"] == "RUNNING", state
        ended_during_fuzzing = player.ended_jobs()
        assert not [r for r in ended_during_fuzzing if r["status"] == "failed"], (
            ended_during_fuzzing
        )

        # New bars still produce jobs, which end with generated bars, each framed.
        player.play_in_background()
        player.wait_for_job(("done",), after=len(ended_during_fuzzing))
        player.pause()
        assert not [r for r in player.ended_jobs() if r["status"] == "failed"], player.ended_jobs()
        assert assert_framed(player.client) > 0
        assert not in_process.errors.records and not in_process.loop_errors, (
            in_process.errors.records, in_process.loop_errors,
        )  # fmt: skip
    finally:
        player.pause()
        fuzzer.client.close()
        player.client.close()


@pytest.fixture(scope="module")
def fuzzer(in_process):
    fuzzing = Fuzzer(in_process.address, in_process)
    yield fuzzing
    fuzzing.client.close()


@given(st.binary(max_size=64) | st.binary(max_size=64).map(lambda tail: b"/midigpt/" + tail))
@settings(max_examples=200, deadline=None, database=None, derandomize=True)
def test_arbitrary_bytes_get_one_error_each(in_process, fuzzer, data):
    logged = len(in_process.errors.records) + len(in_process.loop_errors)
    replies = fuzzer.replies_to(data)
    if not data.startswith(b"#bundle"):  # unparsable, or an address no one would send
        assert [address for address, _ in replies] == ["/midigpt/error"], (data, replies)
    assert not [r for a, r in replies if a == "/midigpt/error" and INTERNAL in r[1]]
    assert len(in_process.errors.records) + len(in_process.loop_errors) == logged


# ---- defects the fuzzing found --------------------------------------------------------------------


@pytest.mark.parametrize("token", [1e300, -3.4028235677973366e38, 0.1, math.inf])
def test_pong_echoes_a_double_token_that_float32_cannot_hold(token):
    echoed = OscMessage(build_datagram("/midigpt/pong", (token,)))
    assert echoed.params == [token]


def test_pong_keeps_float32_tokens_as_f():
    assert b",f\x00\x00" in build_datagram("/midigpt/pong", (0.5,))


def test_ping_with_a_huge_double_is_answered_not_an_exception_on_the_loop(in_process, fuzzer):
    errors_before = len(in_process.loop_errors)
    replies = fuzzer.replies_to(datagram("/midigpt/ping", [("d", 1e300)]))
    assert replies == [("/midigpt/pong", (1e300,))]
    assert len(in_process.loop_errors) == errors_before
