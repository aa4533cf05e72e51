"""The ``sideman eval`` report: per-sample metrics aggregated per system, as JSON and Markdown.

``build_report`` returns a dict that ``json.dumps(..., allow_nan=False)`` accepts (undefined
values are None) and that ``render_markdown`` turns into the human-readable page; rendering only
reads that dict, so a report loaded back from JSON renders the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sideman.engine.train.metrics import MetricInputError, note_density_nrmse

MODEL = "model"
RANDOM_INIT = "random-init"
COPY_PREVIOUS_BAR = "copy previous bar"
GROUND_TRUTH = "ground truth"

HIGHER = "higher"  # a similarity: ground truth scores 1
LOWER = "lower"  # an error: ground truth scores 0
MATCH = "match"  # a rate or ratio: closest to the ground truth's own value wins


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    goal: str  # HIGHER, LOWER or MATCH


INFILL_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("chroma_similarity", "Chroma similarity", HIGHER),
    MetricSpec("groove_similarity", "Groove similarity", HIGHER),
    MetricSpec("note_density_nrmse", "Note-density NRMSE", LOWER),
    MetricSpec("pitch_range_error", "Pitch-range error (semitones)", LOWER),
    MetricSpec("in_key_ratio", "In-key ratio", MATCH),
    MetricSpec("scale_consistency", "Scale consistency", MATCH),
    MetricSpec("copies_context", "Copies a context bar (rate)", MATCH),
    MetricSpec("memorised", "Copies a training bar (rate)", MATCH),
    MetricSpec("empty_bar", "Empty bar (rate)", MATCH),
)
# The NRMSE is one figure over all samples, computed from these two per-sample columns.
_NRMSE_COLUMNS = ("notes_per_beat", "reference_notes_per_beat")
SAMPLE_KEYS: tuple[str, ...] = (
    tuple(s.key for s in INFILL_METRICS if s.key != "note_density_nrmse") + _NRMSE_COLUMNS
)
_GOAL_TEXT = {HIGHER: "↑ (1 = truth)", LOWER: "↓ (0 = truth)", MATCH: "≈ ground truth"}
_ADHERENCE_COLUMNS = (
    ("exact_accuracy", "Exact"),
    ("within_one_accuracy", "Within one"),
    ("mean_abs_distance", "Mean abs. bin distance"),
)


def summarise(values: Iterable[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the finite values."""
    array = np.asarray(list(values), dtype=np.float64)
    finite = array[np.isfinite(array)]
    if len(finite) == 0:
        return {"mean": None, "std": None, "n": 0}
    std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "n": int(len(finite))}


def summarise_timings(milliseconds: Iterable[float]) -> dict[str, Any]:
    """n, mean, median, 95th percentile, min and max of per-bar generation times."""
    ms = np.asarray(list(milliseconds), dtype=np.float64)
    if len(ms) == 0:
        return {"n": 0, "mean": None, "median": None, "p95": None, "min": None, "max": None}
    return {
        "n": int(len(ms)),
        "mean": float(ms.mean()),
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


YES, NO, TIE = "yes", "no", "tie"
_TIE_TOLERANCE = 1e-9


def _closer(
    model: float | None, baselines: list[float | None], target: float | None, goal: str
) -> str | None:
    """"yes" when the model is strictly closer to the ground truth than every baseline with a
    value, "tie" when it is never further but level with one of them, "no" when a baseline is
    closer; None when undecidable (no model value, no baseline, MATCH without the truth)."""
    scored = [b for b in baselines if b is not None]
    if model is None or not scored:
        return None
    if goal == HIGHER:
        margins = [model - b for b in scored]
    elif goal == LOWER:
        margins = [b - model for b in scored]
    elif target is None:
        return None
    else:
        margins = [abs(b - target) - abs(model - target) for b in scored]
    if all(m > _TIE_TOLERANCE for m in margins):
        return YES
    return TIE if all(m >= -_TIE_TOLERANCE for m in margins) else NO


@dataclass(frozen=True)
class InfillComparison:
    """Per-sample infill metric dicts (``infill_sample_metrics``) of each system, side by side.

    ``ground_truth`` names the optional system whose samples are the original bars measured
    against themselves; MATCH metrics need it for a verdict.
    """

    samples: Mapping[str, Sequence[Mapping[str, float]]]
    model: str = MODEL
    baselines: tuple[str, ...] = (RANDOM_INIT, COPY_PREVIOUS_BAR)
    ground_truth: str = GROUND_TRUTH

    def __post_init__(self) -> None:
        for name in (self.model, *self.baselines):
            if name not in self.samples:
                raise MetricInputError(
                    f"infill samples have no system {name!r}; got {sorted(self.samples)}"
                )
        for name, rows in self.samples.items():
            for i, row in enumerate(rows):
                missing = [key for key in SAMPLE_KEYS if key not in row]
                if missing:
                    raise MetricInputError(
                        f"infill sample {i} of {name!r} lacks {', '.join(missing)}"
                    )

    @property
    def systems(self) -> tuple[str, ...]:
        truth = (self.ground_truth,) if self.ground_truth in self.samples else ()
        return (self.model, *self.baselines, *truth)

    def _system_summary(self, rows: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
        out = {}
        for spec in INFILL_METRICS:
            if spec.key == "note_density_nrmse":
                generated, reference = ([r[c] for r in rows] for c in _NRMSE_COLUMNS)
                value = note_density_nrmse(generated, reference)
                mean = value if math.isfinite(value) else None
                out[spec.key] = {"mean": mean, "std": None, "n": len(rows)}
            else:
                out[spec.key] = summarise(r[spec.key] for r in rows)
        return out

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """system → metric → {mean, std, n} (NRMSE is one figure over all samples: std None)."""
        return {name: self._system_summary(self.samples[name]) for name in self.systems}

    def verdicts(
        self, summary: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
    ) -> dict[str, str | None]:
        """metric → "yes"/"tie"/"no": is the model closer to the ground truth than every baseline
        (``_closer``); None where undecidable."""
        summary = self.summary() if summary is None else summary
        truth = summary.get(self.ground_truth)
        out: dict[str, str | None] = {}
        for spec in INFILL_METRICS:
            out[spec.key] = _closer(
                summary[self.model][spec.key]["mean"],
                [summary[b][spec.key]["mean"] for b in self.baselines],
                truth[spec.key]["mean"] if truth is not None else None,
                spec.goal,
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        summary = self.summary()
        return {
            "model": self.model,
            "baselines": list(self.baselines),
            "ground_truth": self.ground_truth if self.ground_truth in self.samples else None,
            "systems": list(self.systems),
            "metrics": [{"key": s.key, "label": s.label, "goal": s.goal} for s in INFILL_METRICS],
            "summary": summary,
            "closer_than_baselines": self.verdicts(summary),
        }


def _adherence_section(by_system: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    if MODEL not in by_system:
        raise MetricInputError(
            f"adherence results have no {MODEL!r} system; got {sorted(by_system)}"
        )
    model, random = by_system[MODEL], by_system.get(RANDOM_INIT, {})
    verdicts: dict[str, bool | None] = {}
    for attribute, figures in model.items():
        other = random.get(attribute)
        keys = ("exact_accuracy", "mean_abs_distance")
        if other is None or not all(_finite(d.get(k)) for d in (figures, other) for k in keys):
            verdicts[attribute] = None
            continue
        verdicts[attribute] = bool(
            figures["exact_accuracy"] > other["exact_accuracy"]
            and figures["mean_abs_distance"] < other["mean_abs_distance"]
        )
    return {
        "systems": {k: dict(v) for k, v in by_system.items()},
        "model_beats_random_init": verdicts,
    }


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/inf → None, numpy scalars and arrays → Python, tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def build_report(
    checkpoint: str,
    *,
    validation_loss: float | None = None,
    validation_tokens: int | None = None,
    validation_voices: tuple[float, int] | None = None,
    adherence: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    infill: InfillComparison | None = None,
    realtime_ms: Mapping[str, Iterable[float]] | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole evaluation as a JSON-able dict; a section passed as None is reported as None.

    ``validation_loss`` is the mean cross-entropy in nats per token (perplexity = e^loss) on the
    training mix of samples; ``validation_voices`` (loss, tokens) the same on the voices as written
    (no reduction, rescaling, re-articulation or holding), comparable across runs with other
    augmentation shares;
    ``adherence`` maps system ("model", "random-init") → attribute → ``adherence(...)`` dict;
    ``realtime_ms`` maps inference precision ("fp32", "int8", ...) → the times to generate one bar
    of one voice with 1 torch thread; the first precision is the one the quality sections ran.
    """
    validation = None
    if validation_loss is not None:
        validation = _loss_entry(validation_loss, validation_tokens)
        if validation_voices is not None:
            validation["voices_only"] = _loss_entry(*validation_voices)
    report = {
        "checkpoint": checkpoint,
        "info": dict(info or {}),
        "validation": validation,
        "adherence": _adherence_section(adherence) if adherence is not None else None,
        "infill": infill.to_dict() if infill is not None else None,
        "realtime": _realtime_section(realtime_ms) if realtime_ms is not None else None,
    }
    return _jsonable(report)


# ---- Markdown ----------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"


def _yes_no(verdict: bool | str | None) -> str:
    if verdict is None:
        return "n/a"
    if isinstance(verdict, str):
        return verdict
    return YES if verdict else NO


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _stat_cell(stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return f"— (n={stats['n']})"
    if stats["std"] is None:
        return f"{_fmt(stats['mean'])} (n={stats['n']})"
    return f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])} (n={stats['n']})"


def _loss_entry(loss: float, tokens: int | None) -> dict[str, Any]:
    return {
        "loss_nats_per_token": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "tokens": tokens,
    }


VOICES_AS_WRITTEN = "voices as written (no reduction, rescaling, re-articulation or holding)"


def _validation_lines(validation: Mapping[str, Any]) -> list[str]:
    entries = [("training mix", validation)]
    if validation.get("voices_only"):
        entries.append((VOICES_AS_WRITTEN, validation["voices_only"]))
    rows = [
        [
            name,
            _fmt(entry["loss_nats_per_token"], 4),
            _fmt(entry["perplexity"], 3),
            "—" if entry["tokens"] is None else str(entry["tokens"]),
        ]
        for name, entry in entries
    ]
    header = ["Samples", "Loss (nats/token)", "Perplexity", "Tokens"]
    return ["## Validation", "", *_table(header, rows)]


def _adherence_lines(section: Mapping[str, Any]) -> list[str]:
    systems = section["systems"]
    names = [MODEL] + [RANDOM_INIT] * (RANDOM_INIT in systems)
    header = ["Attribute", "Levels", "Samples"]
    header += [f"{label} ({name})" for _, label in _ADHERENCE_COLUMNS for name in names]
    header.append("Model beats random-init")
    rows = []
    for attribute, figures in systems[MODEL].items():
        row = [attribute, str(figures["n_levels"]), str(figures["n"])]
        for key, _ in _ADHERENCE_COLUMNS:
            row += [_fmt(systems[name].get(attribute, {}).get(key)) for name in names]
        row.append(_yes_no(section["model_beats_random_init"].get(attribute)))
        rows.append(row)
    lines = ["## Attribute-control adherence", "", *_table(header, rows)]
    lines += _trained_level_lines(systems, names)
    lines += ["", "Confusion matrices: rows are the requested level, columns the realised level."]
    for attribute in systems[MODEL]:
        for name in names:
            matrix = systems[name].get(attribute, {}).get("confusion")
            if matrix is None:
                continue
            levels = [str(i) for i in range(len(matrix))]
            body = ([str(r), *map(str, counts)] for r, counts in enumerate(matrix))
            lines += [
                "",
                f"### {attribute} ({name})",
                "",
                *_table(["requested \\ realised", *levels], body),
            ]
    return lines


def _trained_level_lines(systems: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The same figures restricted to the levels the training data holds (when known)."""
    model = systems[MODEL]
    if not any("on_trained_levels" in figures for figures in model.values()):
        return []
    header = ["Attribute", "Levels in the training data", "Samples"]
    header += [f"{label} ({name})" for _, label in _ADHERENCE_COLUMNS for name in names]
    rows = []
    for attribute, figures in model.items():
        subset = figures.get("on_trained_levels")
        if subset is None:
            continue
        levels = figures["trained_levels"]
        row = [attribute, ", ".join(map(str, levels)) or "none", str(subset["n"])]
        for key, _ in _ADHERENCE_COLUMNS:
            row += [
                _fmt(systems[name].get(attribute, {}).get("on_trained_levels", {}).get(key))
                for name in names
            ]
        rows.append(row)
    return [
        "",
        "Requests of the levels the training data holds (each carried by at least 0.5% of the "
        "training tracks):",
        "",
        *_table(header, rows),
    ]


def _infill_lines(section: Mapping[str, Any]) -> list[str]:
    systems, summary = section["systems"], section["summary"]
    header = ["Metric", "Goal", *systems, "Closer to ground truth than both baselines"]
    rows = [
        [
            spec["label"],
            _GOAL_TEXT[spec["goal"]],
            *(_stat_cell(summary[name][spec["key"]]) for name in systems),
            _yes_no(section["closer_than_baselines"][spec["key"]]),
        ]
        for spec in section["metrics"]
    ]
    baselines = " and ".join(f"'{b}'" for b in section["baselines"])
    return [
        "## Infill (one voice of one held-out bar, other voices as context)",
        "",
        f"Mean ± standard deviation over samples; baselines {baselines}. Last column: yes = "
        "strictly closer to the ground truth than both baselines, tie = level with one and "
        "further from neither, no = a baseline is closer.",
        "",
        *_table(header, rows),
    ]


def _realtime_section(timings: Mapping[str, Iterable[float]]) -> dict[str, Any]:
    """``ms_per_bar`` of the first precision (the quality sections'), and every precision's."""
    by_precision = {name: summarise_timings(ms) for name, ms in timings.items()}
    first = next(iter(by_precision.values()), summarise_timings([]))
    return {"ms_per_bar": first, "by_precision": by_precision}


def _realtime_lines(section: Mapping[str, Any]) -> list[str]:
    by_precision = section.get("by_precision") or {"fp32": section["ms_per_bar"]}
    rows = [
        [name] + [_fmt(stats[k], 2) for k in ("mean", "median", "p95", "min", "max")] + [str(stats["n"])]
        for name, stats in by_precision.items()
    ]
    header = ["Precision", "Mean (ms)", "Median (ms)", "p95 (ms)", "Min (ms)", "Max (ms)", "Bars"]
    note = (
        "The quality sections ran the first precision; `sideman serve` runs the last by default "
        "(`--precision auto`)."
    )
    return ["## Real-time cost (one bar of one voice, 1 torch thread)", "", note, "", *_table(header, rows)]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: one table per section, each metric beside its baselines."""
    lines = [f"# Evaluation of `{report['checkpoint']}`", ""]
    lines += [f"- {key}: {value}" for key, value in report.get("info", {}).items()]
    sections = (
        ("validation", _validation_lines),
        ("adherence", _adherence_lines),
        ("infill", _infill_lines),
        ("realtime", _realtime_lines),
    )
    for key, render in sections:
        if report.get(key) is not None:
            lines += ["", *render(report[key])]
    return "\n".join(lines) + "\n"
