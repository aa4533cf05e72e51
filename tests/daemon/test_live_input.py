"""Live input, loops, session load and per-bar attributes over real UDP (osc-protocol §16 D59-D62).

``/midigpt/note/on`` + ``/midigpt/note/off`` pair into notes of the note-on's bar; ``/midigpt/loop``
turns a conditioning track's future bars into context; ``/midigpt/session/load`` reads back what
``/midigpt/session/save`` wrote; ``/midigpt/attr/set_bar`` is refused where the vocabulary has no
bar-level attributes (yellow).
"""

import json

from sideman.engine.score import Score

from .oscclient import OscTestClient

PIANO, BASS = 0, 1


def init(client: OscTestClient, name: str = "live") -> None:
    client.clear()
    client.send("/midigpt/session/init", name)
    client.wait_for("/midigpt/session/ready")


def start(client: OscTestClient, params=()) -> None:
    init(client)
    for name, value in params:
        client.send("/midigpt/param/set", name, value)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    client.send("/midigpt/track/create", BASS, 32, 10, 1)
    client.send("/midigpt/session/start")
    client.wait_for("/midigpt/session/started")


def play_bar(client: OscTestClient, bar: int, notes: int = 2) -> None:
    for i in range(notes):
        client.send("/midigpt/note", PIANO, 60 + i, 80, i / notes, 1 / notes, bar)
    client.send("/midigpt/bar/end", bar, 4, 4)


def bar_state(client: OscTestClient, bar: int) -> dict:
    return client.state()["bars"][str(bar)]


def saved_notes(path: str, track_name: str) -> list[tuple[int, int, int, int]]:
    """(bar, onset, duration, pitch) of one track of a saved file."""
    score = Score.from_midi(path)
    index = [t.name for t in score.track_info].index(track_name)
    n = score.notes
    keep = n.track == index
    return sorted(zip(n.bar[keep].tolist(), n.onset[keep].tolist(), n.duration[keep].tolist(), n.pitch[keep].tolist(), strict=True))


# ---- note-on / note-off (D59) ---------------------------------------------------------------


def test_note_on_and_off_make_one_note_of_their_bar(client):
    start(client)
    client.send("/midigpt/note/on", PIANO, 60, 90, 0.25, 0)
    client.send("/midigpt/note/off", PIANO, 60, 0.75, 0)
    client.send("/midigpt/bar/end", 0, 4, 4)
    state = client.state()
    assert state["bars"]["0"]["notes"][str(PIANO)] == 1
    assert state["live_input"]["released_notes"] == 1 and state["live_input"]["held_notes"] == 0


def test_held_note_crosses_the_barline_as_one_continuing_note(client):
    start(client)
    client.send("/midigpt/note/on", PIANO, 48, 90, 0.5, 0)
    client.send("/midigpt/bar/end", 0, 4, 4)
    state = client.state()
    assert state["bars"]["0"]["continuing"] == {str(PIANO): 1}
    assert state["live_input"]["held_notes"] == 1
    client.send("/midigpt/bar/end", 1, 3, 4)
    assert bar_state(client, 0)["continuing"] == {str(PIANO): 1}  # still held through bar 1
    client.send("/midigpt/note/off", PIANO, 48, 0.5, 1)  # a release just after the barline
    state = client.state()
    assert state["bars"]["0"]["continuing"] == {} and state["bars"]["1"]["notes"][str(PIANO)] == 0
    path, _ = client.request("/midigpt/session/save", "/midigpt/session/saved", "held.mid")
    assert saved_notes(path, f"track {PIANO}") == [(0, 24, 24 + 18, 48)]  # 1/2 of 4/4 + 1/2 of 3/4


def test_repeated_pitch_is_released_first_in_first_out(client):
    start(client)
    client.send("/midigpt/note/on", PIANO, 60, 100, 0.0, 0)
    client.send("/midigpt/note/on", PIANO, 60, 100, 0.5, 0)
    client.send("/midigpt/note/off", PIANO, 60, 0.25, 0)
    client.send("/midigpt/note/off", PIANO, 60, 1.0, 0)
    client.send("/midigpt/bar/end", 0, 4, 4)
    path, count = client.request("/midigpt/session/save", "/midigpt/session/saved", "fifo.mid")
    assert saved_notes(path, f"track {PIANO}") == [(0, 0, 12, 60), (0, 24, 24, 60)]


def test_unmatched_note_off_is_error_4_naming_the_pitch(client):
    start(client)
    code, message = client.error_after("/midigpt/note/off", PIANO, 61, 0.5, 0)
    assert code == 4 and "pitch 61" in message


def test_note_on_with_velocity_0_points_to_note_off(client):
    start(client)
    code, message = client.error_after("/midigpt/note/on", PIANO, 60, 0, 0.0, 0)
    assert code == 4 and "/midigpt/note/off" in message


def test_note_on_for_the_agent_is_error_8_and_unknown_track_error_2(client):
    start(client)
    assert client.error_after("/midigpt/note/on", BASS, 40, 80, 0.0, 0)[0] == 8
    assert client.error_after("/midigpt/note/on", 77, 40, 80, 0.0, 0)[0] == 2


def test_note_on_in_initializing_is_error_1(client):
    init(client)
    client.send("/midigpt/track/create", PIANO, 0, 10, 0)
    assert client.error_after("/midigpt/note/on", PIANO, 60, 80, 0.0, 0)[0] == 1


def test_a_note_on_never_released_expires_and_is_counted(client):
    start(client)
    client.send("/midigpt/note/on", PIANO, 40, 90, 0.0, 0)
    hold = client.state()["live_input"]["max_hold_bars"]
    for bar in range(hold + 3):
        client.send("/midigpt/bar/end", bar, 4, 4)
    live = client.state()["live_input"]
    assert live["expired_held_notes"] == 1 and live["held_notes"] == 0
    code, message = client.error_after("/midigpt/note/off", PIANO, 40, 0.5, hold + 3)
    assert code == 4 and "pitch 40" in message


# ---- loops (D60) ----------------------------------------------------------------------------


def prompt_for(client: OscTestClient, target_bar: int) -> dict:
    """The /midigpt/prompt/state of the job for ``target_bar``."""
    args = client.wait_for(
        "/midigpt/prompt/state", lambda a: json.loads(a[0])["target_bar"] == target_bar, timeout=30
    )
    return json.loads(args[0])


def test_loop_makes_the_tracks_future_bars_context(client):
    start(client, params=[("buffer_bars", 2)])
    client.send("/midigpt/tempo", 30.0)  # 8 s bars: every job starts before its deadline
    play_bar(client, 0)
    play_bar(client, 1)
    unlooped = prompt_for(client, 3)  # window [0, 4), playhead 2
    assert unlooped["tracks"][0]["states"][2:] == ["A", "A"]  # the future is masked without a loop
    client.send("/midigpt/loop", PIANO, 0, 2)
    assert client.state()["score"]["loops"] == {str(PIANO): [0, 2]}
    play_bar(client, 2)
    looped = prompt_for(client, 4)  # window [1, 5): bars 3 and 4 repeat bars 1 and 0
    assert looped["tracks"][0]["states"] == ["C", "C", "C", "C"]


def test_loop_clear_masks_the_future_again(client):
    start(client, params=[("buffer_bars", 2)])
    client.send("/midigpt/tempo", 30.0)
    play_bar(client, 0)
    client.send("/midigpt/loop", PIANO, 0, 1)
    client.send("/midigpt/loop/clear", PIANO)
    assert client.state()["score"]["loops"] == {}
    play_bar(client, 1)
    assert prompt_for(client, 3)["tracks"][0]["states"][2:] == ["A", "A"]


def test_bad_loops_are_refused(client):
    start(client)
    assert client.error_after("/midigpt/loop", BASS, 0, 2)[0] == 4  # the agent does not loop
    assert client.error_after("/midigpt/loop", PIANO, 4, 4)[0] == 4
    assert client.error_after("/midigpt/loop", 77, 0, 2)[0] == 2


# ---- session load (D55, D62) ----------------------------------------------------------------


def test_a_saved_session_loads_back_and_plays_on_from_the_next_bar(client):
    init(client)
    client.send("/midigpt/param/set", "buffer_bars", 2)
    client.send("/midigpt/tempo", 30.0)  # 8 s bars: no job misses its deadline
    client.send("/midigpt/track/create", 3, 33, 10, 0)
    client.send("/midigpt/track/create", 9, 0, 11, 0)  # a drum track that stays silent
    client.send("/midigpt/track/create", 5, 32, 10, 1)
    client.send("/midigpt/session/start")
    client.wait_for("/midigpt/session/started")
    for bar in range(3):
        client.send("/midigpt/note", 3, 60, 90, 0.0, 0.5, bar)
        client.send("/midigpt/note", 3, 64, 90, 0.5, 0.25, bar)
        client.send("/midigpt/bar/end", bar, 4, 4)
    client.send("/midigpt/bar/end", 3, 3, 4)
    path, saved = client.request("/midigpt/session/save", "/midigpt/session/saved", "reload.mid")

    init(client, "reloaded")
    loaded_path, bars, notes = client.request("/midigpt/session/load", "/midigpt/session/loaded", "reload.mid")
    assert loaded_path == path and notes == saved and bars >= 4
    state = client.state()
    tracks = {t["track_id"]: (t["program"], t["is_drum"], t["is_agent"]) for t in state["tracks"]}
    assert tracks == {3: (33, False, False), 9: (0, True, False), 5: (32, False, True)}
    assert state["state"] == "INITIALIZING" and (state["origin"], state["playhead"]) == (0, bars)
    assert state["bars"]["3"]["meter"] == [3, 4] and state["bars"]["0"]["notes"]["3"] == 2

    client.send("/midigpt/session/start")
    client.wait_for("/midigpt/session/started")
    client.send("/midigpt/bar/end", bars, 4, 4)  # play continues at the next bar
    target = bars + 2  # playhead bars + 1, lookahead 1

    def outcome(args):
        report = json.loads(args[0])
        return report["target_bar"] == target and report["status"] != "queued"

    assert json.loads(client.wait_for("/midigpt/job", outcome, timeout=30)[0])["status"] == "done"


def test_load_is_refused_while_running_and_outside_the_save_directory(client):
    start(client)
    assert client.error_after("/midigpt/session/load", "reload.mid")[0] == 1
    init(client)
    code, message = client.error_after("/midigpt/session/load", "../../etc/evil.mid")
    assert code == 4 and "outside" in message and "/midigpt/session/load" in message


def test_loading_a_missing_or_foreign_file_is_error_4(client, daemon):
    init(client)
    code, message = client.error_after("/midigpt/session/load", "missing.mid")
    assert code == 4 and "missing.mid" in message
    (daemon.save_dir / "foreign.mid").write_bytes(b"MThd not really")
    assert client.error_after("/midigpt/session/load", "foreign.mid")[0] == 4
    assert client.state()["state"] == "INITIALIZING"


# ---- per-bar attributes (D61) ---------------------------------------------------------------


def test_per_bar_attribute_is_refused_by_a_vocabulary_without_them(client):
    start(client)
    code, message = client.error_after("/midigpt/attr/set_bar", 8, "note_density", 5)
    assert code == 4 and "no bar-level attribute" in message and "yellow" in message
    assert client.state()["bar_attributes"] == {"names": [], "bars": {}}
