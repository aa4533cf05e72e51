"""The HTTP API's OpenAPI 3.1 document and the plain HTML page ``/docs`` renders from it.

Built from the code it describes where it can: the score schema from ``score_json``, the
``InferenceConfig`` schema from the dataclass fields and defaults, meters and window sizes from the
encoder config. No Swagger UI: ``/docs`` is server-side HTML with no scripts or external assets.
"""

from __future__ import annotations

import html
import json
from dataclasses import MISSING, fields
from typing import Any

from sideman.engine.request import DEVICES, MASK_MODES, InferenceConfig
from sideman.engine.vocab import EncoderConfig
from sideman.web_monitor.score_json import score_schema

_JSON_TYPES = {"float": "number", "int": "integer", "bool": "boolean", "str": "string"}
_CONFIG_ENUMS = {"mask_mode": MASK_MODES, "device": DEVICES}
_MIDI = {"schema": {"type": "string", "contentMediaType": "audio/midi"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _config_schema(encoder_config: EncoderConfig) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for spec in fields(InferenceConfig):
        prop: dict[str, Any] = {"type": _JSON_TYPES[getattr(spec.type, "__name__", str(spec.type))]}
        if spec.default is not MISSING:
            prop["default"] = spec.default
        if spec.name in _CONFIG_ENUMS:
            prop = {"enum": list(_CONFIG_ENUMS[spec.name]), "default": spec.default}
        properties[spec.name] = prop
    properties["model_dim"]["enum"] = list(encoder_config.num_bars_map)
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "description": "Sampling and planning parameters; ranges are checked by the server "
        "and a refused value is named in the error.",
    }


def _request_schemas(encoder_config: EncoderConfig) -> dict[str, Any]:
    bar_list = {"type": "array", "items": {"type": "integer", "minimum": 0}, "uniqueItems": True}
    levels = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    controls = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "time_signature": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 2,
                "maxItems": 2,
            }
        },
    }
    return {
        "TrackPrompt": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id"],
            "properties": {
                "id": {"type": "integer", "minimum": 0, "description": "index into score.tracks"},
                "bars": {**bar_list, "description": "bars of this track to generate"},
                "autoregressive": {"type": "boolean", "default": False},
                "ignore": {
                    "type": "boolean",
                    "default": False,
                    "description": "leave the track out of the prompt",
                },
                "mask_bars": {**bar_list, "description": "bars the model must not see"},
                "attributes": {**levels, "description": "attribute levels (GET /info)"},
                "controls": controls,
                "bar_attributes": {
                    "type": "object",
                    "additionalProperties": levels,
                    "description": "keyed by a bar of 'bars'",
                },
                "bar_controls": {
                    "type": "object",
                    "additionalProperties": controls,
                    "description": "keyed by a bar of 'bars'",
                },
            },
        },
        "InferenceConfig": _config_schema(encoder_config),
        "GenerationRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tracks"],
            "properties": {
                "tracks": {"type": "array", "items": _ref("TrackPrompt")},
                "config": _ref("InferenceConfig"),
            },
        },
    }


def _shared_schemas() -> dict[str, Any]:
    return {
        "GenerateBody": {
            "type": "object",
            "additionalProperties": False,
            "required": ["score", "request"],
            "properties": {"score": _ref("Score"), "request": _ref("GenerationRequest")},
        },
        "Timing": {
            "type": "object",
            "properties": {
                "elapsed_s": {"type": "number", "description": "generation time"},
                "queued_s": {"type": "number", "description": "wait for the engine"},
                "generated_tokens": {"type": "integer"},
                "steps": {"type": "integer", "description": "planner steps"},
                "attempts": {"type": "integer", "description": "sampling attempts, all steps"},
                "prompt_tokens": {"type": "integer"},
            },
        },
        "GenerateResult": {
            "type": "object",
            "required": ["score", "timing"],
            "properties": {"score": _ref("Score"), "timing": _ref("Timing")},
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "properties": {
                        "code": {"type": "string", "examples": ["invalid_field", "invalid_json"]},
                        "field": {
                            "type": ["string", "null"],
                            "examples": ["score.tracks[0].bars[2].notes[1].pitch"],
                        },
                        "message": {"type": "string"},
                    },
                }
            },
        },
    }


_QUERY_PARAMETERS = [
    {
        "name": "track",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "default": 0},
        "description": "MIDI uploads: the score track to generate (tracks follow the file's "
        "MIDI track and channel order)",
    },
    {
        "name": "bars",
        "in": "query",
        "schema": {"type": "string", "examples": ["4-7", "2,5"]},
        "description": "MIDI uploads without a 'request': bars to generate (required then)",
    },
    {"name": "autoregressive", "in": "query", "schema": {"type": "boolean"}},
    {
        "name": "request",
        "in": "query",
        "schema": {"type": "string"},
        "description": "MIDI uploads: a whole GenerationRequest as JSON text, instead of track/bars",
    },
]

_GENERATE_DESCRIPTION = (
    "Generate the requested bars and return the whole score with them filled in. "
    "JSON: note times are ticks of score.resolution from the start of the note's bar. "
    "MIDI: upload multipart/form-data with a 'file' field (and optionally a 'request' field "
    "holding GenerationRequest JSON) or a raw audio/midi body; without a 'request', name the "
    "bars with query parameters, e.g. ?track=1&bars=4-7&temperature=0.9 (any InferenceConfig "
    "field may be a query parameter). The MIDI answer is a file attachment; timing comes in "
    "X-Sideman-Elapsed-S, X-Sideman-Generated-Tokens, X-Sideman-Steps and the other "
    "X-Sideman-* headers. One generation runs at a time; others wait."
)


def openapi_document(encoder_config: EncoderConfig, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the HTTP API for a model with ``encoder_config``."""
    errors = {
        "400": _error_response("malformed body: not JSON, not an object"),
        "413": _error_response(f"body larger than {max_body_bytes} bytes"),
        "415": _error_response("unsupported Content-Type"),
        "422": _error_response(
            "a value out of range, an unknown or missing field; error.field names it"
        ),
        "500": _error_response("engine error"),
        "503": _error_response("generation failed (every attempt refused); may succeed on retry"),
    }
    midi_body = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "audio/midi"},
            "request": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "GenerationRequest JSON",
            },
        },
    }
    generate = {
        "summary": "Generate bars of a score",
        "description": _GENERATE_DESCRIPTION,
        "parameters": _QUERY_PARAMETERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("GenerateBody")},
                "multipart/form-data": {"schema": midi_body},
                "audio/midi": _MIDI,
            },
        },
        "responses": {
            "200": {
                "description": "the score with the generated bars",
                "content": {
                    "application/json": {"schema": _ref("GenerateResult")},
                    "audio/midi": _MIDI,
                },
            },
            **errors,
        },
    }

    def json_get(summary: str, description: str) -> dict[str, Any]:
        content = {"application/json": {"schema": {"type": "object"}}}
        return {
            "get": {
                "summary": summary,
                "description": description,
                "responses": {"200": {"description": summary, "content": content}},
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sideman HTTP API",
            "version": "1",
            "description": "Stateless generation: every request carries the whole score "
            "and its parameters (MIDI-GPT midigpt-http compatible).",
        },
        "paths": {
            "/health": json_get("Liveness probe", 'Answers {"status": "ok", "model": name}.'),
            "/info": json_get(
                "Model capabilities",
                "Model name, precision, capabilities, attribute levels and labels, "
                "window sizes, time signatures, resolution and InferenceConfig "
                "defaults.",
            ),
            "/generate": {"post": generate},
            "/openapi.json": json_get("This document", "The OpenAPI 3.1 document."),
            "/docs": {
                "get": {
                    "summary": "API documentation",
                    "description": "This page, as HTML.",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
        },
        "components": {
            "schemas": {**score_schema(), **_request_schemas(encoder_config), **_shared_schemas()}
        },
    }


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing every endpoint of ``document`` and its schemas."""
    info = document["info"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(info['title'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "code,pre{background:#f4f4f4}pre{padding:.5rem;overflow-x:auto}"
        ".method{font-weight:bold;text-transform:uppercase}</style></head><body>",
        f"<h1>{html.escape(info['title'])}</h1><p>{html.escape(info['description'])}</p>",
        '<p>Machine-readable: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).</p>',
        "<h2>Endpoints</h2>",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parts.append(f'<section id="{html.escape(method)}-{html.escape(path.strip("/"))}">')
            parts.append(
                f'<h3><span class="method">{html.escape(method)}</span> '
                f"<code>{html.escape(path)}</code> — {html.escape(operation['summary'])}</h3>"
            )
            parts.append(f"<p>{html.escape(operation.get('description', ''))}</p>")
            body = operation.get("requestBody", {}).get("content", {})
            if body:
                parts.append(
                    "<p>Request body: "
                    + ", ".join(f"<code>{html.escape(kind)}</code>" for kind in body)
                    + "</p>"
                )
            responses = ", ".join(
                f"<code>{html.escape(code)}</code> {html.escape(answer['description'])}"
                for code, answer in operation["responses"].items()
            )
            parts.append(f"<p>Responses: {responses}</p></section>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3>')
        parts.append(f"<pre>{html.escape(json.dumps(schema, indent=2))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
