"""The stateless HTTP API through Flask's test client, against a tiny random-init engine."""

from __future__ import annotations

import copy
import io
import json
import threading
import time
from dataclasses import fields

import pytest
from flask import Flask

from sideman.daemon.params import capabilities
from sideman.engine.demo import demo_score
from sideman.engine.inference import GenerationFailed, InferenceEngine
from sideman.engine.model import ModelConfig
from sideman.engine.request import InferenceConfig
from sideman.engine.score import Score
from sideman.web_monitor.http_api import MAX_BODY_BYTES, create_http_api
from sideman.web_monitor.score_json import ScoreJsonError, score_from_json, score_to_json

TINY = ModelConfig(vocab_size=647, n_positions=1024, n_embd=64, n_layer=2, n_head=4)
# A random model writes up to ~2,000 tokens a bar unless capped; these keep a request well under a second.
FAST_CONFIG = {"seed": 0, "model_dim": 4, "density_hard_limit": 8, "polyphony_hard_limit": 2}
RESOLUTION = 480
BAR_TICKS = 4 * RESOLUTION  # 4/4
FAST_QUERY = "&".join(f"{key}={value}" for key, value in FAST_CONFIG.items())


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine.random_init(TINY, seed=0, device="cpu")


def make_client(engine, **options):
    app = Flask(__name__)
    app.register_blueprint(create_http_api(engine, **options))
    return app.test_client()


@pytest.fixture(scope="module")
def client(engine):
    return make_client(engine)


@pytest.fixture
def body() -> dict:
    """Four 4/4 bars of the demo's four voices at 480 ticks a quarter; generate bar 3 of the bass."""
    score = score_to_json(demo_score(RESOLUTION).slice_bars(0, 4))
    return {
        "score": score,
        "request": {"tracks": [{"id": 3, "bars": [3]}], "config": dict(FAST_CONFIG)},
    }


@pytest.fixture(scope="module")
def demo_midi(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("midi") / "demo.mid"
    demo_score().to_midi(path)
    return path.read_bytes()


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.json["error"]


# ---- health, info, docs ---------------------------------------------------------------------------


def test_health_names_the_model(client, engine):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "model": engine.name}


def test_info_reports_capabilities_attribute_levels_windows_and_defaults(client, engine):
    info = client.get("/info").json
    assert info["model"] == engine.name
    assert info["precision"] == str(engine.precision)
    assert info["capabilities"] == capabilities(engine.encoder_config)
    assert (
        info["capabilities"]["min_polyphony"] is True and info["capabilities"]["tension"] is False
    )
    attributes = info["attributes"]
    assert attributes["min_polyphony"]["levels"] == 10
    assert attributes["max_note_duration"]["levels"] == 6
    assert attributes["max_note_duration"]["labels"][3] == "quarter"
    assert len(attributes["note_density"]["labels"]) == 10
    assert attributes["note_density"]["track_type"] == "drum"
    assert info["window_sizes"] == [4, 8]
    assert info["resolution"] == 12
    assert [4, 4] in info["time_signatures"]
    assert set(info["config"]) == {spec.name for spec in fields(InferenceConfig)}
    assert info["config"]["temperature"] == {"type": "float", "default": 1.0}
    assert info["config"]["mask_mode"]["choices"][0] == "attention"


def test_openapi_document_describes_every_route_and_schema(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.get_data(as_text=True))
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/health", "/info", "/generate", "/openapi.json", "/docs"}
    content = document["paths"]["/generate"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data", "audio/midi"}
    schemas = document["components"]["schemas"]
    assert {"Score", "Track", "Bar", "Note", "GenerationRequest", "Error"} <= set(schemas)
    assert set(schemas["Note"]["properties"]) == {"pitch", "velocity", "start", "end"}
    assert set(schemas["InferenceConfig"]["properties"]) == {
        spec.name for spec in fields(InferenceConfig)
    }
    assert schemas["InferenceConfig"]["properties"]["model_dim"]["enum"] == [4, 8]


def test_docs_page_is_plain_html_listing_every_endpoint(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for path in ("/health", "/info", "/generate", "/openapi.json", "/docs"):
        assert f"<code>{path}</code>" in page
    assert "<script" not in page and "https://" not in page and "http://" not in page


# ---- JSON generation -----------------------------------------------------------------------------


def test_score_json_round_trips_through_a_score(engine):
    original = demo_score(RESOLUTION)
    parsed = score_from_json(score_to_json(original), engine.encoder_config)
    assert parsed.resolution == RESOLUTION and parsed.tempo == original.tempo
    assert (parsed.notes.as_table() == original.notes.as_table()).all()
    assert (parsed.time_signatures == original.time_signatures).all()
    assert [t.program for t in parsed.track_info] == [t.program for t in original.track_info]


def test_json_generate_fills_only_the_requested_bar(client, body):
    first_note(body).update(
        start=7, end=401
    )  # off the model's 12-per-quarter grid: must come back as sent
    response = client.post("/generate", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.json
    tracks = result["score"]["tracks"]
    assert len(tracks) == 4 and all(len(track["bars"]) == 4 for track in tracks)
    assert result["score"]["resolution"] == RESOLUTION
    for track_index, track in enumerate(tracks):
        for bar_index, bar in enumerate(track["bars"]):
            if (track_index, bar_index) != (3, 3):  # untouched cells come back exactly as sent
                assert bar == body["score"]["tracks"][track_index]["bars"][bar_index]
    generated = tracks[3]["bars"][3]["notes"]
    assert 1 <= len(generated) <= FAST_CONFIG["density_hard_limit"]
    for note in generated:
        assert 0 <= note["pitch"] <= 127 and 1 <= note["velocity"] <= 127
        assert 0 <= note["start"] < BAR_TICKS and note["end"] > note["start"]
    timing = result["timing"]
    assert timing["elapsed_s"] > 0 and timing["generated_tokens"] > 0
    assert timing["steps"] == 1 and timing["attempts"] >= 1 and timing["prompt_tokens"] > 0


def test_the_engine_lock_makes_a_request_wait(engine, body):
    lock = threading.Lock()
    client = make_client(engine, engine_lock=lock)
    answers = []
    with lock:
        worker = threading.Thread(
            target=lambda: answers.append(client.post("/generate", json=body))
        )
        worker.start()
        time.sleep(0.3)
        assert not answers, "the request ran while the engine lock was held"
    worker.join(30)
    assert answers[0].status_code == 200
    assert answers[0].json["timing"]["queued_s"] >= 0.25


# ---- MIDI generation -----------------------------------------------------------------------------


def midi_answer(response) -> Score:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "audio/midi"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert float(response.headers["X-Sideman-Elapsed-S"]) > 0
    assert int(response.headers["X-Sideman-Generated-Tokens"]) > 0
    return Score.from_midi(response.data)


def test_midi_upload_with_a_request_field_returns_a_midi_file(client, demo_midi):
    request = {"tracks": [{"id": 3, "bars": [5]}], "config": FAST_CONFIG}
    response = client.post(
        "/generate",
        data={"file": (io.BytesIO(demo_midi), "demo.mid"), "request": json.dumps(request)},
        content_type="multipart/form-data",
    )
    score = midi_answer(response)
    assert "demo-sideman.mid" in response.headers["Content-Disposition"]
    assert (score.n_tracks, score.n_bars) == (4, 8)
    bass = score.notes.select(score.notes.track == 3)
    assert (bass.bar == 5).any()
    original = demo_score()
    soprano = score.notes.select(score.notes.track == 0)
    assert (soprano.as_table() == original.notes.select(original.notes.track == 0).as_table()).all()


def test_raw_midi_body_takes_the_request_from_query_parameters(client, demo_midi):
    response = client.post(
        f"/generate?track=2&bars=6-7&{FAST_QUERY}", data=demo_midi, content_type="audio/midi"
    )
    score = midi_answer(response)
    assert int(response.headers["X-Sideman-Steps"]) == 2
    tenor = score.notes.select(score.notes.track == 2)
    assert {6, 7} <= set(tenor.bar.tolist())


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("track=3", "query.bars"),
        ("track=3&bars=7-4", "query.bars"),
        ("track=3&bars=four", "query.bars"),
        ("track=3&bars=4&temprature=2", "query.temprature"),
        ("track=3&bars=4&top_p=0", "query.top_p"),
        ("track=-1&bars=4", "query.track"),
        ("track=7&bars=4", "request.tracks[0].id"),
    ],
)
def test_bad_query_parameters_are_named(client, demo_midi, query, field):
    response = client.post(f"/generate?{query}", data=demo_midi, content_type="audio/midi")
    assert error_of(response, 422)["field"] == field


def test_midi_upload_errors_name_the_file(client, demo_midi):
    no_file = client.post(
        "/generate?bars=4", data={"other": "x"}, content_type="multipart/form-data"
    )
    assert error_of(no_file, 422)["field"] == "file"
    corrupt = client.post("/generate?bars=4", data=b"MThd-not-midi", content_type="audio/midi")
    assert error_of(corrupt, 422)["field"] == "file"
    bad_request = client.post(
        "/generate",
        data={"file": (io.BytesIO(demo_midi), "demo.mid"), "request": "{not json"},
        content_type="multipart/form-data",
    )
    assert error_of(bad_request, 400)["code"] == "invalid_json"


# ---- refused input -------------------------------------------------------------------------------


def cell(body: dict, track: int = 0, bar: int = 0) -> dict:
    return body["score"]["tracks"][track]["bars"][bar]


def first_note(body: dict) -> dict:
    return cell(body)["notes"][0]


# fmt: off
BAD_INPUT = [
    # (name, mutation of the body, field named in the error)
    ("unknown top-level field", lambda b: b.update(scroe=1), "scroe"),
    ("missing request", lambda b: b.pop("request"), "request"),
    ("unknown score field", lambda b: b["score"].update(tempoo=1), "score.tempoo"),
    ("unknown track field", lambda b: b["score"]["tracks"][1].update(instrumnet=3), "score.tracks[1].instrumnet"),
    ("unknown bar field", lambda b: cell(b, 0, 2).update(meter=3), "score.tracks[0].bars[2].meter"),
    ("unknown note field", lambda b: cell(b, 0, 2)["notes"][1].update(pich=60),
     "score.tracks[0].bars[2].notes[1].pich"),
    ("unknown request field", lambda b: b["request"].update(trakcs=[]), "request.trakcs"),
    ("unknown prompt field", lambda b: b["request"]["tracks"][0].update(barz=[1]), "request.tracks[0].barz"),
    ("unknown config field", lambda b: b["request"]["config"].update(temprature=1.0), "request.config.temprature"),
    ("pitch above 127", lambda b: first_note(b).update(pitch=128), "score.tracks[0].bars[0].notes[0].pitch"),
    ("pitch not an integer", lambda b: first_note(b).update(pitch=60.5), "score.tracks[0].bars[0].notes[0].pitch"),
    ("velocity 0", lambda b: first_note(b).update(velocity=0), "score.tracks[0].bars[0].notes[0].velocity"),
    ("negative start", lambda b: first_note(b).update(start=-1), "score.tracks[0].bars[0].notes[0].start"),
    ("start past the bar", lambda b: first_note(b).update(start=BAR_TICKS, end=BAR_TICKS + 10),
     "score.tracks[0].bars[0].notes[0].start"),
    ("end before start", lambda b: first_note(b).update(start=100, end=100), "score.tracks[0].bars[0].notes[0].end"),
    ("meter outside the vocabulary", lambda b: cell(b).update(ts_numerator=7, ts_denominator=9),
     "score.tracks[0].bars[0].ts_numerator"),
    ("meters differ between tracks", lambda b: cell(b, 1, 1).update(ts_numerator=3),
     "score.tracks[1].bars[1]"),
    ("bar counts differ between tracks", lambda b: b["score"]["tracks"][2]["bars"].pop(), "score.tracks[2].bars"),
    ("track type", lambda b: b["score"]["tracks"][0].update(track_type="bass"), "score.tracks[0].track_type"),
    ("instrument above 127", lambda b: b["score"]["tracks"][0].update(instrument=128), "score.tracks[0].instrument"),
    ("resolution 0", lambda b: b["score"].update(resolution=0), "score.resolution"),
    ("no tracks", lambda b: b["score"].update(tracks=[]), "score.tracks"),
    ("request bar out of range", lambda b: b["request"]["tracks"][0].update(bars=[9]), "request.tracks[0].bars[0]"),
    ("request track out of range", lambda b: b["request"]["tracks"][0].update(id=4), "request.tracks[0].id"),
    ("config out of range", lambda b: b["request"]["config"].update(top_p=1.5), "request.config.top_p"),
    ("window not in the checkpoint", lambda b: b["request"]["config"].update(model_dim=5), "request.config.model_dim"),
    ("attribute of the other track type", lambda b: b["request"]["tracks"][0].update(attributes={"note_density": 3}),
     "request.tracks[0].attributes.note_density"),
]
# fmt: on


@pytest.mark.parametrize(
    ("mutate", "field"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT]
)
def test_invalid_fields_are_refused_with_their_path(client, body, mutate, field):
    bad = copy.deepcopy(body)
    mutate(bad)
    error = error_of(client.post("/generate", json=bad), 422)
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")


def test_unknown_field_errors_suggest_the_known_name(client, body):
    first_note(body)["pich"] = first_note(body).pop("pitch")
    message = error_of(client.post("/generate", json=body), 422)["message"]
    assert message == "score.tracks[0].bars[0].notes[0].pich: unknown field (did you mean 'pitch'?)"


def test_score_json_errors_carry_the_path_outside_http(engine):
    with pytest.raises(ScoreJsonError) as caught:
        score_from_json(
            {"resolution": 12, "tracks": [{"bars": [{"ts_numerator": 4}]}]}, engine.encoder_config
        )
    assert caught.value.field == "score.tracks[0].bars[0].ts_denominator"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "body is not valid JSON"),
        ('{"score": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_malformed_json_is_a_400(client, data, message):
    error = error_of(client.post("/generate", data=data, content_type="application/json"), 400)
    assert message in error["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_other_content_types_are_a_415(client, content_type):
    error = error_of(client.post("/generate", data=b"{}", content_type=content_type), 415)
    assert "application/json" in error["message"]


def test_a_body_over_the_limit_is_a_413(client):
    error = error_of(
        client.post("/generate", data=b" " * (MAX_BODY_BYTES + 1), content_type="application/json"),
        413,
    )
    assert str(MAX_BODY_BYTES) in error["message"]


def test_the_body_limit_also_stops_multipart_uploads(engine, demo_midi):
    small = make_client(engine, max_body_bytes=len(demo_midi) // 2)
    response = small.post(
        "/generate?bars=4",
        data={"file": (io.BytesIO(demo_midi), "demo.mid")},
        content_type="multipart/form-data",
    )
    assert error_of(response, 413)["code"] == "body_too_large"


# ---- engine failures -----------------------------------------------------------------------------


class BrokenEngine:
    """The engine interface, with a session whose run raises ``error``."""

    def __init__(self, engine: InferenceEngine, error: Exception):
        self.name, self.precision = engine.name, engine.precision
        self.encoder_config, self.tokenizer = engine.encoder_config, engine.tokenizer
        self.error = error

    def session(self, score, request):
        error = self.error

        class Session:
            def run(self):
                raise error

        return Session()


def test_a_failed_generation_is_a_json_503_with_the_reason(engine, body):
    reason = "Max attempts (3) reached for bars [3]: silence"
    client = make_client(BrokenEngine(engine, GenerationFailed(reason)))
    error = error_of(client.post("/generate", json=body), 503)
    assert error["code"] == "generation_failed" and reason in error["message"]


def test_an_unexpected_engine_error_is_a_json_500_not_a_traceback_page(engine, body):
    client = make_client(BrokenEngine(engine, RuntimeError("CUDA fell over")))
    error = error_of(client.post("/generate", json=body), 500)
    assert error["message"] == "RuntimeError: CUDA fell over"


def test_generate_is_refused_while_the_daemons_live_session_has_the_model(engine):
    from flask import Flask

    from sideman.web_monitor.http_api import create_http_api

    app = Flask(__name__)
    app.register_blueprint(create_http_api(engine, busy=lambda: "a live session is running"))
    response = app.test_client().post("/generate", json={"score": {}, "request": {}})
    assert response.status_code == 409 and "live session" in response.get_json()["error"]["message"]
