"""The daemon over real UDP, driven from this process while ``sideman serve`` runs in a child.

Covers the session lifecycle, the error codes and triggers of the compatibility contract
(osc-protocol §15), framing of generated bars, and the reference defects sideman fixes (§16).
"""

import json
import math
import time

import pytest

from sideman.engine.score import Score

from .oscclient import OscTestClient

PIANO, BASS = 0, 1


def init(client, name="test"):
    client.clear()
    client.send("/midigpt/session/init", name)
    client.wait_for("/midigpt/session/ready")


def start(client, *, params=(), conditioning=((PIANO, 0, 10),), agent=(BASS, 32, 10)):
    init(client)
    for name, value in params:
        client.send("/midigpt/param/set", name, value)
    for track_id, program, track_type in conditioning:
        client.send("/midigpt/track/create", track_id, program, track_type, 0)
    client.send("/midigpt/track/create", agent[0], agent[1], agent[2], 1)
    client.send("/midigpt/session/start")
    client.wait_for("/midigpt/session/started")


def play_bar(client, bar, meter=(4, 4), notes=4, track=PIANO):
    for i in range(notes):
        client.send("/midigpt/note", track, 60 + i, 80, i / notes, 1 / notes, bar)
    client.send("/midigpt/bar/end", bar, *meter)


def job_reports(client):
    return [json.loads(args[0]) for args in client.messages("/midigpt/job")]


# ---- lifecycle ------------------------------------------------------------------------------

def test_init_sends_capabilities_then_ready(client):
    init(client)
    addresses = client.addresses()
    assert addresses.index("/midigpt/capabilities") < addresses.index("/midigpt/session/ready")
    caps = json.loads(client.messages("/midigpt/capabilities")[0][0])
    assert caps["supports_token_mask"] is False and caps["note_density"] is True


def test_start_stop_and_state_query(client):
    start(client)
    assert client.state()["state"] == "RUNNING"
    client.send("/midigpt/session/stop")
    client.wait_for("/midigpt/session/stopped")
    assert client.state()["state"] == "STOPPED"


def test_reinit_returns_to_initializing(client):
    start(client)
    init(client)
    state = client.state()
    assert state["state"] == "INITIALIZING" and state["tracks"] == []


def test_ping_answers_pong_with_the_token(client):
    assert client.request("/midigpt/ping", "/midigpt/pong", 42) == (42,)


# ---- error codes of the compatibility contract ----------------------------------------------

def test_start_without_agent_is_error_6(client):
    init(client)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    assert client.error_after("/midigpt/session/start")[0] == 6


def test_start_without_conditioning_track_is_error_1(client):
    init(client)
    client.send("/midigpt/track/create", BASS, 32, 10, 1)
    code, message = client.error_after("/midigpt/session/start")
    assert code == 1 and "conditioning" in message


def test_duplicate_track_is_error_3(client):
    init(client)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    assert client.error_after("/midigpt/track/create", PIANO, 0, 10, 0)[0] == 3


def test_note_in_initializing_is_error_1(client):
    init(client)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    code, message = client.error_after("/midigpt/note", PIANO, 60, 80, 0.0, 0.5, 0)
    assert code == 1 and "INITIALIZING" in message


def test_note_to_the_agent_is_error_8(client):
    start(client)
    assert client.error_after("/midigpt/note", BASS, 40, 80, 0.0, 0.5, 0)[0] == 8


def test_buffer_below_minimum_is_error_4(client):
    init(client)
    assert client.error_after("/midigpt/param/set", "buffer_bars", 1)[0] == 4


def test_second_agent_is_error_7(client):
    init(client)
    client.send("/midigpt/track/create", 0, 0, 10, 1)
    assert client.error_after("/midigpt/track/create", 1, 0, 10, 1)[0] == 7


def test_unknown_param_is_error_4_and_valid_params_are_silent(client):
    init(client)
    code, message = client.error_after("/midigpt/param/set", "nonexistent_param", 42)
    assert code == 4 and "nonexistent_param" in message
    client.clear()
    client.send("/midigpt/param/set", "temperature", 1.5)
    client.send("/midigpt/param/reset", "temperature")
    client.send("/midigpt/param/reset_all")
    assert client.state()["params"]["temperature"] == 1.0
    assert client.errors() == []


def test_unknown_track_is_error_2(client):
    start(client)
    assert client.error_after("/midigpt/note", 99, 60, 80, 0.0, 0.5, 0)[0] == 2
    assert client.error_after("/midigpt/track/remove", 99)[0] == 2


def test_agent_cannot_be_removed_error_1(client):
    init(client)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    client.send("/midigpt/track/create", BASS, 32, 10, 1)
    assert client.error_after("/midigpt/track/remove", BASS)[0] == 1


def test_generation_failure_is_never_silent_error_5_or_job_report(client):
    """Every job ends in a /midigpt/job report whatever happens (D33)."""
    start(client, params=[("buffer_bars", 2)])
    for bar in range(3):
        play_bar(client, bar)
        time.sleep(0.05)
    report = client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)
    assert json.loads(report[0])["status"] in ("done", "late", "cancelled", "failed", "dropped")


# ---- input validation fixes -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((PIANO, 60, 80, math.nan, 0.25, 0), "onset"),
        ((PIANO, 60, 80, 0.0, math.inf, 0), "duration"),
        ((PIANO, 60.5, 80, 0.0, 0.25, 0), "pitch"),
        ((PIANO, "sixty", 80, 0.0, 0.25, 0), "pitch"),
        ((PIANO, 60, 80, 0.0, 0.25, -1), "bar_index"),
        ((PIANO, 128, 80, 0.0, 0.25, 0), "pitch"),
        ((PIANO, 60, 80, 1.0, 0.25, 0), "onset"),
        ((PIANO, 60, 80, 0.0), "duration"),
    ],
)
def test_bad_note_is_error_4_naming_the_argument_and_keeps_valid_notes(client, args, named):
    start(client)
    client.send("/midigpt/note", PIANO, 64, 90, 0.5, 0.25, 0)
    code, message = client.error_after("/midigpt/note", *args)
    assert code == 4 and named in message
    client.send("/midigpt/bar/end", 0, 4, 4)
    assert client.state()["bars"]["0"]["notes"][str(PIANO)] == 1


@pytest.mark.parametrize("meter", [(5, 0), (4, 3), (19, 16)])
def test_bad_time_signature_is_error_4_and_records_nothing(client, meter):
    start(client)
    code, _ = client.error_after("/midigpt/bar/end", 0, *meter)
    assert code == 4
    assert client.state()["playhead"] == 0


def test_wildcard_addresses_are_refused_not_fanned_out(client):
    start(client)
    code, message = client.error_after("/midigpt/session/*")
    assert code == 4 and "wildcard" in message
    assert client.state()["state"] == "RUNNING"


def test_unknown_address_gets_an_error_and_is_counted(client):
    init(client)
    code, message = client.error_after("/midigpt/no/such/thing", 1)
    assert code == 4 and "/midigpt/no/such/thing" in message
    assert client.state()["wire"]["unknown_addresses"] >= 1


def test_garbage_datagram_gets_an_error(client):
    init(client)
    client.clear()
    client.send_raw(b"\x00garbage that is not OSC")
    assert client.wait_for("/midigpt/error")[0] == 4


def test_future_bundle_is_scheduled_not_slept_on(client):
    from pythonosc.osc_bundle_builder import OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    init(client)
    bundle = OscBundleBuilder(time.time() + 1.0)
    ping = OscMessageBuilder("/midigpt/ping")
    ping.add_arg(99)
    bundle.add_content(ping.build())
    sent = time.monotonic()
    client.send_raw(bundle.build().dgram)
    client.request("/midigpt/ping", "/midigpt/pong", 1)
    answered = time.monotonic()
    client.wait_for("/midigpt/pong", lambda a: a == (99,), timeout=5)
    assert answered - sent < 0.9  # the loop kept answering while the bundle waited for its time
    assert time.monotonic() - sent >= 0.9  # and the bundle ran at its timetag, not at once


# ---- the rolling score: idempotent bars, late notes, windows ---------------------------------

def test_duplicate_bar_end_does_not_retrigger_or_wipe(client):
    start(client, params=[("buffer_bars", 2)])
    play_bar(client, 0)
    play_bar(client, 1)
    client.send("/midigpt/bar/end", 1, 4, 4)  # a repeat
    client.send("/midigpt/bar/end", 0, 4, 4)  # an old index
    state = client.state()
    assert state["playhead"] == 2 and state["bars"]["1"]["notes"][str(PIANO)] == 4
    client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)
    time.sleep(0.3)
    queued = [r for r in job_reports(client) if r["status"] == "queued"]
    assert [r["target_bar"] for r in queued] == [2, 3]  # one per rising playhead (p + k), no repeats


def test_late_note_within_grace_is_merged_into_its_bar(client):
    start(client)
    play_bar(client, 0, notes=2)
    client.send("/midigpt/note", PIANO, 72, 80, 0.75, 0.25, 0)  # after /bar/end 0
    assert client.state()["bars"]["0"]["notes"][str(PIANO)] == 3


def test_session_starting_at_bar_100_is_rebased(client):
    start(client)
    play_bar(client, 100)
    state = client.state()
    assert state["origin"] == 100 and state["playhead"] == 101


def test_huge_bar_index_is_refused(client):
    start(client)
    play_bar(client, 0)
    code, message = client.error_after("/midigpt/bar/end", 2_000_000_000, 4, 4)
    assert code == 4 and "bar_index" in message
    assert client.state()["playhead"] == 1


# ---- generation end to end ----------------------------------------------------------------

def frames_by_bar(client):
    """{bar: (count announced in open, notes received between open and close)} for the agent."""
    frames, current = {}, None
    with client._condition:
        received = list(client.received)
    for address, args, _ in received:
        if address == "/midigpt/generated/open":
            current = args[1]
            frames[current] = [args[2], 0, False]
        elif address == "/midigpt/generated/note" and current is not None:
            assert args[1] == current
            frames[current][1] += 1
        elif address == "/midigpt/generated/close":
            assert args[1] == current
            frames[current][2] = True
            current = None
    return frames


def test_a_32_bar_session_with_mixed_meters_frames_every_bar(client):
    meters = [(4, 4), (4, 4), (3, 4), (3, 4), (6, 8), (6, 8), (7, 8), (5, 4)] * 4
    start(client, params=[("buffer_bars", 2)])
    client.send("/midigpt/tempo", 240.0)
    for bar, meter in enumerate(meters):
        play_bar(client, bar, meter=meter)
        time.sleep(0.25)
    client.send("/midigpt/bar/end", len(meters), 4, 4)
    time.sleep(0.5)
    frames = frames_by_bar(client)
    reports = [r for r in job_reports(client) if r["status"] != "queued"]
    done = [b for r in reports if r["status"] == "done" for b in r["sent_bars"]]
    assert done, reports
    for bar in done:
        announced, received, closed = frames[bar]
        assert closed and announced == received
    for args in client.messages("/midigpt/generated/note"):
        assert args[0] == BASS and 0 <= args[4] < 1 and 0 < args[5] <= 1
    assert not [e for e in client.errors() if e[0] != 5]


def test_stale_output_never_follows_a_reinit(client):
    start(client, params=[("buffer_bars", 2)])
    play_bar(client, 0)
    play_bar(client, 1)  # triggers a job for bar 2
    client.request("/midigpt/session/init", "/midigpt/session/ready", "again")
    addresses = client.addresses()
    ready_at = len(addresses) - addresses[::-1].index("/midigpt/session/ready")
    time.sleep(1.0)
    after = client.addresses()[ready_at:]
    assert "/midigpt/generated/open" not in after


def test_stop_cancels_and_nothing_generated_follows(client):
    start(client, params=[("buffer_bars", 2)])
    play_bar(client, 0)
    play_bar(client, 1)
    client.send("/midigpt/session/stop")
    client.wait_for("/midigpt/session/stopped")
    stopped_at = client.addresses().index("/midigpt/session/stopped")
    time.sleep(1.0)
    assert not [a for a in client.addresses()[stopped_at:] if a.startswith("/midigpt/generated/")]


def test_removing_a_track_mid_session_keeps_generating_for_the_agent(client):
    start(client, params=[("buffer_bars", 2)], conditioning=((PIANO, 0, 10), (5, 48, 10)))
    play_bar(client, 0)
    play_bar(client, 1)
    client.send("/midigpt/track/remove", 5)
    report = json.loads(client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)[0])
    assert report["status"] in ("done", "late", "cancelled", "dropped")
    for args in client.messages("/midigpt/generated/open"):
        assert args[0] == BASS


def test_a_stray_sender_does_not_hijack_the_reply_stream(client, daemon):
    start(client, params=[("buffer_bars", 2)])
    stray = OscTestClient(daemon.address)
    try:
        stray.send("/midigpt/param/set", "temperature", 1.2)
        stray.request("/midigpt/ping", "/midigpt/pong", 7)
        play_bar(client, 0)
        play_bar(client, 1)
        client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)
        assert not [a for a in stray.addresses() if a.startswith("/midigpt/generated/") or a == "/midigpt/job"]
    finally:
        stray.close()


def test_subscribers_receive_the_output_too(client, daemon):
    listener = OscTestClient(daemon.address)
    try:
        start(client, params=[("buffer_bars", 2)])
        client.request("/midigpt/subscribe", "/midigpt/subscribed", "127.0.0.1", listener.address[1])
        play_bar(client, 0)
        play_bar(client, 1)
        listener.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)
        client.send("/midigpt/unsubscribe", "127.0.0.1", listener.address[1])
    finally:
        listener.close()


def test_save_writes_every_note_sent(client, daemon):
    start(client, params=[("buffer_bars", 2)])
    client.send("/midigpt/tempo", 240.0)
    for bar in range(6):
        play_bar(client, bar, notes=3)
        time.sleep(0.3)
    client.send("/midigpt/bar/end", 6, 4, 4)
    time.sleep(0.3)  # replies are not queued behind paced note bursts: let those arrive first
    path, count = client.request("/midigpt/session/save", "/midigpt/session/saved", "session.mid")
    generated = len(client.messages("/midigpt/generated/note"))
    assert count == 6 * 3 + generated
    score = Score.from_midi(path)
    assert len(score.notes) == count


def test_save_outside_the_save_directory_is_refused(client):
    start(client)
    code, message = client.error_after("/midigpt/session/save", "../../etc/evil.mid")
    assert code == 4 and "outside" in message


def test_a_job_past_its_deadline_is_error_5_and_the_worker_goes_on(client):
    """gen_timeout overrides the deadline: 1 ms cancels the job between tokens (error 5, job
    report), and once it is reset the next bars are generated again (D4, D36)."""
    start(client, params=[("buffer_bars", 2), ("gen_timeout", 0.001)])
    play_bar(client, 0)
    play_bar(client, 1)
    report = json.loads(client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)[0])
    assert report["status"] in ("cancelled", "dropped")
    if report["status"] == "cancelled":
        assert any(code == 5 for code, _ in client.errors())
    client.send("/midigpt/param/reset", "gen_timeout")
    client.send("/midigpt/tempo", 30.0)  # 8 s bars: a deadline no job misses
    time.sleep(0.2)
    client.clear()
    play_bar(client, 2)
    done = client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] == "done", timeout=30)
    assert json.loads(done[0])["target_bar"] == 4  # playhead 3 + lookahead 1


def test_two_agents_are_generated_together_when_allowed(client):
    init(client)
    client.send("/midigpt/param/set", "max_agents", 2)
    client.send("/midigpt/param/set", "buffer_bars", 2)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    client.send("/midigpt/track/create", BASS, 32, 10, 1)
    client.send("/midigpt/track/create", 9, 0, 11, 1)  # a drum agent
    client.send("/midigpt/tempo", 30.0)
    client.send("/midigpt/session/start")
    client.wait_for("/midigpt/session/started")
    play_bar(client, 0)  # the job for bar 2 runs while bar 1 "plays" (8 s at 30 BPM)
    report = json.loads(client.wait_for("/midigpt/job", lambda a: json.loads(a[0])["status"] != "queued", timeout=30)[0])
    assert report["status"] == "done" and report["sent_bars"] == [2], report
    opened = {args[0] for args in client.messages("/midigpt/generated/open")}
    assert opened == {BASS, 9}
    assert client.errors() == []
