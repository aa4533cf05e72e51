"""The stateless HTTP API (spec/http-api.md): ``/health``, ``/info``, ``/generate``, plus docs.

Every ``/generate`` call carries the whole score and request; nothing is kept between calls.
Two forms: JSON in and out (``{"score", "request"}`` -> ``{"score", "timing"}``, score shape in
``score_json``), or a MIDI file in and out (multipart field ``file`` or a raw ``audio/midi`` body,
the request as JSON in a ``request`` form field or query parameter, or as the short query
``track=0&bars=4-7&temperature=0.9``). Errors are JSON, ``{"error": {"code", "field", "message"}}``,
with ``field`` the path of the offending value. ``create_http_api`` returns a Flask blueprint that
the monitor app registers; ``engine`` is an ``InferenceEngine`` or an ``EngineProcess``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import PurePath
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from sideman.daemon.params import attribute_levels, capabilities, known_attributes
from sideman.engine.inference import EngineError, GenerationCancelled, GenerationFailed
from sideman.engine.midi_io import MidiFileError
from sideman.engine.planner import PlanError
from sideman.engine.request import (
    DEVICES,
    MASK_MODES,
    GenerationRequest,
    InferenceConfig,
    RequestError,
)
from sideman.engine.score import NoteArrays, Score, ScoreError
from sideman.engine.tokenizer import TokenizerError
from sideman.engine.vocab import DRUM_ATTRIBUTES
from sideman.web_monitor.http_openapi import docs_page, openapi_document
from sideman.web_monitor.score_json import ScoreJsonError, score_from_json, score_to_json

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
JSON_TYPE = "application/json"
FORM_TYPE = "multipart/form-data"
MIDI_TYPES = ("audio/midi", "audio/x-midi", "audio/mid")
GENERATE_BODY_FIELDS = ("score", "request")
QUERY_TRACK_FIELDS = ("track", "bars", "autoregressive")
_BARS_PATTERN = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
# What each attribute level means (tokens.md §7.3); levels past a table's end are shown as numbers.
_DURATION_LABELS = ("32nd", "16th", "8th", "quarter", "half", "whole or longer")


class ApiError(Exception):
    """An error answer: HTTP status, a short machine code, the field path (or None) and a message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.status, self.code, self.field, self.message = status, code, field, message

    def response(self) -> tuple[Response, int]:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return jsonify(error={"code": self.code, "field": self.field, "message": text}), self.status


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", message, field)


def create_http_api(
    engine: Any,
    *,
    engine_lock: threading.Lock | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    busy: Callable[[], str | None] | None = None,
) -> Blueprint:
    """The blueprint "http_api"; ``engine_lock`` (a private one when None) serialises generations.
    ``busy()`` returning a reason refuses ``/generate`` with 409 (the daemon's live session has the
    model: a stateless request would delay its bars)."""
    api = Blueprint("http_api", __name__)
    lock = engine_lock if engine_lock is not None else threading.Lock()

    @api.before_request
    def limit_body() -> None:
        request.max_content_length = max_body_bytes  # Werkzeug stops reading a longer stream (413)
        if request.content_length is not None and request.content_length > max_body_bytes:
            raise ApiError(
                413,
                "body_too_large",
                f"request body of {request.content_length} bytes exceeds the limit of {max_body_bytes}",
            )

    @api.errorhandler(ApiError)
    def api_error(error: ApiError) -> tuple[Response, int]:
        return error.response()

    @api.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        code = re.sub(r"\W+", "_", (error.name or "error").lower())
        return ApiError(error.code or 500, code, error.description or error.name).response()

    @api.errorhandler(Exception)
    def unexpected_error(error: Exception) -> tuple[Response, int]:
        log.exception("HTTP API: unexpected error")
        return ApiError(500, "internal_error", f"{type(error).__name__}: {error}").response()

    @api.get("/health")
    def health() -> Response:
        return jsonify(status="ok", model=engine.name)

    @api.get("/info")
    def info() -> Response:
        return jsonify(info_document(engine, max_body_bytes))

    @api.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document(engine.encoder_config, max_body_bytes))

    @api.get("/docs")
    def docs() -> Response:
        return Response(
            docs_page(openapi_document(engine.encoder_config, max_body_bytes)), mimetype="text/html"
        )

    @api.post("/generate")
    def generate() -> Any:
        reason = busy() if busy is not None else None
        if reason:
            raise ApiError(409, "busy", reason)
        mimetype = request.mimetype.lower()
        if mimetype == JSON_TYPE:
            return _generate_json(engine, lock)
        if mimetype == FORM_TYPE or mimetype in MIDI_TYPES:
            return _generate_midi(engine, lock)
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {mimetype or '(none)'} is not accepted; send {JSON_TYPE}, "
            f"{FORM_TYPE} with a MIDI 'file' field, or a raw {MIDI_TYPES[0]} body",
        )

    return api


# ---- /info --------------------------------------------------------------------------------------


def info_document(engine: Any, max_body_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Model, capabilities, attribute levels and labels, vocabulary and request defaults."""
    config = engine.encoder_config
    attributes = {}
    for name in known_attributes(config):
        levels = attribute_levels(config, name)
        attributes[name] = {
            "levels": levels,
            "labels": attribute_labels(name, levels),
            "track_type": "drum" if name in DRUM_ATTRIBUTES else "melodic",
        }
    return {
        "model": engine.name,
        "precision": str(engine.precision),
        "vocabulary": config.name,
        "vocab_size": int(config.vocabulary.size),
        "resolution": config.resolution,
        "window_sizes": list(config.num_bars_map),
        "time_signatures": [list(meter) for meter in config.time_signatures],
        "capabilities": capabilities(config),
        "attributes": attributes,
        "config": {
            spec.name: {
                "type": getattr(spec.type, "__name__", str(spec.type)),
                "default": spec.default,
                **({"choices": list(_CHOICES[spec.name])} if spec.name in _CHOICES else {}),
            }
            for spec in fields(InferenceConfig)
        },
        "limits": {"max_body_bytes": max_body_bytes, "pitch": [0, 127], "velocity": [1, 127]},
    }


_CHOICES = {"mask_mode": MASK_MODES, "device": DEVICES}


def attribute_labels(name: str, levels: int) -> list[str]:
    """A readable label per level: voices for polyphony, note values for durations, bins otherwise."""
    if name.endswith("polyphony"):
        return [
            f"{level + 1}{'+' if level == levels - 1 else ''} voice{'s' if level else ''}"
            for level in range(levels)
        ]
    if name.endswith("note_duration") and levels == len(_DURATION_LABELS):
        return list(_DURATION_LABELS)
    return [f"level {level}" for level in range(levels)]


# ---- /generate ----------------------------------------------------------------------------------


def _generate_json(engine: Any, lock: threading.Lock) -> Response:
    body = _read_json(request.get_data(), "body")
    if not isinstance(body, Mapping):
        raise ApiError(
            400, "invalid_body", 'the body must be a JSON object {"score": ..., "request": ...}'
        )
    for key in body:
        if key not in GENERATE_BODY_FIELDS:
            raise _invalid(str(key), f"unknown field; the body holds {list(GENERATE_BODY_FIELDS)}")
    for key in GENERATE_BODY_FIELDS:
        if key not in body:
            raise _invalid(key, "missing required field")
    score = _parse_score(body["score"], engine)
    generation_request = _parse_request(body["request"], "request")
    result_score, timing = _run(engine, lock, score, generation_request)
    return jsonify(score=score_to_json(result_score), timing=timing)


def _generate_midi(engine: Any, lock: threading.Lock) -> Response:
    if request.mimetype.lower() == FORM_TYPE:
        upload = request.files.get("file")
        if upload is None:
            raise _invalid("file", "missing: send the MIDI file in the multipart field 'file'")
        data, filename = upload.read(), upload.filename or "score.mid"
        request_text = request.form.get("request")
    else:
        data, filename, request_text = request.get_data(), "score.mid", None
    if not data:
        raise _invalid("file", "the MIDI file is empty")
    if request_text is None:
        request_text = request.args.get("request")
    try:
        score = Score.from_midi(data, encoder_config=engine.encoder_config)
    except MidiFileError as error:
        raise _invalid("file", str(error)) from None
    if request_text is not None:
        generation_request = _parse_request(_read_json(request_text.encode(), "request"), "request")
    else:
        generation_request = _request_from_query(request.args)
    result_score, timing = _run(engine, lock, score, generation_request)
    buffer = io.BytesIO()
    result_score.to_midi(buffer)
    buffer.seek(0)
    stem = PurePath(filename).stem or "score"
    response = send_file(
        buffer, mimetype=MIDI_TYPES[0], as_attachment=True, download_name=f"{stem}-sideman.mid"
    )
    for key, value in timing.items():
        response.headers[f"X-Sideman-{key.replace('_', '-').title()}"] = str(value)
    return response


def _read_json(data: bytes, what: str) -> Any:
    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=refuse_constant)
    except UnicodeDecodeError as error:
        raise ApiError(400, "invalid_json", f"{what} is not UTF-8 text: {error}") from None
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON: {error}") from None


def _parse_score(data: Any, engine: Any) -> Score:
    try:
        return score_from_json(data, engine.encoder_config)
    except ScoreJsonError as error:
        raise _invalid(error.field, error.message) from None
    except ScoreError as error:  # whatever the JSON checks left to the Score itself
        raise _invalid("score", str(error)) from None


def _parse_request(data: Any, where: str) -> GenerationRequest:
    try:
        return GenerationRequest.from_dict(data)
    except RequestError as error:
        raise _invalid(error.within(where).field, error.message) from None


def _request_from_query(args: Mapping[str, str]) -> GenerationRequest:
    """``track`` (default 0), ``bars`` (``4-7`` or ``4,6``), ``autoregressive``, config fields."""
    if "bars" not in args:
        raise _invalid("query.bars", "missing: name the bars to generate, e.g. ?track=0&bars=4-7")
    config_names = {spec.name for spec in fields(InferenceConfig)}
    track: dict[str, Any] = {
        "id": _query_value(args.get("track", "0")),
        "bars": _bar_range(args["bars"]),
    }
    if "autoregressive" in args:
        track["autoregressive"] = _query_value(args["autoregressive"])
    config: dict[str, Any] = {}
    for key, text in args.items():
        if key in QUERY_TRACK_FIELDS:
            continue
        if key not in config_names:
            raise _invalid(
                f"query.{key}",
                f"unknown parameter; use {list(QUERY_TRACK_FIELDS)} "
                "or an InferenceConfig field (GET /info)",
            )
        config[key] = _query_value(text)
    try:
        return GenerationRequest.from_dict({"tracks": [track], "config": config})
    except RequestError as error:
        field = re.sub(r"^(tracks\[0\]\.|config\.)", "", error.field)
        field = "track" if field == "id" else field
        raise _invalid(f"query.{field}", error.message) from None


def _query_value(text: str) -> Any:
    """Numbers and true/false as JSON reads them; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _bar_range(text: str) -> list[int]:
    bars: list[int] = []
    for part in text.split(","):
        match = _BARS_PATTERN.match(part)
        if match is None:
            raise _invalid("query.bars", f"expected bar indices like 4-7 or 4,6, got {text!r:.40}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise _invalid("query.bars", f"range {first}-{last} runs backwards")
        bars.extend(range(first, last + 1))
    return bars


def _run(
    engine: Any, lock: threading.Lock, score: Score, generation_request: GenerationRequest
) -> tuple[Score, dict[str, Any]]:
    """Validate, generate under the lock, and splice the generated bars into the input score."""
    try:
        generation_request.validate(
            score, engine.encoder_config
        )  # refuse before waiting for the lock
    except RequestError as error:
        raise _invalid(error.within("request").field, error.message) from None
    waited = time.perf_counter()
    with lock:
        queued_s = time.perf_counter() - waited
        try:
            result = engine.session(score, generation_request).run()
        except RequestError as error:
            raise _invalid(error.within("request").field, error.message) from None
        except (ScoreError, TokenizerError, PlanError) as error:
            raise _invalid("score", str(error)) from None
        except (GenerationFailed, GenerationCancelled) as error:
            raise ApiError(503, "generation_failed", str(error)) from None
        except EngineError as error:
            raise ApiError(500, "engine_error", str(error)) from None
    steps = list(result.steps)
    timing = {
        "elapsed_s": round(float(result.elapsed_s), 6),
        "queued_s": round(queued_s, 6),
        "generated_tokens": int(result.generated_tokens),
        "steps": len(steps),
        "attempts": sum(int(getattr(step, "attempts", 0)) for step in steps),
        "prompt_tokens": sum(int(getattr(step, "prompt_tokens", 0)) for step in steps),
    }
    return splice_generated(score, result.score, generation_request), timing


def splice_generated(
    original: Score, generated: Score, generation_request: GenerationRequest
) -> Score:
    """The input score with only the requested (track, bar) cells taken from the generated one.

    The engine returns the whole score re-gridded through the model's resolution; splicing keeps
    the caller's untouched bars exactly as sent. Meters come from the generated score (a
    ``time_signature`` control may change a generated bar's meter).
    """
    if (generated.n_bars, generated.n_tracks, generated.resolution) != (
        original.n_bars,
        original.n_tracks,
        original.resolution,
    ):
        return generated
    targets = np.asarray(
        [
            prompt.id * original.n_bars + bar
            for prompt in generation_request.tracks
            for bar in prompt.bars
        ],
        dtype=np.int64,
    )

    def in_targets(notes: NoteArrays) -> np.ndarray:
        return np.isin(notes.track.astype(np.int64) * original.n_bars + notes.bar, targets)

    kept = original.notes.select(~in_targets(original.notes))
    new = generated.notes.select(in_targets(generated.notes))
    return generated.with_notes(NoteArrays.concatenate([kept, new]))
