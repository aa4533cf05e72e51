"""The ``sideman serve`` subcommand: arguments, model load, warm-up, then the daemon until signalled."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Reference-compatible shortcuts (osc-protocol §7) for the most used --param values.
PARAM_SHORTCUTS = {
    "buffer": "buffer_bars",
    "lookahead": "lookahead_bars",
    "model_dim": "model_dim",
    "gen_timeout": "gen_timeout",
    "max_attempts": "max_attempts",
}


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:7401, got {text!r}")
    return host, number


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as temperature=0.9, got {text!r}")
    return name.strip(), value.strip()


def add_serve_parser(sub: Any, add_model_arguments: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the real-time OSC daemon (/midigpt/* protocol)",
        description="Listen for /midigpt/* OSC messages and generate the agent track bar by bar.",
    )
    add_model_arguments(serve)
    # Real time favours speed: "auto" is int8 where fbgemm runs (about 2x faster than fp32 on the
    # build machine, README "Performance"), fp32 elsewhere. --precision fp32 for the exact path.
    serve.set_defaults(precision="auto")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; beyond loopback needs --allow)")
    serve.add_argument("--port", type=int, default=7400, help="UDP port to listen on (default 7400)")
    serve.add_argument("--reply-port", type=int, default=None, help="send replies to the /session/init sender's host at this port (Max [udpreceive] port)")
    serve.add_argument("--allow", action="append", default=[], metavar="CIDR", help="address or range that may drive the daemon when bound beyond loopback (repeatable)")
    serve.add_argument("--subscribe", action="append", default=[], type=_host_port, metavar="HOST:PORT", help="always send output here too (repeatable)")
    serve.add_argument("--param", action="append", default=[], type=_param, metavar="NAME=VALUE", help="default for a /midigpt/param (restored by init and reset; repeatable)")
    for flag, name in PARAM_SHORTCUTS.items():
        serve.add_argument(f"--{flag.replace('_', '-')}", dest=f"shortcut_{flag}", default=None, metavar="N", help=f"same as --param {name}=N")
    serve.add_argument("--threads", type=int, default=1, help="torch threads for generation (default 1 keeps the OSC loop responsive)")
    serve.add_argument(
        "--in-process",
        action="store_true",
        help="run the model in the daemon's own process (default: a child process, so generation never holds the OSC loop's interpreter lock)",
    )
    serve.add_argument("--save-dir", type=Path, default=Path("."), help="directory /midigpt/session/save writes into (default: current)")
    serve.add_argument("--retain-bars", type=int, default=64, help="bars kept in memory; older ones go to the session journal")
    serve.add_argument("--monitor-port", type=int, default=5000, help="web monitor port on 127.0.0.1 (default 5000; 0 picks a free one)")
    serve.add_argument("--no-monitor", action="store_true", help="do not start the web monitor")
    serve.add_argument(
        "--monitor-origin",
        action="append",
        default=[],
        metavar="URL",
        help="another origin allowed to use the monitor and HTTP API (e.g. http://localhost:3000); repeatable; default: same origin only",
    )
    serve.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--list-messages", action="store_true", help="print the OSC messages sideman accepts and exit")


def param_defaults(args: argparse.Namespace) -> dict[str, str]:
    values = dict(args.param)
    for flag, name in PARAM_SHORTCUTS.items():
        value = getattr(args, f"shortcut_{flag}")
        if value is not None:
            values[name] = value
    return values


def warm_up(engine: Any) -> float:
    """One short generation so the first real bar pays no compile or allocation cost."""
    from sideman.engine.demo import demo_score
    from sideman.engine.request import GenerationRequest, InferenceConfig, TrackPrompt

    started = time.perf_counter()
    score = demo_score().slice_bars(0, 4)
    request = GenerationRequest(
        tracks=(TrackPrompt(id=score.n_tracks - 1, bars=(3,), autoregressive=True),),
        config=InferenceConfig(model_dim=4, density_hard_limit=4, max_new_tokens=48, silence_check=False, novelty_check=False, seed=0),
    )
    try:
        engine.session(score, request).run()
    except Exception as exc:  # a warm-up that fails still leaves a working daemon; say why
        log.warning("warm-up generation failed (%s); the first bar may be slow", exc)
    warm_loop_kernels()
    return time.perf_counter() - started


def warm_loop_kernels() -> None:
    """Compile (or load from the numba cache) the kernels the event loop calls, with the argument
    types it calls them with: done lazily on the first sent bar, it stalled OSC for ~3 s."""
    import numpy as np

    from sideman.dsp.features import bar_features

    one = np.ones(1, dtype=np.int32)  # the scheduler's columns: int32 ticks, pitch, velocity
    bar_features(one - 1, one, 60 * one, 80 * one, 4, 48)


def start_engine_process(args: argparse.Namespace, cli_error: type[Exception]) -> Any:
    """Load the model in a child process (daemon/engine_process.py); its load errors are CLI errors."""
    from sideman.daemon.engine_process import EngineProcess, EngineSpec, EngineStartError

    if args.random_init:
        print("using a randomly initialised yellow_small-shaped model: expect random notes", flush=True)
    spec = EngineSpec(
        model=args.model,
        random_init=args.random_init,
        device=args.device,
        precision=args.precision,
        threads=max(1, args.threads),
    )
    try:
        return EngineProcess(spec)
    except EngineStartError as exc:
        raise cli_error(str(exc)) from None


def run_serve(args: argparse.Namespace, load_engine: Any, cli_error: type[Exception]) -> int:
    from sideman.daemon.app import Daemon, ServeOptions

    if args.list_messages:
        from sideman.daemon.protocol import describe_protocol

        print(describe_protocol())
        return 0
    if args.log_level:
        logging.getLogger().setLevel(args.log_level)
    started = time.perf_counter()
    if args.in_process:
        import torch

        torch.set_num_threads(max(1, args.threads))
        engine = load_engine(args)
        warm_s = warm_up(engine)
    else:
        engine = start_engine_process(args, cli_error)
        warm_loop_kernels()
        warm_s = engine.warm_s
    options = ServeOptions(
        host=args.host,
        port=args.port,
        reply_port=args.reply_port,
        allow=tuple(args.allow),
        subscribe=tuple(args.subscribe),
        param_defaults=param_defaults(args),
        threads=max(1, args.threads),
        save_dir=args.save_dir,
        retain_bars=args.retain_bars,
        traffic_events=not args.no_monitor,
    )
    try:
        daemon = Daemon(engine, options)
    except ValueError as exc:
        raise cli_error(str(exc)) from None
    monitor = None

    async def main() -> None:
        nonlocal monitor
        try:
            host, port = await daemon.start()
        except (OSError, ValueError) as exc:
            raise cli_error(str(exc)) from None
        if not args.no_monitor:
            monitor = start_monitor(daemon, engine, args, cli_error)
        print(
            f"sideman ready on {host}:{port} (model {engine.name}, {engine.precision}; "
            f"load + warm-up {time.perf_counter() - started:.1f} s, warm-up {warm_s:.1f} s)",
            flush=True,
        )
        if monitor is not None:
            print(f"web monitor on http://{monitor.address[0]}:{monitor.address[1]}/", flush=True)
        await daemon.run()

    try:
        asyncio.run(main())
    finally:
        if monitor is not None:
            monitor.stop()
        close_engine = getattr(engine, "close", None)
        if close_engine is not None:  # the engine process (daemon/engine_process.py): its owner stops it
            close_engine()
    print("sideman stopped", file=sys.stderr)
    return 0


def start_monitor(daemon: Any, engine: Any, args: argparse.Namespace, cli_error: type[Exception]) -> Any:
    """The web monitor on 127.0.0.1:--monitor-port, in this process (web_monitor/server.py)."""
    from sideman.web_monitor.server import Monitor, MonitorError

    monitor = Monitor(daemon, engine, port=args.monitor_port, allowed_origins=tuple(args.monitor_origin))
    try:
        monitor.start()
    except MonitorError as exc:
        raise cli_error(str(exc)) from None
    return monitor
