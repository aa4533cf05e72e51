"""``Daemon.call``: the session API for in-process callers (the monitor and its demo performer).

One message per call, run on the daemon's loop with the OSC table's state checks and argument
validation; the result is the handler's replies, a refusal raises its ``ProtocolError``; only
``LOCAL_ADDRESSES`` are served, and every call is published on the bus as kind ``"local"``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sideman.daemon.app import LOCAL_ADDRESSES, Daemon, ServeOptions
from sideman.daemon.events import EventRecorder
from sideman.daemon.protocol import INBOUND, ErrorCode, ProtocolError
from sideman.engine.inference import InferenceEngine

from .oscclient import InProcessDaemon

FAST_DEFAULTS = {"density_hard_limit": 8, "model_dim": 4, "polyphony_hard_limit": 2}
TIMEOUT_S = 10.0


class DaemonThread(InProcessDaemon):
    """A ``Daemon`` (no monitor) on a tiny checkpoint, in this process."""

    def __init__(self, model_path: Path, save_dir: Path, **param_defaults: object) -> None:
        engine = InferenceEngine.from_checkpoint(model_path, device="cpu")
        options = ServeOptions(port=0, param_defaults={**FAST_DEFAULTS, **param_defaults}, save_dir=save_dir)
        super().__init__(engine, options)


@pytest.fixture(scope="module")
def daemon(tiny_model, tmp_path_factory):
    server = DaemonThread(tiny_model, tmp_path_factory.mktemp("local-saves"))
    yield server.daemon
    server.stop()
    assert not server.thread.is_alive()


@pytest.fixture
def recorder(daemon):
    recorder = EventRecorder()
    unsubscribe = daemon.bus.subscribe(recorder)
    yield recorder
    unsubscribe()


def call(daemon: Daemon, address: str, *args: object) -> list:
    return daemon.call(address, *args).result(TIMEOUT_S)


def refusal(daemon: Daemon, address: str, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call(daemon, address, *args)
    return caught.value


def test_every_local_address_is_in_the_protocol_table():
    assert LOCAL_ADDRESSES <= set(INBOUND)


def test_state_query_returns_the_state_json(daemon):
    call(daemon, "/midigpt/session/init", "local-test")
    replies = call(daemon, "/midigpt/state/query")
    assert [address for address, _ in replies] == ["/midigpt/state"]
    state = json.loads(replies[0][1][0])
    assert state["state"] == "INITIALIZING"
    assert state["name"] == "local-test"


def test_messages_without_replies_return_an_empty_list(daemon):
    assert call(daemon, "/midigpt/session/init") == []
    assert call(daemon, "/midigpt/track/create", 1, 0, 10, 0) == []


def test_a_bad_argument_is_refused_with_code_4_naming_it(daemon):
    call(daemon, "/midigpt/session/init")
    error = refusal(daemon, "/midigpt/tempo", "fast")
    assert error.code == ErrorCode.INVALID_PARAM
    assert "'bpm'" in error.message
    error = refusal(daemon, "/midigpt/track/create", 1, 300, 10, 0)
    assert error.code == ErrorCode.INVALID_PARAM
    assert "'instrument'" in error.message
    error = refusal(daemon, "/midigpt/track/create", 1, 0, 10)
    assert error.code == ErrorCode.INVALID_PARAM
    assert "missing argument 'is_agent'" in error.message


@pytest.mark.parametrize(
    "address, args",
    [
        ("/midigpt/session/save", ("x.mid",)),
        ("/midigpt/session/load", ("x.mid",)),
        ("/midigpt/subscribe", ("127.0.0.1", 9000)),
        ("/midigpt/ping", ()),
        ("/midigpt/no/such/address", ()),
        ("/midigpt/session/*", ()),
    ],
)
def test_an_address_outside_the_session_api_is_refused_with_code_4(daemon, address, args):
    error = refusal(daemon, address, *args)
    assert error.code == ErrorCode.INVALID_PARAM
    assert address in error.message and "in-process" in error.message


def test_a_call_in_the_wrong_state_gets_the_protocol_error_code(daemon):
    call(daemon, "/midigpt/session/stop")
    error = refusal(daemon, "/midigpt/note", 0, 60, 100, 0.0, 0.5, 0)
    assert error.code == ErrorCode.INVALID_STATE
    assert "STOPPED" in error.message
    assert refusal(daemon, "/midigpt/session/start").code == ErrorCode.INVALID_STATE


def test_domain_refusals_keep_their_codes(daemon):
    call(daemon, "/midigpt/session/init")
    assert refusal(daemon, "/midigpt/session/start").code == ErrorCode.NO_AGENT
    call(daemon, "/midigpt/track/create", 1, 0, 10, 1)
    assert refusal(daemon, "/midigpt/track/create", 1, 0, 10, 0).code == ErrorCode.DUPLICATE_TRACK
    assert refusal(daemon, "/midigpt/track/create", 2, 0, 10, 1).code == ErrorCode.MULTI_AGENT
    call(daemon, "/midigpt/track/create", 2, 33, 10, 0)
    call(daemon, "/midigpt/session/start")
    assert refusal(daemon, "/midigpt/note", 1, 60, 100, 0.0, 0.5, 0).code == ErrorCode.AGENT_NOTE
    assert refusal(daemon, "/midigpt/note", 9, 60, 100, 0.0, 0.5, 0).code == ErrorCode.UNKNOWN_TRACK
    call(daemon, "/midigpt/session/stop")


def test_each_call_is_published_on_the_bus_as_local(daemon, recorder):
    call(daemon, "/midigpt/session/init", "bus")
    refusal(daemon, "/midigpt/tempo", 1000.0)
    refusal(daemon, "/midigpt/session/save", "x.mid")
    local = [event.data for event in recorder.of_kind("local")]
    assert [(e["address"], tuple(e["args"]), e["code"]) for e in local] == [
        ("/midigpt/session/init", ("bus",), 0),
        ("/midigpt/tempo", (1000.0,), int(ErrorCode.INVALID_PARAM)),
        ("/midigpt/session/save", ("x.mid",), int(ErrorCode.INVALID_PARAM)),
    ]
    assert local[0]["error"] is None
    assert "'bpm'" in local[1]["error"]
    assert "in-process" in local[2]["error"]


def test_a_local_session_init_leaves_the_osc_reply_targets_alone(daemon):
    before = daemon.subscribers.describe()
    call(daemon, "/midigpt/session/init", "local")
    assert daemon.subscribers.describe() == before


def test_calls_from_several_threads_each_run_in_order(daemon):
    call(daemon, "/midigpt/session/init")
    errors: list[BaseException] = []

    def create(first_id: int) -> None:
        try:
            futures = [
                daemon.call("/midigpt/track/create", first_id + i, 0, 10, 0) for i in range(20)
            ]
            for future in futures:
                future.result(TIMEOUT_S)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(100 * t,)) for t in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert errors == []
    state = json.loads(call(daemon, "/midigpt/state/query")[0][1][0])
    assert len(state["tracks"]) == 80
