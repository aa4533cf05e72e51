"""The web monitor: a Flask-SocketIO app in the daemon's process (``sideman serve`` starts it).

Threads, not the daemon's loop: Werkzeug serves HTTP and WebSocket on its own threads
(``async_mode="threading"``, platform-notes §4), and one emitter thread turns the event bus into
Socket.IO ``update`` batches at most ``UPDATE_HZ`` times a second. The daemon's loop only appends
events to the view's inbox. Controls from the page go through ``Daemon.call``: the same protocol
table and handlers as OSC, a fixed set of session addresses, never a generic OSC relay.

Bound to 127.0.0.1 by default; Socket.IO and the HTTP API refuse other origins unless
``allowed_origins`` names them; the Flask secret is random per run.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, jsonify, request, send_from_directory
from flask_socketio import SocketIO
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from sideman.daemon.protocol import ProtocolError
from sideman.web_monitor.pieces import (
    DEFAULT_PIECE,
    MAX_UPLOAD_BYTES,
    PieceError,
    list_pieces,
    load_midi_file,
    load_piece,
)
from sideman.web_monitor.views import MonitorView, model_info

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
NODE_MODULES = HERE / "frontend" / "node_modules"
# URL name → file inside node_modules (installed by `npm ci` in web_monitor/frontend)
VENDOR_FILES = {
    "socket.io.esm.min.js": "socket.io-client/dist/socket.io.esm.min.js",
    "uPlot.esm.js": "uplot/dist/uPlot.esm.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}
UPDATE_HZ = 20
STATE_REFRESH_S = 0.5  # at most this often the emitter asks the daemon for its state JSON
CALL_TIMEOUT_S = 5.0
MAX_UPLOADS = 8  # uploaded pieces kept for the demo performer (the oldest goes first)
DEMO_BPM = (20, 400)  # the daemon's /midigpt/tempo range


class MonitorError(RuntimeError):
    """The monitor could not start (port in use, front end not installed); the message says how to fix it."""


class Monitor:
    """The monitor of one running ``Daemon``; ``start()`` binds and serves in background threads."""

    def __init__(
        self,
        daemon: Any,
        engine: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 5000,
        allowed_origins: tuple[str, ...] = (),
        roll_bars: int = 32,
    ) -> None:
        self.daemon = daemon
        self.engine = engine
        self.host = host
        self.port = port
        self.allowed_origins = tuple(o.rstrip("/") for o in allowed_origins)
        self.view = MonitorView(roll_bars=roll_bars)
        self.demo = None  # set in start(): web_monitor.demo.DemoPerformer
        self.info: dict[str, Any] = {}
        self.address: tuple[str, int] | None = None
        self.updates_sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._unsubscribe: Any = None
        self._last_state = 0.0
        self._uploads: dict[str, tuple[Any, Any]] = {}  # piece id → (Piece, Score), MIDI files from the page
        self._uploads_lock = threading.Lock()
        self.app, self.socketio = self._build_app()

    # ---- app -------------------------------------------------------------------------------
    def _build_app(self) -> tuple[Flask, SocketIO]:
        app = Flask(__name__, static_folder=None)
        app.config["SECRET_KEY"] = secrets.token_hex(32)  # per run: nothing to guess from the source
        app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
        # Same-origin only unless configured: Socket.IO checks Origin against the host it serves.
        socketio = SocketIO(
            app,
            async_mode="threading",
            cors_allowed_origins=list(self.allowed_origins) or None,
            logger=False,
            engineio_logger=False,
        )

        @app.before_request
        def refuse_cross_origin() -> Any:
            origin = request.headers.get("Origin")
            if origin and not self._origin_allowed(origin):
                abort(403, description=f"cross-origin request from {origin} refused (sideman serve --monitor-origin)")
            return None

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException) -> Any:  # JSON, never Werkzeug's HTML page
            return jsonify(error={"code": exc.code, "field": None, "message": exc.description}), exc.code

        @app.get("/")
        def index() -> Any:
            return send_from_directory(STATIC_DIR, "index.html")

        @app.get("/static/<path:name>")
        def static_file(name: str) -> Any:
            return send_from_directory(STATIC_DIR, name)

        @app.get("/vendor/<name>")
        def vendor(name: str) -> Any:
            relative = VENDOR_FILES.get(name)
            if relative is None:
                abort(404)
            path = NODE_MODULES / relative
            if not path.is_file():
                abort(500, description=f"{path} is missing: run `npm ci` in web_monitor/frontend (make setup does)")
            return send_from_directory(path.parent, path.name)

        @app.post("/demo/upload")
        def demo_upload() -> Any:
            upload = request.files.get("file")
            if upload is None:
                return jsonify(error="file: missing (send the MIDI file as multipart field 'file')"), 400
            data = upload.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                return jsonify(error=f"file: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"), 413
            try:
                piece, score = load_midi_file(data, upload.filename or "upload.mid")
            except PieceError as exc:
                return jsonify(error=f"file: {exc}"), 400
            with self._uploads_lock:
                self._uploads[piece.id] = (piece, score)
                while len(self._uploads) > MAX_UPLOADS:
                    self._uploads.pop(next(iter(self._uploads)))
            self.info["demo"] = self._demo_info()
            return jsonify(piece.as_dict())

        @app.get("/monitor/state")
        def monitor_state() -> Any:
            return jsonify(self.view.snapshot(self.info))

        self._register_http_api(app)

        @socketio.on("connect")
        def on_connect(auth: Any = None) -> Any:
            socketio.emit("snapshot", self.view.snapshot(self.info), to=request.sid)

        @socketio.on("snapshot")
        def on_snapshot(_data: Any = None) -> Any:
            return self.view.snapshot(self.info)

        @socketio.on("control")
        def on_control(data: Any) -> Any:
            return self.control(data)

        @socketio.on("demo")
        def on_demo(data: Any) -> Any:
            return self.demo_command(data)

        return app, socketio

    def _register_http_api(self, app: Flask) -> None:
        from sideman.web_monitor.http_api import create_http_api

        app.register_blueprint(create_http_api(self.engine, busy=self._live_session_busy))

    def _live_session_busy(self) -> str | None:
        if self.view.session.get("state") != "RUNNING":
            return None
        return (
            "a live session is running on this daemon and has the model; a stateless /generate would "
            "delay its bars: stop the session (/midigpt/session/stop) or run another sideman serve for HTTP"
        )

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.rstrip("/")
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.netloc == request.host  # same origin

    # ---- controls --------------------------------------------------------------------------
    def control(self, data: Any) -> dict[str, Any]:
        """One ``control`` event: ``{"address": ..., "args": [...]}`` through the session API."""
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            return {"ok": False, "code": 4, "message": "control: expected {address: string, args: list}"}
        args = data.get("args", [])
        if not isinstance(args, list):
            return {"ok": False, "code": 4, "message": f"{data['address']}: args must be a list"}
        return self.call(data["address"], *args)

    def call(self, address: str, *args: Any) -> dict[str, Any]:
        try:
            replies = self.daemon.call(address, *args).result(CALL_TIMEOUT_S)
        except ProtocolError as exc:
            return {"ok": False, "code": int(exc.code), "message": exc.message}
        except concurrent.futures.TimeoutError:
            return {"ok": False, "code": 5, "message": f"{address}: the daemon did not answer within {CALL_TIMEOUT_S:.0f} s"}
        self.view.session_dirty = True
        return {"ok": True, "replies": [[a, list(r)] for a, r in replies]}

    def demo_command(self, data: Any) -> dict[str, Any]:
        """One ``demo`` event: start the performer on a piece at a tempo, or stop it."""
        if not isinstance(data, dict) or data.get("action") not in ("start", "stop"):
            return {"ok": False, "message": "demo: expected {action: 'start' | 'stop', ...}"}
        if data["action"] == "stop":
            self.demo.stop()
            return {"ok": True, "message": "stopped"}
        piece_id = data.get("piece") or DEFAULT_PIECE
        bpm = data.get("bpm", 100)
        program = data.get("agent_program")
        if not isinstance(bpm, int | float) or isinstance(bpm, bool) or not DEMO_BPM[0] <= bpm <= DEMO_BPM[1]:
            return {"ok": False, "message": f"bpm: must be a number in {DEMO_BPM[0]}..{DEMO_BPM[1]}, got {bpm!r}"}
        if program is not None and (not isinstance(program, int) or isinstance(program, bool) or not 0 <= program <= 127):
            return {"ok": False, "message": f"agent_program: must be an integer in 0..127, got {program!r}"}
        try:
            with self._uploads_lock:
                upload = self._uploads.get(piece_id)
            score = upload[1] if upload is not None else load_piece(piece_id)
            self.demo.start(
                score, piece_id, float(bpm), agent_program=program, agent_is_drum=bool(data.get("agent_is_drum", False))
            )
        except ValueError as exc:  # PieceError too: an unknown piece, a bad argument
            return {"ok": False, "message": str(exc)}
        return {"ok": True, "message": f"playing {piece_id} at {float(bpm):g} BPM"}

    def _demo_info(self) -> dict[str, Any]:
        with self._uploads_lock:
            uploads = [piece.as_dict() for piece, _ in self._uploads.values()]
        return {"pieces": [p.as_dict() for p in list_pieces()] + uploads, "default": DEFAULT_PIECE}

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Bind, subscribe to the bus, start serving and emitting; returns the bound address."""
        from sideman.web_monitor.demo import DemoPerformer

        missing = [name for name, rel in VENDOR_FILES.items() if not (NODE_MODULES / rel).is_file()]
        if missing:
            raise MonitorError(
                f"the monitor's front-end packages are not installed ({', '.join(missing)}): "
                "run `npm ci --prefix web_monitor/frontend` (make setup does), or pass --no-monitor"
            )
        self.demo = DemoPerformer(self.daemon.call, self.view.on_demo)
        self.info = model_info(self.engine, limits=self.view.limits, demo=self._demo_info())
        try:
            self._server = make_server(self.host, self.port, self.app, threaded=True)
        except (OSError, SystemExit) as exc:  # Werkzeug exits on a port in use, after printing why
            reason = getattr(exc, "strerror", None) or "address in use"
            raise MonitorError(
                f"web monitor: cannot listen on {self.host}:{self.port} ({reason}); "
                "pass --monitor-port N, or --no-monitor"
            ) from None
        self.address = (self.host, self._server.server_port)
        self._unsubscribe = self.daemon.bus.subscribe(self.view.on_event)
        for target, name in ((self._server.serve_forever, "sideman-monitor-http"), (self._emit_loop, "sideman-monitor-emit")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("web monitor on http://%s:%d/", *self.address)
        return self.address

    def stop(self) -> None:
        self._stop.set()
        if self.demo is not None:
            self.demo.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(5.0)

    def _emit_loop(self) -> None:
        period = 1.0 / UPDATE_HZ
        while not self._stop.wait(period):
            try:
                self._emit_once()
            except Exception:  # the monitor must never take anything down; say what failed
                log.exception("monitor update failed")

    def _emit_once(self) -> None:
        now = time.monotonic()
        if self.view.session_dirty and now - self._last_state >= STATE_REFRESH_S:
            self._last_state = now
            try:
                replies = self.daemon.call("/midigpt/state/query").result(CALL_TIMEOUT_S)
                self.view.set_session(json.loads(replies[0][1][0]))
            except (ProtocolError, concurrent.futures.TimeoutError, IndexError, ValueError) as exc:
                log.info("monitor could not refresh the session state: %s", exc)
        update = self.view.take_update()
        if update is None:
            return
        if update.pop("reset", False):  # a new session: the page starts over from a snapshot
            self.socketio.emit("snapshot", self.view.snapshot(self.info))
        else:
            self.socketio.emit("update", update)
        self.updates_sent += 1


__all__ = ["Monitor", "MonitorError"]
