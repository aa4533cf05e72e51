"""``sideman eval CHECKPOINT``: the evaluation report of a model, printed and written as
``eval.json`` and ``eval.md``. Parsing imports neither torch nor the engine."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

# flag → (help, type where the EvalConfig default does not give it)
_EVAL_FLAGS: dict[str, tuple[str, type | None]] = {
    "val_fraction": ("share of pieces held out (must match the training run)", None),
    "split_seed": ("seed of the train/held-out split (the training run's --seed)", None),
    "limit": ("use at most this many pieces per source (quick runs)", int),
    "cache_dir": ("corpus cache folder (default: ~/.cache/sideman/corpus)", str),
    "workers": ("corpus extraction processes", None),
    "validation_samples": ("validation sequences scored", None),
    "max_len": ("tokens per validation sequence", None),
    "adherence_samples": ("generations per attribute level and system", None),
    "infill_samples": ("held-out cells (one voice, one bar) regenerated per system", None),
    "window_bars": ("bars of context window (4 or 8)", None),
    "temperature": ("sampling temperature of every generation", None),
    "num_candidates": ("candidates per generation, one kept as serve keeps it (serve's default)", None),
    "seed": ("seed of the cases and of sampling", None),
    "baseline_seed": ("seed of the random-init model's weights", None),
    "threads": ("torch threads (1: the daemon's serving setting)", None),
}


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    from sideman.daemon.cli import add_config_flags
    from sideman.engine.train.config import EVAL_SECTIONS, EvalConfig

    defaults = EvalConfig()
    parser = sub.add_parser(
        "eval",
        help="evaluate a model on held-out pieces: loss, attribute adherence, infill, ms per bar",
        description="Evaluate a checkpoint on the held-out pieces of the training split: validation "
        "loss and perplexity, attribute-control adherence and infill quality beside a random-init "
        "model (and, for infill, 'copy the previous bar' and the original), and the time to "
        "generate one bar of one voice with 1 torch thread. Prints the Markdown report and writes "
        "eval.json and eval.md into --out.",
    )
    parser.add_argument("checkpoint", help="bundle (.safetensors or .pt) or a shipped model name, e.g. default")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: eval-<checkpoint name>)")
    parser.add_argument(
        "--sources", nargs="+", default=None,
        help="the training run's --sources (default: bach)",
    )  # fmt: skip
    parser.add_argument(
        "--sections", nargs="+", choices=EVAL_SECTIONS, default=None,
        help="what to measure (default: all)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(parser, _EVAL_FLAGS, defaults)


def run_eval(args: argparse.Namespace, cli_error: type[Exception], user_errors: tuple) -> int:
    from sideman.engine.train.config import EvalConfig, EvalConfigError

    given = {name: value for name in _EVAL_FLAGS if (value := getattr(args, name)) is not None}
    if args.sources:
        given["sources"] = tuple(s for text in args.sources for s in text.split(",") if s)
    if args.sections:
        given["sections"] = tuple(args.sections)
    try:
        config = EvalConfig(progress=not args.no_progress, **given)
    except EvalConfigError as exc:
        raise cli_error(exc.flag_message()) from exc
    out = args.out or Path(f"eval-{Path(args.checkpoint).stem}")

    from tqdm.contrib.logging import logging_redirect_tqdm

    from sideman.engine.train.corpus import CorpusError
    from sideman.engine.train.evaluate import evaluate, write_report
    from sideman.engine.train.report import render_markdown
    from sideman.engine.train.samples import SampleConfigError, SampleError

    logging.getLogger("sideman.engine.train").setLevel(min(logging.INFO, logging.getLogger().level))
    try:
        with logging_redirect_tqdm():
            report = evaluate(args.checkpoint, config)
    except EvalConfigError as exc:
        raise cli_error(exc.flag_message()) from exc
    except (CorpusError, SampleError, SampleConfigError, *user_errors) as exc:
        raise cli_error(str(exc)) from exc
    print(render_markdown(report))
    json_path, md_path = write_report(report, out)
    print(f"wrote {json_path} and {md_path} ({report['info']['eval_seconds']:.0f} s)")
    return 0
