"""The ``/midigpt/*`` OSC protocol as one declarative table, with argument validation.

Every inbound address maps to a ``MessageSpec``: its arguments in wire order, the session states
that accept it (osc-protocol.md §9.2) and the name of the ``Session`` method that handles it. The
server looks a message up here, checks the state, converts the arguments with ``validate`` and
calls the handler, so handlers only ever see typed, range-checked values. A bad argument is
``ProtocolError`` code 4 naming the argument (§16 D13–D17), never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

UNINITIALIZED = "UNINITIALIZED"
INITIALIZING = "INITIALIZING"
RUNNING = "RUNNING"
STOPPED = "STOPPED"
STATES: tuple[str, ...] = (UNINITIALIZED, INITIALIZING, RUNNING, STOPPED)
ANY_STATE = frozenset(STATES)
SETUP_STATES = frozenset({INITIALIZING, RUNNING})
RUNNING_ONLY = frozenset({RUNNING})

ARG_KINDS = ("int", "float", "str", "any")
# OSC 1.0 address-pattern characters; incoming patterns must never fan out (D10).
WILDCARD_CHARACTERS = frozenset("*?[]{}")


class ErrorCode(IntEnum):
    """The ``/midigpt/error`` codes of osc-protocol.md §6."""

    INVALID_STATE = 1
    UNKNOWN_TRACK = 2
    DUPLICATE_TRACK = 3
    INVALID_PARAM = 4
    GENERATION = 5
    NO_AGENT = 6
    MULTI_AGENT = 7
    AGENT_NOTE = 8


class ProtocolError(Exception):
    """A message the daemon refuses; sent back as ``/midigpt/error code message``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = int(code)
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolError({self.code}, {self.message!r})"


@dataclass(frozen=True)
class Arg:
    """One OSC argument: its name, kind and accepted values.

    ``lo``/``hi`` are inclusive bounds unless ``lo_open``/``hi_open`` make them strict.
    ``value_messages`` gives dedicated error texts for particular values (e.g. velocity 0, which
    a client sends when it means note-off). Bounds are not checked for kind ``str``/``any``.
    """

    name: str
    kind: str
    lo: float | None = None
    hi: float | None = None
    optional: bool = False
    choices: tuple[Any, ...] | None = None
    lo_open: bool = False
    hi_open: bool = False
    value_messages: tuple[tuple[Any, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ARG_KINDS:
            raise ValueError(
                f"argument {self.name!r}: kind must be one of {ARG_KINDS}, got {self.kind!r}"
            )

    def describe(self) -> str:
        """``name:kind`` with its range, e.g. ``pitch:int 0..127`` or ``[onset:float [0, 1)]``."""
        kind = "int32" if self._is_int32() else self.kind
        text = f"{self.name}:{kind} {self.range_text()}".rstrip()
        return f"[{text}]" if self.optional else text

    def range_text(self) -> str:
        """The accepted values in words: ``0..127``, ``(0, 64]``, ``{a, b}``, or "" when any."""
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        if self._is_int32():
            return ""
        if self.lo is None and self.hi is None:
            return ""
        if self.lo_open or self.hi_open:
            left = "(" if self.lo_open else "["
            right = ")" if self.hi_open else "]"
            lo = "-inf" if self.lo is None else _number(self.lo)
            hi = "inf" if self.hi is None else _number(self.hi)
            return f"{left}{lo}, {hi}{right}"
        lo = "" if self.lo is None else _number(self.lo)
        hi = "" if self.hi is None else _number(self.hi)
        return f"{lo}..{hi}"

    def _is_int32(self) -> bool:
        return self.kind == "int" and (self.lo, self.hi) == (INT32_MIN, INT32_MAX)


@dataclass(frozen=True)
class MessageSpec:
    """An inbound address: its arguments in order, accepting states, handler name and usage."""

    address: str
    args: tuple[Arg, ...]
    states: frozenset[str]
    handler: str
    doc: str


class _Refusal(Exception):
    """Internal: why one value was refused (the caller adds the address)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {'T' if value else 'F'}"
    if isinstance(value, str):
        shown = value if len(value) <= 30 else value[:27] + "..."
        return f"string {shown!r}"
    return type(value).__name__


def _convert_int(arg: Arg, value: Any) -> int:
    if isinstance(value, bool):
        raise _Refusal(f"argument '{arg.name}' must be an integer, got {_type_name(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Refusal(f"argument '{arg.name}' must be an integer, got {value!r}")
    raise _Refusal(f"argument '{arg.name}' must be an integer, got {_type_name(value)}")


def _convert_float(arg: Arg, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refusal(f"argument '{arg.name}' must be a number, got {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _Refusal(f"argument '{arg.name}' must be a finite number, got {value}") from None
    if not math.isfinite(number):
        raise _Refusal(f"argument '{arg.name}' must be a finite number, got {number}")
    return number


def _check_range(arg: Arg, value: float) -> None:
    for special, message in arg.value_messages:
        if value == special:
            raise _Refusal(message)
    below = arg.lo is not None and (value <= arg.lo if arg.lo_open else value < arg.lo)
    above = arg.hi is not None and (value >= arg.hi if arg.hi_open else value > arg.hi)
    if below or above:
        described = f"{INT32_MIN}..{INT32_MAX} (int32)" if arg._is_int32() else arg.range_text()
        raise _Refusal(f"argument '{arg.name}' must be in {described}, got {value!r}")


def _convert(arg: Arg, value: Any) -> Any:
    if arg.kind == "any":
        return value
    if arg.kind == "str":
        if not isinstance(value, str):
            raise _Refusal(f"argument '{arg.name}' must be a string, got {_type_name(value)}")
        converted: Any = value
    elif arg.kind == "int":
        converted = _convert_int(arg, value)
        _check_range(arg, converted)
    else:
        converted = _convert_float(arg, value)
        _check_range(arg, converted)
    if arg.choices is not None and converted not in arg.choices:
        choices = ", ".join(str(c) for c in arg.choices)
        raise _Refusal(f"argument '{arg.name}' must be one of {choices}, got {converted!r}")
    return converted


def validate(spec: MessageSpec, args: Sequence[Any]) -> tuple[Any, ...]:
    """Convert a message's OSC arguments to the spec's types, or raise ProtocolError code 4.

    Returns one value per declared argument (a missing optional argument is None). Extra
    arguments are ignored, as the reference does, so older clients keep working.
    """
    values: list[Any] = []
    for position, arg in enumerate(spec.args):
        if position >= len(args):
            if arg.optional:
                values.append(None)
                continue
            usage = " ".join(a.describe() for a in spec.args)
            raise ProtocolError(
                ErrorCode.INVALID_PARAM,
                f"{spec.address}: missing argument '{arg.name}' (expected: {usage})",
            )
        try:
            values.append(_convert(arg, args[position]))
        except _Refusal as refusal:
            raise ProtocolError(
                ErrorCode.INVALID_PARAM, f"{spec.address}: {refusal.text}"
            ) from None
    return tuple(values)


def check_state(spec: MessageSpec, state: str) -> None:
    """Raise ProtocolError code 1 when ``spec`` is not accepted in ``state`` (§9.2)."""
    if state not in spec.states:
        raise ProtocolError(ErrorCode.INVALID_STATE, f"Message not allowed in state '{state}'")


def contains_wildcard(address: str) -> bool:
    """Whether an incoming address is an OSC pattern; such messages are refused, never fanned out."""
    return any(character in WILDCARD_CHARACTERS for character in address)


# ---- the inbound table ---------------------------------------------------------------------------

_TRACK_ID = Arg("track_id", "int", INT32_MIN, INT32_MAX)
_BAR_INDEX = Arg("bar_index", "int", 0, INT32_MAX)
_PORT = Arg("port", "int", 1, 65535)
_NAME = Arg("name", "str")

_MESSAGES: tuple[MessageSpec, ...] = (
    MessageSpec(
        "/midigpt/session/init",
        (
            Arg("session_name", "str", optional=True),
            Arg("reply_port", "int", 1, 65535, optional=True),
        ),
        ANY_STATE,
        "session_init",
        "/midigpt/session/init [my-set] [7401]: new session (piece cleared, params to defaults); "
        "with a reply port the sender's host at that port is subscribed",
    ),
    MessageSpec(
        "/midigpt/session/start",
        (),
        frozenset({INITIALIZING}),
        "session_start",
        "/midigpt/session/start: begin (needs one agent and one conditioning track)",
    ),
    MessageSpec(
        "/midigpt/session/stop",
        (),
        ANY_STATE,
        "session_stop",
        "/midigpt/session/stop: stop and cancel jobs in flight; the piece is kept",
    ),
    MessageSpec(
        "/midigpt/session/end",
        (),
        ANY_STATE,
        "session_stop",
        "/midigpt/session/end: alias of /midigpt/session/stop (older documentation)",
    ),
    MessageSpec(
        "/midigpt/track/create",
        (
            _TRACK_ID,
            Arg("instrument", "int", 0, 127),
            Arg("track_type", "int", INT32_MIN, INT32_MAX),
            Arg("is_agent", "int", 0, 1),
        ),
        SETUP_STATES,
        "track_create",
        "/midigpt/track/create 1 33 10 0: track 1, GM program 33, melodic (11 = drum), conditioning",
    ),
    MessageSpec(
        "/midigpt/track/remove",
        (_TRACK_ID,),
        SETUP_STATES,
        "track_remove",
        "/midigpt/track/remove 1: delete a conditioning track and its history",
    ),
    MessageSpec(
        "/midigpt/track/set_ignore",
        (_TRACK_ID, Arg("ignored", "int", 0, 1)),
        SETUP_STATES,
        "track_set_ignore",
        "/midigpt/track/set_ignore 1 1: leave conditioning track 1 out of the prompt",
    ),
    MessageSpec(
        "/midigpt/note",
        (
            _TRACK_ID,
            Arg("pitch", "int", 0, 127),
            Arg(
                "velocity",
                "int",
                1,
                127,
                value_messages=(
                    (0, "velocity 0 is a note-off; send complete notes with velocity 1-127"),
                ),
            ),
            Arg("onset", "float", 0.0, 1.0, hi_open=True),
            Arg("duration", "float", 0.0, 64.0, lo_open=True),
            _BAR_INDEX,
        ),
        RUNNING_ONLY,
        "note",
        "/midigpt/note 1 60 100 0.25 0.5 12: track 1, pitch 60, velocity 100, onset and duration "
        "as fractions of bar 12",
    ),
    MessageSpec(
        "/midigpt/bar/end",
        (_BAR_INDEX, Arg("ts_num", "int", 1, 64), Arg("ts_den", "int", 1, 64)),
        RUNNING_ONLY,
        "bar_end",
        "/midigpt/bar/end 12 4 4: bar 12 (a 4/4 bar) is complete",
    ),
    MessageSpec(
        "/midigpt/param/set",
        (_NAME, Arg("value", "any")),
        ANY_STATE,
        "param_set",
        "/midigpt/param/set temperature 0.9: set a global parameter",
    ),
    MessageSpec(
        "/midigpt/param/set_once",
        (_NAME, Arg("value", "any")),
        ANY_STATE,
        "param_set_once",
        "/midigpt/param/set_once temperature 1.5: a value for the next generation only",
    ),
    MessageSpec(
        "/midigpt/param/reset",
        (_NAME,),
        ANY_STATE,
        "param_reset",
        "/midigpt/param/reset temperature: back to the configured default",
    ),
    MessageSpec(
        "/midigpt/param/reset_all",
        (),
        ANY_STATE,
        "param_reset_all",
        "/midigpt/param/reset_all: every parameter back to its configured default",
    ),
    MessageSpec(
        "/midigpt/track/param/set",
        (_TRACK_ID, _NAME, Arg("value", "any")),
        ANY_STATE,
        "track_param_set",
        "/midigpt/track/param/set 0 max_pitch 72: per-track parameter",
    ),
    MessageSpec(
        "/midigpt/attr/set",
        (_NAME, Arg("level", "int", INT32_MIN, INT32_MAX)),
        ANY_STATE,
        "attr_set",
        "/midigpt/attr/set max_polyphony 3: agent attribute override (level < 0 removes it)",
    ),
    MessageSpec(
        "/midigpt/attr/reset_all",
        (),
        ANY_STATE,
        "attr_reset_all",
        "/midigpt/attr/reset_all: remove every attribute override",
    ),
    MessageSpec(
        "/midigpt/subscribe",
        (Arg("host", "str"), _PORT),
        ANY_STATE,
        "subscribe",
        "/midigpt/subscribe 127.0.0.1 7401: also send replies to this host and port",
    ),
    MessageSpec(
        "/midigpt/unsubscribe",
        (Arg("host", "str"), _PORT),
        ANY_STATE,
        "unsubscribe",
        "/midigpt/unsubscribe 127.0.0.1 7401: stop sending replies there",
    ),
    MessageSpec(
        "/midigpt/ping",
        (Arg("token", "any", optional=True),),
        ANY_STATE,
        "ping",
        "/midigpt/ping 42: answered by /midigpt/pong 42",
    ),
    MessageSpec(
        "/midigpt/state/query",
        (),
        ANY_STATE,
        "state_query",
        "/midigpt/state/query: answered by /midigpt/state <json>",
    ),
    MessageSpec(
        "/midigpt/tempo",
        (Arg("bpm", "float", 20.0, 400.0),),
        SETUP_STATES,
        "tempo",
        "/midigpt/tempo 120: quarter notes per minute, overriding the tempo measured from /bar/end",
    ),
    # Live input, loops, session load and per-bar attributes (§16 D59-D62): sideman extensions.
    MessageSpec(
        "/midigpt/note/on",
        (
            _TRACK_ID,
            Arg("pitch", "int", 0, 127),
            Arg(
                "velocity",
                "int",
                1,
                127,
                value_messages=((0, "velocity 0 is a note-off; send /midigpt/note/off instead"),),
            ),
            Arg("onset", "float", 0.0, 1.0, hi_open=True),
            _BAR_INDEX,
        ),
        RUNNING_ONLY,
        "note_on",
        "/midigpt/note/on 1 60 100 0.75 12: live input, a key pressed at 3/4 of bar 12; the note "
        "belongs to bar 12 however long it is held",
    ),
    MessageSpec(
        "/midigpt/note/off",
        (
            _TRACK_ID,
            Arg("pitch", "int", 0, 127),
            Arg("offset", "float", 0.0, 1.0),
            _BAR_INDEX,
        ),
        RUNNING_ONLY,
        "note_off",
        "/midigpt/note/off 1 60 0.25 13: releases the oldest held note-on of pitch 60 on track 1, "
        "at 1/4 of bar 13",
    ),
    MessageSpec(
        "/midigpt/loop",
        (_TRACK_ID, Arg("start_bar", "int", 0, INT32_MAX), Arg("end_bar", "int", 0, INT32_MAX)),
        SETUP_STATES,
        "loop",
        "/midigpt/loop 1 8 12: track 1 repeats bars 8-11 from bar 12 on, so its future bars are "
        "given to the model as context instead of masked",
    ),
    MessageSpec(
        "/midigpt/loop/clear",
        (_TRACK_ID,),
        SETUP_STATES,
        "loop_clear",
        "/midigpt/loop/clear 1: track 1 no longer loops; its future bars are masked again",
    ),
    MessageSpec(
        "/midigpt/session/load",
        (Arg("path", "str"),),
        frozenset({INITIALIZING}),
        "session_load",
        "/midigpt/session/load set.mid: a fresh session from a file /midigpt/session/save wrote: "
        "its tracks, and all its bars as history; play on from the next bar",
    ),
    MessageSpec(
        "/midigpt/attr/set_bar",
        (_BAR_INDEX, _NAME, Arg("level", "int", INT32_MIN, INT32_MAX)),
        ANY_STATE,
        "attr_set_bar",
        "/midigpt/attr/set_bar 16 note_density 5: agent attribute for bar 16 only (level < 0 "
        "removes it); needs a checkpoint with bar-level attributes",
    ),
    MessageSpec(
        "/midigpt/session/save",
        (Arg("path", "str"),),
        ANY_STATE,
        "session_save",
        "/midigpt/session/save /tmp/set.mid: write the session so far (human and generated) to MIDI",
    ),
    # Output control (§16 D58) and meter lookahead (D35): sideman extensions.
    MessageSpec(
        "/midigpt/agent/cancel",
        (),
        SETUP_STATES,
        "agent_cancel",
        "/midigpt/agent/cancel: cancel the job in flight and the queued one (reported cancelled)",
    ),
    MessageSpec(
        "/midigpt/agent/regenerate",
        (_BAR_INDEX,),
        RUNNING_ONLY,
        "agent_regenerate",
        "/midigpt/agent/regenerate 14: generate future bar 14 (> playhead) again, replacing the "
        "version sent; supersedes a queued job",
    ),
    MessageSpec(
        "/midigpt/agent/freeze",
        (Arg("on", "int", 0, 1),),
        SETUP_STATES,
        "agent_freeze",
        "/midigpt/agent/freeze 1: trigger no new jobs (the agent's history is kept); 0 resumes",
    ),
    MessageSpec(
        "/midigpt/agent/mute",
        (Arg("on", "int", 0, 1),),
        SETUP_STATES,
        "agent_mute",
        "/midigpt/agent/mute 1: jobs still run and the history updates, but no /midigpt/generated/* "
        "is sent; 0 unmutes",
    ),
    MessageSpec(
        "/midigpt/agent/played",
        (_TRACK_ID, _BAR_INDEX, Arg("json", "str")),
        RUNNING_ONLY,
        "agent_played",
        "/midigpt/agent/played 1 12 [[40,90,0.0,0.5]]: what the client played for agent bar 12, "
        "a JSON list of [pitch, velocity, onset, duration] (bar fractions); replaces the bar in "
        "the agent's history",
    ),
    MessageSpec(
        "/midigpt/meter",
        (_BAR_INDEX, Arg("ts_num", "int", 1, 64), Arg("ts_den", "int", 1, 64)),
        SETUP_STATES,
        "meter_announce",
        "/midigpt/meter 16 3 4: bar 16, not ended yet, will be a 3/4 bar; generated bars are sized "
        "for it",
    ),
)

INBOUND: dict[str, MessageSpec] = {spec.address: spec for spec in _MESSAGES}

# Outbound address -> OSC type tags. "*" stands for one argument echoed with its own OSC type.
OUTBOUND: dict[str, str] = {
    "/midigpt/capabilities": "s",
    "/midigpt/session/ready": "",
    "/midigpt/session/started": "",
    "/midigpt/session/stopped": "",
    "/midigpt/status": "s",
    "/midigpt/prompt/state": "s",
    "/midigpt/generated/open": "iii",
    "/midigpt/generated/note": "iiiiff",
    "/midigpt/generated/close": "ii",
    # track, bar, note_density, mean_pitch, mean_velocity, max_polyphony, mean_duration,
    # min_polyphony, min_note_duration, max_note_duration (§4: this exact order)
    "/midigpt/generated/features": "iifffifiii",
    "/midigpt/sampled/attrs": "s",
    "/midigpt/error": "is",
    "/midigpt/job": "s",
    "/midigpt/pong": "*",
    "/midigpt/state": "s",
    "/midigpt/session/saved": "si",
    "/midigpt/session/loaded": "sii",
    "/midigpt/subscribed": "si",
    "/midigpt/heartbeat": "s",
}


def check_outbound(address: str, args: Sequence[Any]) -> None:
    """Raise ValueError when ``args`` do not match the declared type tags of ``address``.

    A programming check for senders and tests: ``i`` needs an int (not bool), ``f`` a float,
    ``s`` a str, ``*`` any single value.
    """
    if address not in OUTBOUND:
        raise ValueError(f"{address} is not an outbound address")
    tags = OUTBOUND[address]
    if len(args) != len(tags):
        raise ValueError(
            f"{address} takes {len(tags)} arguments ({tags or 'none'}), got {len(args)}"
        )
    for position, (tag, value) in enumerate(zip(tags, args, strict=True)):
        ok = {
            "i": isinstance(value, int) and not isinstance(value, bool),
            "f": isinstance(value, float),
            "s": isinstance(value, str),
            "*": True,
        }[tag]
        if not ok:
            raise ValueError(f"{address} argument {position} must match tag {tag!r}, got {value!r}")


def describe_protocol(specs: Mapping[str, MessageSpec] | None = None) -> str:
    """A plain-text listing of the inbound messages: address, arguments, states and usage."""
    lines: list[str] = []
    for spec in (INBOUND if specs is None else specs).values():
        args = " ".join(arg.describe() for arg in spec.args)
        states = (
            "any state"
            if spec.states == ANY_STATE
            else ", ".join(state for state in STATES if state in spec.states)
        )
        lines.append(f"{spec.address} {args}".rstrip())
        lines.append(f"    states: {states}")
        lines.append(f"    {spec.doc}")
    lines.append("")
    lines.append("Outbound (type tags):")
    for address, tags in OUTBOUND.items():
        lines.append(f"{address} {tags or '-'}")
    return "\n".join(lines) + "\n"
