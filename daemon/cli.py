"""The ``sideman`` command line: ``tokens``, ``generate``, ``serve``, ``bench``, ``train`` and ``eval``.

Each subcommand parses its arguments here and calls the library; errors a user can fix are
printed as one ``sideman: error: …`` line with exit status 2, never as a bare traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# engine.model.PRECISIONS, repeated so that parsing arguments does not import torch (a test checks).
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "mixed", "auto")

log = logging.getLogger("sideman")


class CliError(Exception):
    """A user-facing command-line error (bad argument, unreadable file …)."""


def _bar_range(text: str) -> tuple[int, ...]:
    """Parse ``4-7`` or ``4,6,9`` or ``5`` into a tuple of bar indices."""
    bars: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first:
                    raise ValueError
                bars.extend(range(first, last + 1))
            else:
                bars.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bars must look like 4-7, 4,6,9 or 5 (0-based bar indices), got {text!r}"
        ) from None
    if any(b < 0 for b in bars):
        raise argparse.ArgumentTypeError(f"bar indices are 0-based and cannot be negative: {text!r}")
    return tuple(sorted(set(bars)))


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint bundle (.pt or .safetensors) or a shipped model name (default: the shipped default)",
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="use a randomly initialised model of the yellow_small shape instead of a checkpoint",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISIONS),
        help="inference arithmetic: fp32 (exact reference, default), int8 (CPU, ~2x faster, "
        "quantisation noise), mixed (fp32 prompt, int8 steps), bf16, fp16, or auto (fastest here)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sideman", description="Real-time accompaniment with a small GPT-2.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    tokens = sub.add_parser("tokens", help="print a MIDI file's yellow token ids as JSON")
    tokens.add_argument("midi", type=Path)
    tokens.add_argument("--window-bars", type=int, default=8, help="NumBars window length (4 or 8 for yellow)")
    tokens.add_argument("--no-attributes", action="store_true", help="omit the track attribute tokens")
    tokens.add_argument("--skip-unknown-meters", action="store_true", help="drop bars whose meter is not in the vocabulary")
    tokens.add_argument("--describe", action="store_true", help="also print each token as Type(value)")

    generate = sub.add_parser("generate", help="infill or continue bars of one track of a MIDI file")
    generate.add_argument("input", type=Path, help="input MIDI file (with --demo: where to write the demo input)")
    generate.add_argument("output", type=Path, help="output MIDI file")
    generate.add_argument("--track", type=int, default=0, help="0-based index of the track to generate")
    generate.add_argument("--bars", type=_bar_range, default=None, help="bars to generate, e.g. 4-7 (default: the last 4)")
    generate.add_argument("--autoregressive", action="store_true", help="continue the track from its first target bar on")
    generate.add_argument("--demo", action="store_true", help="write a built-in 8-bar, 4-voice input first and use it")
    generate.add_argument("--model-dim", type=int, default=None, help="window length in bars (4 or 8)")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0, help="random seed (-1: free-running)")
    generate.add_argument("--num-candidates", type=int, default=1)
    generate.add_argument("--density-limit", type=int, default=0, help="at most N notes per generated bar (0: off)")
    generate.add_argument("--polyphony-limit", type=int, default=0, help="at most N notes per onset (0: off)")
    generate.add_argument("--mask-mode", default="attention", choices=["attention", "attention_skip", "remove", "token"])
    generate.add_argument("--skip-unknown-meters", action="store_true")
    _add_model_arguments(generate)

    from sideman.daemon.serve import _param, add_serve_parser

    add_serve_parser(sub, _add_model_arguments)

    bench = sub.add_parser("bench", help="print performance figures")
    bench.add_argument("suite", choices=["tokenizer", "generate", "daemon", "monitor"])
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    bench.add_argument(
        "--threads", type=int, default=None, help="torch threads (generate suite: default 2; daemon suite: serve's 1)"
    )
    bench.add_argument("--model", default=None, help="daemon suite: checkpoint bundle to serve (default: --random-init)")
    bench.add_argument(
        "--param",
        action="append",
        default=None,
        type=_param,
        metavar="NAME=VALUE",
        help="daemon suite: sideman serve --param (repeatable; default density_hard_limit=16)",
    )
    _add_train_parser(sub)
    from sideman.daemon.cli_eval import add_eval_parser

    add_eval_parser(sub)
    return parser


# sideman train: one flag per TrainConfig field (--n-embd sets n_embd); help text, and a type
# where the field's default does not give it.
_TRAIN_FLAGS: dict[str, tuple[str, type | None]] = {
    "steps": ("optimizer steps: the schedule's length, instead of --minutes", int),
    "minutes": ("time budget: the step count is estimated from the first steps' speed and logged", float),
    "n_layer": ("transformer blocks", None),
    "n_embd": ("model width (divisible by --n-head)", None),
    "n_head": ("attention heads", None),
    "n_positions": ("position embeddings (>= --max-len)", None),
    "dropout": ("dropout while training", None),
    "batch_size": ("sequences per step and rank", None),
    "max_len": ("tokens per training sequence", None),
    "length_pool": ("batches drawn at once and grouped by length, less padding (1: off)", None),
    "lr": ("peak learning rate (after warm-up)", None),
    "min_lr": ("learning rate at the end of the cosine", None),
    "warmup_steps": ("linear warm-up steps", None),
    "weight_decay": ("AdamW weight decay (matrices and embeddings only)", None),
    "grad_clip": ("clip the gradient norm to this (0: off)", None),
    "eval_interval": ("steps between validation passes", None),
    "eval_samples": ("size of the fixed validation set", None),
    "checkpoint_interval": ("steps between resumable checkpoints", None),
    "val_fraction": ("share of pieces held out for validation", None),
    "merge_probability": ("share of windows whose voices are merged into a keyboard reduction", None),
    "double_probability": ("share of reductions doubled at octaves (organ registration)", None),
    "rescale_probability": ("share of windows written 4x/2x faster or slower", None),
    "rearticulate_probability": ("share of windows with one part in repeated or held notes of one length", None),
    "texture_probability": ("share of reductions played thinner or thicker on some beats", None),
    "voicing_probability": ("share of the reductions not doubled at octaves that keep 1-3 voices or gain 1-4 octave voices on some beats", None),
    "hold_probability": ("share of windows with one part held in long notes over some stretches", None),
    "init_from": ("start from this bundle's weights (default, or a .safetensors/.pt path): fine-tuning", str),
    "limit": ("use at most this many pieces (quick runs)", int),
    "cache_dir": ("corpus cache folder (default: ~/.cache/sideman/corpus)", str),
    "workers": ("corpus extraction processes", None),
    "seed": ("seed of weights, data order and dropout", None),
    "threads": ("torch threads (0: all cores, shared among local ranks)", None),
}


def _add_train_parser(sub) -> None:
    from sideman.engine.train.config import DEVICES, PRECISIONS, TrainConfig

    defaults = TrainConfig()
    train = sub.add_parser(
        "train",
        help="train a model (one CPU/GPU, or many under torchrun); resumable",
        description="Train sideman's GPT-2 on a corpus. Writes checkpoint.pt (resumable), "
        "model.safetensors, model.pt, train_log.json and loss_curve.png into --out. Run it under "
        "torchrun for several GPUs or nodes. Ctrl-C saves and stops; --resume continues.",
    )
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out with its own settings")
    train.add_argument(
        "--sources", nargs="+", default=None,
        help="bach, palestrina, quartets, trecento, monteverdi, or folders of MIDI files (default: bach)",
    )  # fmt: skip
    train.add_argument("--precision", choices=PRECISIONS, default=None, help="auto: bf16 where native, else fp32 (fp16 on older GPUs)")
    train.add_argument("--device", choices=DEVICES, default=None, help="auto: this rank's GPU if any, else the CPU")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(train, _TRAIN_FLAGS, defaults)


def add_config_flags(parser: argparse.ArgumentParser, flags: dict, defaults: object) -> None:
    """One ``--field-name`` per entry of ``flags`` (field → (help, type or None)); unset flags
    stay None so the config's own default applies, which the help text shows."""
    for name, (text, kind) in flags.items():
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind or type(default), default=None,
            help=text if default is None else f"{text} (default: {default})",
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "tokens":
            return _tokens(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            from sideman.daemon.cli_eval import run_eval

            return run_eval(args, CliError, user_errors())
        if args.command == "serve":
            from sideman.daemon.serve import run_serve

            return run_serve(args, _load_engine_or_fail, CliError)
    except CliError as exc:
        print(f"sideman: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sideman: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `sideman tokens f.mid | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes whose message is a complete, actionable user error."""
    from sideman.engine.checkpoint import CheckpointError
    from sideman.engine.inference import EngineError
    from sideman.engine.midi_io import MidiFileError
    from sideman.engine.model import ModelConfigError
    from sideman.engine.planner import PlanError
    from sideman.engine.request import RequestError
    from sideman.engine.sampler import SamplingParamsError
    from sideman.engine.score import ScoreError
    from sideman.engine.tokenizer import TokenizerError
    from sideman.engine.vocab import EncoderConfigError

    return (
        CheckpointError,
        EncoderConfigError,
        EngineError,
        MidiFileError,
        ModelConfigError,
        PlanError,
        RequestError,
        SamplingParamsError,
        ScoreError,
        TokenizerError,
    )


def _tokens(args: argparse.Namespace) -> int:
    from sideman.engine.score import Score
    from sideman.engine.tokenizer import Tokenizer
    from sideman.engine.vocab import EncoderConfig

    config = EncoderConfig.yellow()
    try:
        score = Score.from_midi(args.midi, skip_unknown_time_signatures=args.skip_unknown_meters)
        ids = Tokenizer(config).encode_score(score, window_bars=args.window_bars, attributes=not args.no_attributes)
    except user_errors() as exc:
        raise CliError(str(exc)) from exc
    out: dict = {
        "file": str(args.midi),
        "n_bars": score.n_bars,
        "n_tracks": score.n_tracks,
        "n_notes": len(score.notes),
        "window_bars": args.window_bars,
        "ids": [int(i) for i in ids],
    }
    if args.describe:
        out["tokens"] = [config.vocabulary.describe(int(i)) for i in ids]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from sideman.engine.demo import demo_score
    from sideman.engine.request import GenerationRequest, InferenceConfig, TrackPrompt
    from sideman.engine.score import Score

    try:
        if args.demo:
            demo_score().to_midi(args.input)
            print(f"wrote the demo input (8 bars, 4 voices) to {args.input}")
        score = Score.from_midi(args.input, skip_unknown_time_signatures=args.skip_unknown_meters)
        if not 0 <= args.track < score.n_tracks:
            raise CliError(f"--track {args.track}: the file has {score.n_tracks} tracks (0..{score.n_tracks - 1})")
        bars = args.bars if args.bars is not None else tuple(range(max(0, score.n_bars - 4), score.n_bars))
        model_dim = args.model_dim or (8 if score.n_bars >= 8 else 4)
        request = GenerationRequest(
            tracks=(TrackPrompt(id=args.track, bars=bars, autoregressive=args.autoregressive),),
            config=InferenceConfig(
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed,
                num_candidates=args.num_candidates,
                density_hard_limit=args.density_limit,
                polyphony_hard_limit=args.polyphony_limit,
                model_dim=model_dim,
                mask_mode=args.mask_mode,
                device=args.device,
            ),
        )
        engine = _load_engine(args)
        result = engine.session(score, request).run()
        result.score.to_midi(args.output)
    except user_errors() as exc:
        raise CliError(str(exc)) from exc
    print(result.summary())
    print(f"wrote {args.output}")
    return 0


def _load_engine(args: argparse.Namespace):
    from sideman.engine.inference import InferenceEngine

    if args.random_init:
        print("using a randomly initialised yellow_small-shaped model: expect random notes")
        return InferenceEngine.random_init(device=args.device, precision=args.precision)
    return InferenceEngine.from_pretrained(
        args.model or "default", device=args.device, precision=args.precision
    )


def _load_engine_or_fail(args: argparse.Namespace):
    try:
        return _load_engine(args)
    except user_errors() as exc:
        raise CliError(str(exc)) from exc


def _bench(args: argparse.Namespace) -> int:
    if args.suite == "monitor":
        from sideman.web_monitor.bench import run_monitor_bench

        try:
            run_monitor_bench(quick=args.quick, model=args.model)
        except (RuntimeError, TimeoutError) as exc:
            raise CliError(str(exc)) from exc
        return 0
    if args.suite == "daemon":
        from sideman.daemon.bench import run_daemon_bench

        try:
            run_daemon_bench(quick=args.quick, model=args.model, params=args.param, threads=args.threads or 1)
        except (RuntimeError, TimeoutError) as exc:  # the child daemon did not come up
            raise CliError(str(exc)) from exc
        return 0
    from sideman.engine import bench

    if args.suite == "tokenizer":
        bench.run_tokenizer_bench(quick=args.quick)
    else:
        bench.run_generate_bench(quick=args.quick, threads=args.threads or 2)
    return 0


def _train(args: argparse.Namespace) -> int:
    from sideman.engine.train.config import RUNTIME_FIELDS, TrainConfig, TrainConfigError

    given = {name: value for name in (*_TRAIN_FLAGS, "precision", "device") if (value := getattr(args, name)) is not None}
    if args.sources:
        given["sources"] = tuple(s for text in args.sources for s in text.split(",") if s)
    fixed = [name for name in given if name not in RUNTIME_FIELDS]
    if args.resume and fixed:
        flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise CliError(f"--resume continues with the saved run's settings; drop {flags} or train into a new --out")
    if args.steps is not None and args.minutes is None:
        given["minutes"] = None  # --steps replaces the default time budget
    try:
        config = TrainConfig(out_dir=str(args.out), **given)
    except TrainConfigError as exc:
        raise CliError(exc.flag_message()) from exc

    from tqdm.contrib.logging import logging_redirect_tqdm

    from sideman.engine.train.corpus import CorpusError
    from sideman.engine.train.loop import train
    from sideman.engine.train.run_files import RunFileError
    from sideman.engine.train.runtime import TrainRuntimeError
    from sideman.engine.train.samples import SampleConfigError, SampleError

    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        logging.getLogger("sideman.engine.train").setLevel(min(logging.INFO, logging.getLogger().level))
    try:
        with logging_redirect_tqdm():  # validation lines above the progress bar, not through it
            result = train(config, resume=args.resume, progress=not args.no_progress)
    except TrainConfigError as exc:
        raise CliError(exc.flag_message()) from exc
    except (CorpusError, SampleError, SampleConfigError, RunFileError, TrainRuntimeError, *user_errors()) as exc:
        raise CliError(str(exc)) from exc
    if result.rank != 0:
        return 0 if result.stopped == "done" else 130
    if result.stopped != "done":
        print(f"stopped at step {result.step} of {result.total_steps}; continue with: sideman train --out {args.out} --resume")
    print(
        f"step {result.step}: train loss {result.final_train_loss:.4f}, val loss {result.final_val_loss:.4f}, "
        f"{result.tokens_per_second:,.0f} tokens/s; wrote {', '.join(str(p) for p in result.bundles)}"
    )
    return 0 if result.stopped == "done" else 130


if __name__ == "__main__":
    sys.exit(main())
