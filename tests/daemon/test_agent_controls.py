"""Output control, heartbeats, meter lookahead and adaptation over real UDP (osc-protocol §16 D35,
D50, D56, D58), against a ``sideman serve`` child process."""

import json
import time

import pytest

from .oscclient import OscTestClient
from .test_osc_session import BASS, PIANO, init, job_reports, play_bar, start


def finished(args):
    return json.loads(args[0])["status"] != "queued"


def first_finished(client, timeout=30):
    return json.loads(client.wait_for("/midigpt/job", finished, timeout=timeout)[0])


def generated_bars(client):
    return [args[1] for args in client.messages("/midigpt/generated/open")]


def sync(client):
    """Everything the daemon sent for earlier messages has arrived once the pong is here."""
    client.request("/midigpt/ping", "/midigpt/pong", "sync")


def start_slow(client, params=()):
    """A running session with buffer 2 at 30 BPM: 8 s bars, a deadline no job misses."""
    start(client, params=[("buffer_bars", 2), *params])
    client.send("/midigpt/tempo", 30.0)


def finished_for(client, bar, timeout=30):
    args = client.wait_for("/midigpt/job", lambda a: finished(a) and json.loads(a[0])["target_bar"] == bar, timeout=timeout)
    return json.loads(args[0])


# ---- /midigpt/agent/cancel ---------------------------------------------------------------------

def test_cancel_ends_the_job_in_flight_as_cancelled_without_error_5(client):
    # Uncapped, the random model writes ~2,000 tokens a bar: the job is still running when asked.
    start_slow(client, params=[("density_hard_limit", 0), ("polyphony_hard_limit", 0)])
    play_bar(client, 0)
    client.wait_for("/midigpt/status", lambda a: a == ("generating",))
    client.send("/midigpt/agent/cancel")
    report = first_finished(client)
    assert report["status"] == "cancelled" and "/midigpt/agent/cancel" in report["reason"]
    sync(client)
    assert not [e for e in client.errors() if e[0] == 5]
    assert 2 not in generated_bars(client)


def test_cancel_with_nothing_running_is_harmless(client):
    init(client)
    client.send("/midigpt/agent/cancel")
    sync(client)
    assert client.errors() == []


# ---- /midigpt/agent/regenerate -----------------------------------------------------------------

def test_regenerate_sends_a_generated_bar_again(client):
    start_slow(client)
    play_bar(client, 0)  # the job for bar 2
    first = first_finished(client)
    assert first["status"] == "done" and first["sent_bars"] == [2]
    client.clear()
    client.send("/midigpt/agent/regenerate", 2)
    again = first_finished(client)
    assert again["status"] == "done" and again["target_bar"] == 2 and again["sent_bars"] == [2]
    assert again["job_id"] != first["job_id"]
    assert generated_bars(client) == [2]
    assert client.errors() == []


@pytest.mark.parametrize("bar", [0, 1])
def test_regenerate_a_bar_that_has_started_is_error_4(client, bar):
    start_slow(client)
    play_bar(client, 0)  # playhead 1: bar 1 is playing
    code, message = client.error_after("/midigpt/agent/regenerate", bar)
    assert code == 4 and "playhead 1" in message


def test_regenerate_before_start_is_error_1(client):
    init(client)
    assert client.error_after("/midigpt/agent/regenerate", 3)[0] == 1


# ---- /midigpt/agent/freeze ---------------------------------------------------------------------

def test_freeze_stops_new_jobs_and_unfreeze_resumes(client):
    start_slow(client)
    client.send("/midigpt/agent/freeze", 1)
    assert client.state()["frozen"] is True
    play_bar(client, 0)
    play_bar(client, 1)
    sync(client)
    assert job_reports(client) == []
    client.send("/midigpt/agent/freeze", 0)
    play_bar(client, 2)
    report = first_finished(client)
    assert report["target_bar"] == 4 and report["status"] == "done"
    assert client.state()["frozen"] is False


def test_freeze_takes_only_0_or_1(client):
    init(client)
    code, message = client.error_after("/midigpt/agent/freeze", 2)
    assert code == 4 and "'on'" in message


# ---- /midigpt/agent/mute -----------------------------------------------------------------------

def test_mute_keeps_generating_into_the_history_but_sends_nothing(client):
    start_slow(client)
    client.send("/midigpt/agent/mute", 1)
    play_bar(client, 0)
    report = first_finished(client)
    assert report["status"] == "done" and report["muted"] is True and report["sent_bars"] == []
    assert "muted" in report["reason"]
    state = client.state()
    assert state["muted"] is True
    assert not [a for a in client.addresses() if a.startswith("/midigpt/generated/")]
    play_bar(client, 1)
    play_bar(client, 2)
    assert BASS in client.state()["bars"]["2"]["generated"]  # the agent's history has bar 2
    finished_for(client, 4)  # delivered while muted
    client.send("/midigpt/agent/mute", 0)
    play_bar(client, 3)
    unmuted = finished_for(client, 5)
    assert unmuted["sent_bars"] == [5] and "muted" not in unmuted
    assert generated_bars(client) == [5]


def test_reinit_clears_freeze_and_mute(client):
    init(client)
    client.send("/midigpt/agent/freeze", 1)
    client.send("/midigpt/agent/mute", 1)
    init(client)
    state = client.state()
    assert state["frozen"] is False and state["muted"] is False


# ---- /midigpt/agent/played ---------------------------------------------------------------------

def test_played_replaces_the_agent_bar_in_the_history(client):
    start(client)
    play_bar(client, 0)
    play_bar(client, 1)
    played = [[40, 90, 0.0, 0.5], [43, 80, 0.5, 0.5], [47, 70, 0.75, 0.25]]
    client.send("/midigpt/agent/played", BASS, 1, json.dumps(played))
    state = client.state()
    assert client.errors() == []
    assert state["bars"]["1"]["notes"][str(BASS)] == 3 and BASS in state["bars"]["1"]["generated"]
    client.send("/midigpt/agent/played", BASS, 1, "[]")  # the client left the bar silent
    assert client.state()["bars"]["1"]["notes"][str(BASS)] == 0


@pytest.mark.parametrize(
    ("notes", "named"),
    [
        ("[[40, 90, 0.0", "not valid JSON"),
        ('{"pitch": 40}', "JSON list"),
        ("[[40, 90, 0.0]]", "note 0"),
        ("[[40, 90, 0.0, 0.5], [200, 90, 0.0, 0.5]]", "note 1: 'pitch'"),
        ("[[40, 0, 0.0, 0.5]]", "'velocity'"),
        ("[[40, 90, 1.5, 0.5]]", "'onset'"),
        ("[[40, 90, 0.0, -1]]", "'duration'"),
    ],
)
def test_bad_played_notes_are_error_4_naming_the_field(client, notes, named):
    start(client)
    play_bar(client, 0)
    code, message = client.error_after("/midigpt/agent/played", BASS, 0, notes)
    assert code == 4 and named in message and message.startswith("/midigpt/agent/played")
    assert client.state()["bars"]["0"]["notes"][str(BASS)] == 0


def test_played_for_a_conditioning_track_is_error_4_and_unknown_track_error_2(client):
    start(client)
    play_bar(client, 0)
    code, message = client.error_after("/midigpt/agent/played", PIANO, 0, "[]")
    assert code == 4 and "conditioning" in message
    assert client.error_after("/midigpt/agent/played", 42, 0, "[]")[0] == 2


def test_played_before_start_is_error_1(client):
    init(client)
    client.send("/midigpt/track/create", BASS, 32, 10, 1)
    assert client.error_after("/midigpt/agent/played", BASS, 0, "[]")[0] == 1


# ---- /midigpt/meter ----------------------------------------------------------------------------

def test_an_announced_meter_is_used_for_the_upcoming_bar(client):
    start_slow(client)
    client.send("/midigpt/meter", 2, 3, 4)
    play_bar(client, 0)
    assert client.state()["meters_ahead"]["2"] == [3, 4]
    report = first_finished(client)
    assert report["status"] == "done" and report["sent_bars"] == [2]
    for args in client.messages("/midigpt/generated/note"):
        assert 0 <= args[4] < 1 and 0 < args[5] <= 1
    play_bar(client, 1)
    play_bar(client, 2, meter=(3, 4))
    assert client.state()["bars"]["2"]["meter"] == [3, 4]
    assert client.errors() == []


@pytest.mark.parametrize(("meter", "named"), [((19, 16), "19/16"), ((4, 3), "4/3")])
def test_a_meter_outside_the_vocabulary_is_error_4(client, meter, named):
    start(client)
    code, message = client.error_after("/midigpt/meter", 4, *meter)
    assert code == 4 and named in message


def test_a_meter_for_a_bar_that_has_ended_is_error_4(client):
    start(client)
    play_bar(client, 0)
    play_bar(client, 1)
    code, message = client.error_after("/midigpt/meter", 1, 3, 4)
    assert code == 4 and "bar_index 1" in message


# ---- heartbeats ----------------------------------------------------------------------------------

def test_heartbeats_reach_every_subscriber_and_stop_at_0(client, daemon):
    listener = OscTestClient(daemon.address)
    try:
        start(client)
        client.request("/midigpt/subscribe", "/midigpt/subscribed", "127.0.0.1", listener.address[1])
        client.send("/midigpt/param/set", "heartbeat_s", 0.2)
        beat = json.loads(client.wait_for("/midigpt/heartbeat")[0])
        assert beat["state"] == "RUNNING" and beat["playhead"] == 0
        assert beat["busy"] is False and "last_job" in beat and "seq" in beat
        listener.wait_for("/midigpt/heartbeat")
        client.send("/midigpt/param/set", "heartbeat_s", 0)
        sync(client)
        time.sleep(0.3)  # a beat already on its way may still land
        client.clear()
        time.sleep(0.6)
        assert "/midigpt/heartbeat" not in client.addresses()
        client.send("/midigpt/unsubscribe", "127.0.0.1", listener.address[1])
    finally:
        listener.close()


@pytest.mark.parametrize("value", [0.05, 61, -1])
def test_heartbeat_interval_outside_0_or_a_tenth_to_60_is_error_4(client, value):
    init(client)
    code, message = client.error_after("/midigpt/param/set", "heartbeat_s", value)
    assert code == 4 and "heartbeat_s" in message


# ---- adaptation ------------------------------------------------------------------------------------

def test_every_job_report_and_the_state_carry_the_degradation_level(client):
    start_slow(client)
    play_bar(client, 0)
    report = first_finished(client)
    queued = [r for r in job_reports(client) if r["status"] == "queued"]
    assert queued[0]["degraded"] == 0 and report["degraded"] == 0
    assert client.state()["degraded"] == 0


def test_a_job_over_budget_degrades_the_next_one(client):
    """gen_timeout 1 ms: the job is cancelled at its deadline, so the next runs degraded."""
    start_slow(client, params=[("gen_timeout", 0.001)])
    play_bar(client, 0)
    first = first_finished(client)
    assert first["status"] in ("cancelled", "dropped") and first["degraded"] == 0
    assert client.state()["degraded"] == 1
    client.send("/midigpt/param/reset", "gen_timeout")
    play_bar(client, 1)
    second = finished_for(client, 3)
    assert second["degraded"] == 1
