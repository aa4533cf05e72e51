"""The model in a child process (daemon/engine_process.py): the same notes as in-process, cancel
between tokens, a child that dies is replaced, load errors name the problem; and through
``sideman serve``, a killed engine process costs one job report, not the session."""

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from sideman.daemon.engine_process import EngineProcess, EngineSpec, EngineStartError
from sideman.engine.demo import demo_score
from sideman.engine.inference import GenerationCancelled, GenerationFailed, InferenceEngine
from sideman.engine.request import GenerationRequest, InferenceConfig, RequestError, TrackPrompt

from .conftest import FAST_PARAMS
from .oscclient import DaemonProcess, OscTestClient
from .test_osc_session import play_bar, start


def request(bars=(3,), max_new_tokens=64, **config) -> GenerationRequest:
    score = demo_score()
    return GenerationRequest(
        tracks=(TrackPrompt(id=score.n_tracks - 1, bars=bars, autoregressive=True),),
        config=InferenceConfig(
            model_dim=4, max_new_tokens=max_new_tokens, silence_check=False, novelty_check=False, seed=3, **config
        ),
    )


@pytest.fixture(scope="module")
def remote(tiny_model):
    engine = EngineProcess(EngineSpec(model=str(tiny_model), device="cpu", precision="fp32", warm_up=False))
    yield engine
    engine.close()


def test_a_child_process_generates_the_same_notes_as_the_engine_in_process(remote, tiny_model):
    score = demo_score().slice_bars(0, 4)
    local = InferenceEngine.from_pretrained(str(tiny_model), device="cpu", precision="fp32")
    expected = local.session(score, request()).run().score.notes
    got = remote.session(score, request()).run().score.notes
    assert remote.pid != os.getpid() and remote.name == local.name and remote.precision == "fp32"
    assert len(got.pitch) == len(expected.pitch) > 0
    for column in ("track", "bar", "onset", "duration", "pitch", "velocity"):
        np.testing.assert_array_equal(getattr(got, column), getattr(expected, column))


def test_cancel_through_the_shared_event_stops_the_child_between_tokens(remote):
    cancel = remote.new_cancel_event()
    cancel.set()  # seen by the child at its first token check
    with pytest.raises(GenerationCancelled):
        remote.session(demo_score(), request(bars=tuple(range(8))), cancel).run()
    assert not remote.new_cancel_event().is_set()  # handed out cleared for the next job
    assert remote.session(demo_score().slice_bars(0, 4), request()).run().score.n_bars == 4  # still serving


def test_a_plain_threading_event_is_relayed_to_the_child(remote):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        remote.session(demo_score(), request(bars=tuple(range(8))), cancel).run()


def test_an_invalid_request_is_a_request_error_from_the_child(remote):
    bad = GenerationRequest(tracks=(TrackPrompt(id=99, bars=(0,)),), config=InferenceConfig(model_dim=4))
    with pytest.raises(RequestError, match="99"):
        remote.session(demo_score().slice_bars(0, 4), bad).run()


class _ExitsWhenUnpickled:
    """Stands in for a score: the child dies (exit code 9) as it reads the request."""

    def __reduce__(self):
        return (os._exit, (9,))


def test_a_child_dying_mid_job_fails_that_job_and_is_replaced(remote):
    first_pid, restarts = remote.pid, remote.restarts
    with pytest.raises(GenerationFailed, match=r"died \(exit code 9\)"):
        remote.session(_ExitsWhenUnpickled(), request()).run()
    assert remote.restarts == restarts + 1 and remote.pid not in (None, first_pid)
    assert remote.session(demo_score().slice_bars(0, 4), request()).run().score.n_bars == 4


def test_a_missing_model_file_is_a_start_error_naming_it(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(EngineStartError, match="nope.safetensors"):
        EngineProcess(EngineSpec(model=str(missing), warm_up=False))


def test_close_ends_the_child(tiny_model):
    engine = EngineProcess(EngineSpec(model=str(tiny_model), device="cpu", warm_up=False))
    pid = engine.pid
    engine.close()
    assert engine.pid is None and not Path(f"/proc/{pid}").exists()  # stopped and reaped


def _engine_child(client: OscTestClient) -> int:
    engine = client.state()["engine"]
    assert engine["process"] not in (None, os.getpid()), engine
    return engine["process"]


def test_serve_survives_its_engine_process_being_killed(tiny_model, tmp_path):
    """A killed engine process turns the job in flight into a failed report (error 5), a new
    engine process is started, and the next bars are generated again (D4)."""
    daemon = DaemonProcess("--model", str(tiny_model), "--save-dir", str(tmp_path), *FAST_PARAMS)
    client = OscTestClient(daemon.address)
    try:
        first = _engine_child(client)
        start(client, params=[("buffer_bars", 2)])
        client.send("/midigpt/tempo", 15.0)  # 16 s bars: no deadline interferes
        os.kill(first, signal.SIGSTOP)  # frozen, so the job is surely in flight when it is killed
        play_bar(client, 0)
        client.wait_for("/midigpt/status", lambda a: a[0] == "generating", timeout=30)
        os.kill(first, signal.SIGKILL)
        failed = client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] == "failed", timeout=60)
        assert "died" in json.loads(failed[0])["reason"]
        assert any(code == 5 for code, _ in client.errors())
        client.clear()
        play_bar(client, 1)
        done = client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] == "done", timeout=120)
        assert json.loads(done[0])["target_bar"] == 3  # playhead 2 + lookahead 1
        assert _engine_child(client) != first and client.state()["engine"]["restarts"] == 1
    finally:
        client.close()
        assert daemon.stop() == 0, "".join(daemon.stderr_lines)[-3000:]
