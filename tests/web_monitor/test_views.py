"""The monitor's event-to-view logic (web_monitor/views.py): bus events in, bounded view and
batched updates out, in the shapes of web_monitor/socket_events.md."""

import itertools

import pytest

from sideman.daemon.events import EventBus
from sideman.engine.inference import InferenceEngine
from sideman.engine.model import ModelConfig
from sideman.web_monitor.views import (
    FEATURE_NAMES,
    LOG_PER_UPDATE,
    MonitorView,
    model_info,
    session_view,
)

TINY = ModelConfig(vocab_size=647, n_positions=1024, n_embd=64, n_layer=2, n_head=4)


def make_view(**kwargs) -> tuple[MonitorView, EventBus]:
    ticks = itertools.count()
    view = MonitorView(clock=lambda: float(next(ticks)), **kwargs)
    bus = EventBus()
    bus.subscribe(view.on_event)
    return view, bus


def close_bar(bus: EventBus, bar: int, meter=(4, 4)) -> None:
    bus.publish("bar", bar_index=bar, meter=meter, new=True, playhead=bar + 1, merged={})


def test_events_wait_in_the_inbox_until_the_emitter_takes_them():
    view, bus = make_view()
    bus.publish("note_in", track_id=0, bar_index=0, pitch=60, velocity=80, onset=0.25, duration=0.5, late=False)
    assert view.bars == {} and view.human == {}  # nothing folded on the publishing thread
    update = view.take_update()
    assert update["notes"] == [{"track": 0, "bar": 0, "pitch": 60, "velocity": 80, "onset": 0.25, "duration": 0.5, "kind": "human"}]
    assert view.take_update() is None  # nothing new


def test_updates_are_numbered_and_the_snapshot_carries_the_last_number():
    view, bus = make_view()
    close_bar(bus, 0)
    first = view.take_update()
    close_bar(bus, 1)
    second = view.take_update()
    assert (first["seq"], second["seq"]) == (1, 2)
    snapshot = view.snapshot({"model": "m"})
    assert snapshot["seq"] == 2 and [b["bar"] for b in snapshot["bars"]] == [0, 1]
    assert snapshot["session"]["playhead"] == 2 and snapshot["info"] == {"model": "m"}


def test_generated_notes_become_bar_fractions_and_replace_the_bar():
    view, bus = make_view()
    bus.publish("generated", track_id=1, bar_index=4, meter=(3, 4), bar_ticks=36, notes=[[0, 12, 40, 90], [18, 18, 43, 70]], features=None)
    entry = view.take_update()["generated"][0]
    assert entry["meter"] == [3, 4] and [(n["onset"], n["duration"]) for n in entry["notes"]] == [(0.0, 12 / 36), (0.5, 0.5)]
    assert all(n["kind"] == "generated" and n["track"] == 1 and n["bar"] == 4 for n in entry["notes"])
    bus.publish("generated", track_id=1, bar_index=4, meter=(3, 4), bar_ticks=36, notes=[[6, 6, 50, 60]], features=None)
    view.take_update()
    assert [n["pitch"] for n in view.snapshot({})["notes"]] == [50]  # the regenerated version only


def test_the_roll_window_forgets_old_bars_and_notes():
    view, bus = make_view(roll_bars=4)
    for bar in range(10):
        bus.publish("note_in", track_id=0, bar_index=bar, pitch=60 + bar, velocity=80, onset=0.0, duration=0.5, late=False)
        bus.publish("generated", track_id=1, bar_index=bar, meter=(4, 4), bar_ticks=48, notes=[[0, 12, 40, 90]], features=None)
        close_bar(bus, bar)
    view.take_update()
    snapshot = view.snapshot({})
    assert [b["bar"] for b in snapshot["bars"]] == [6, 7, 8, 9]  # playhead 10, 4 bars kept
    assert {n["bar"] for n in snapshot["notes"]} == {6, 7, 8, 9}


def test_a_job_outcome_carries_its_queued_budget_and_ends_generating():
    view, bus = make_view()
    bus.publish("job", job_id=7, target_bar=5, bars=[5], status="queued", degraded=0, budget_ms=1500.0)
    bus.publish("prompt", job_id=7, target_bar=5, start_bar=0, end_bar=8, tracks=[{"id": 0, "is_agent": False, "states": ["C"] * 8}])
    update = view.take_update()
    assert update["session"]["status"] == "generating" and update["prompt"]["job_id"] == 7
    bus.publish("job", job_id=7, target_bar=5, bars=[5], sent_bars=[5], status="done", reason="", latency_ms=420.0, slack_ms=300.0, degraded=0, sampled_attrs={})
    update = view.take_update()
    done = update["jobs"][0]
    assert done["budget_ms"] == 1500.0 and done["latency_ms"] == 420.0 and "t" in done
    assert update["session"]["status"] == "ready"


def test_attributes_join_realised_features_requested_levels_and_sampled_values():
    view, bus = make_view()
    bus.publish("param", name="attr:max_polyphony", value=3, once=False)
    features = [0.5, 62.0, 80.0, 2, 0.25, 1, 3, 7]
    bus.publish("generated", track_id=1, bar_index=5, meter=(4, 4), bar_ticks=48, notes=[[0, 12, 40, 90]], features=features)
    bus.publish("job", job_id=1, target_bar=5, bars=[5], sent_bars=[5], status="done", reason="", latency_ms=1.0, degraded=0, sampled_attrs={"max_polyphony": 2})
    attr = view.take_update()["attrs"][0]
    assert attr["realised"] == dict(zip(FEATURE_NAMES, features, strict=True))
    assert attr["requested"] == {"max_polyphony": 3} and attr["sampled"] == {"max_polyphony": 2}
    bus.publish("param", name="attr:*", value=None, once=False)
    bus.publish("generated", track_id=1, bar_index=6, meter=(4, 4), bar_ticks=48, notes=[], features=None)
    bus.publish("job", job_id=2, target_bar=6, bars=[6], sent_bars=[6], status="done", reason="", latency_ms=1.0, degraded=0, sampled_attrs=None)
    attr = view.take_update()["attrs"][0]
    assert attr["realised"] is None and attr["requested"] == {} and attr["sampled"] == {}


def test_the_log_is_bounded_and_a_batch_counts_what_it_leaves_out():
    view, bus = make_view(max_log=50)
    for i in range(LOG_PER_UPDATE + 30):
        bus.publish("osc", direction="in", peer="127.0.0.1:9000", address="/midigpt/note", args=(0, 60 + i % 10, 80, 0.0, 0.5, 1))
    bus.publish("local", address="/midigpt/param/set", args=("temperature", 9.0), error="temperature: must be in 0.1..5", code=4)
    update = view.take_update()
    assert len(update["log"]) == LOG_PER_UPDATE and update["dropped_log"] == 31
    assert update["log"][-1]["dir"] == "local" and update["log"][-1]["error"].startswith("temperature")
    assert len(view.snapshot({})["log"]) == 50


def test_errors_are_logged_and_mark_nothing_else():
    view, bus = make_view()
    bus.publish("error", code=4, message="/midigpt/note: pitch must be in 0..127", source="127.0.0.1:9000")
    line = view.take_update()["log"][0]
    assert line["address"] == "/midigpt/error" and line["args"][0] == 4


def test_a_new_session_resets_the_roll_and_asks_for_a_snapshot():
    view, bus = make_view()
    close_bar(bus, 0)
    bus.publish("note_in", track_id=0, bar_index=1, pitch=60, velocity=80, onset=0.0, duration=0.5, late=False)
    view.take_update()
    bus.publish("session", state="INITIALIZING", name="again", token=2)
    update = view.take_update()
    assert update["reset"] is True and view.snapshot({})["bars"] == [] and view.snapshot({})["notes"] == []
    assert view.session_dirty  # the emitter refreshes the session from the daemon


def test_demo_and_clock_events_pass_through():
    view, _ = make_view()
    view.on_demo("demo", {"running": True, "piece": "bach/bwv66.6", "bpm": 90.0, "meter": [4, 4], "bar": 3, "loop_bars": 9, "message": ""})
    view.on_demo("clock", {"bar": 3, "at": 1.0, "period_s": 2.0, "meter": [4, 4], "human": []})
    update = view.take_update()
    assert update["demo"]["piece"] == "bach/bwv66.6" and update["clock"][0]["bar"] == 3


def test_session_view_maps_the_state_json():
    state = {
        "state": "RUNNING", "name": "s", "playhead": 4, "seconds_per_quarter": 0.5,
        "tracks": [{"track_id": 0, "program": 0, "is_drum": False, "is_agent": False, "params": {"ignore": True}}],
        "attributes": {"max_polyphony": 2}, "engine": {"precision": "int8", "process": 123, "restarts": 0},
    }  # fmt: skip
    view = session_view(state, "ready")
    assert view["bar_period_s"] == 2.0 and view["tracks"][0]["ignore"] is True and view["engine"]["process"] == 123


@pytest.fixture(scope="module")
def engine():
    return InferenceEngine.random_init(TINY, seed=0, device="cpu")


def test_model_info_has_the_real_ranges_and_attribute_sizes(engine):
    info = model_info(engine, limits={"roll_bars": 32})
    params = {p["name"]: p for p in info["params"]}
    assert params["temperature"]["min"] == 0.1 and params["temperature"]["max"] == 5.0
    assert params["model_dim"]["choices"] == list(engine.encoder_config.num_bars_map)
    assert params["buffer_bars"]["structural"] and not params["temperature"]["structural"]
    levels = {a["name"]: a["levels"] for a in info["attributes"] if a["supported"]}
    assert levels["max_polyphony"] == 10 and levels["min_note_duration"] == 6
    assert not [a for a in info["attributes"] if a["name"].startswith("supports_")]  # flags are not attributes
    assert info["capabilities"] and info["limits"] == {"roll_bars": 32}
