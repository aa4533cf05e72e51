// Generation timing against the deadline (uPlot): each finished job's latency and its budget over
// the session (x = seconds since the monitor started), outcomes other than "done" marked by shape.
import uPlot from "/vendor/uPlot.esm.js";
import { finishedJobs, timingSummary } from "./state.js";
import { $, el, formatMs, setAttr, setText } from "./dom.js";

const MARKS = {
  late: { colour: "#ff5d5d", shape: "triangle", words: "late" },
  cancelled: { colour: "#9aa4b2", shape: "ring", words: "cancelled" },
  failed: { colour: "#e26bff", shape: "cross", words: "failed" },
  dropped: { colour: "#ff9f43", shape: "square", words: "dropped" },
};
const LATENCY_COLOUR = "#5cc8ff";
const BUDGET_COLOUR = "#7d8796";

function drawMark(ctx, shape, x, y, r) {
  ctx.beginPath();
  if (shape === "triangle") {
    ctx.moveTo(x, y - r);
    ctx.lineTo(x + r, y + r * 0.8);
    ctx.lineTo(x - r, y + r * 0.8);
    ctx.closePath();
    ctx.fill();
  } else if (shape === "ring") {
    ctx.arc(x, y, r * 0.8, 0, Math.PI * 2);
    ctx.stroke();
  } else if (shape === "cross") {
    ctx.moveTo(x - r, y - r);
    ctx.lineTo(x + r, y + r);
    ctx.moveTo(x + r, y - r);
    ctx.lineTo(x - r, y + r);
    ctx.stroke();
  } else {
    ctx.rect(x - r * 0.8, y - r * 0.8, r * 1.6, r * 1.6);
    ctx.stroke();
  }
}

const axisStyle = { stroke: "#8b96a5", grid: { stroke: "rgba(255,255,255,0.06)", width: 1 }, ticks: { stroke: "rgba(255,255,255,0.1)", width: 1 } };

export function createTimingView(container) {
  let jobs = []; // the finished jobs plotted, in x order
  let yMax = 100;
  let drawn = -1;
  const hover = el("div", { class: "hover muted" }, "\u00a0");
  const key = el("div", { class: "legend" },
    el("span", { class: "legend-item" }, el("i", { class: "swatch", style: `background:${LATENCY_COLOUR}` }), "latency"),
    el("span", { class: "legend-item" }, el("i", { class: "swatch dashed", style: `border-color:${BUDGET_COLOUR}` }), "budget"),
    ...Object.values(MARKS).map((m) => el("span", { class: "legend-item" }, el("i", { class: `mark ${m.shape}`, style: `color:${m.colour}` }), m.words)),
  );
  container.after(key, hover);

  const plot = new uPlot(
    {
      width: Math.max(200, container.clientWidth),
      height: 190,
      legend: { show: false },
      cursor: { points: { size: 6 }, drag: { x: false, y: false } },
      scales: {
        x: { time: false },
        y: { range: () => [0, yMax] },
      },
      axes: [
        { ...axisStyle, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600], values: (u, ticks) => ticks.map((t) => `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}`) },
        { ...axisStyle, size: 46, label: "ms", labelSize: 14, labelFont: "11px system-ui", values: (u, ticks) => ticks.map((t) => String(t)) },
      ],
      series: [
        {},
        { label: "budget", stroke: BUDGET_COLOUR, width: 1.5, dash: [5, 4], paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, spanGaps: true },
        { label: "latency", stroke: LATENCY_COLOUR, width: 1.5, fill: "rgba(92,200,255,0.08)", points: { show: true, size: 4, fill: LATENCY_COLOUR }, spanGaps: true },
      ],
      hooks: {
        draw: [drawMarks],
        setCursor: [showHover],
      },
    },
    [[], [], []],
    container,
  );
  new ResizeObserver(() => plot.setSize({ width: Math.max(200, container.clientWidth), height: 190 })).observe(container);

  function drawMarks(u) {
    const ctx = u.ctx;
    const r = 4.5 * (window.devicePixelRatio || 1);
    ctx.save();
    ctx.lineWidth = 2 * (window.devicePixelRatio || 1);
    for (const job of jobs) {
      const mark = MARKS[job.status];
      if (!mark) continue;
      const x = u.valToPos(job.t ?? 0, "x", true);
      const y = u.valToPos(Math.min(job.latency_ms ?? 0, yMax), "y", true);
      ctx.fillStyle = mark.colour;
      ctx.strokeStyle = mark.colour;
      drawMark(ctx, mark.shape, x, y, r);
    }
    ctx.restore();
  }

  function showHover(u) {
    const index = u.cursor.idx;
    const job = index != null ? jobs[index] : null;
    if (!job) {
      setText(hover, "\u00a0");
      return;
    }
    const reason = job.reason ? ` (${job.reason})` : "";
    setText(hover, `job ${job.job_id} → bar ${job.target_bar}: ${job.status}${reason} · ${formatMs(job.latency_ms)} of ${formatMs(job.budget_ms)} · slack ${formatMs(job.slack_ms)}`);
  }

  function renderReadout(model) {
    const summary = timingSummary(model);
    setText($("timing-last"), formatMs(summary.last));
    setText($("timing-avg"), formatMs(summary.average));
    setText($("timing-slack"), formatMs(summary.slack));
    setText($("timing-budget"), formatMs(summary.budget));
    setText($("timing-bar"), formatMs(summary.barMs));
    const verdict = $("timing-verdict");
    setText(verdict, summary.verdict ?? "—");
    setAttr(verdict, "data-verdict", summary.verdict ?? "");
    const order = ["queued", "done", "late", "cancelled", "dropped", "failed"];
    const counts = { ...summary.counts, ...(model.session?.jobs ?? {}) }; // the daemon's totals win
    const parts = order.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`);
    setText($("timing-counts"), parts.length ? parts.join(" · ") : "no jobs yet");
  }

  function render(model) {
    const version = model.version.jobs * 1000003 + model.version.session;
    if (version === drawn) return false;
    drawn = version;
    renderReadout(model);
    jobs = finishedJobs(model);
    const xs = jobs.map((j) => j.t ?? 0);
    const budgets = jobs.map((j) => j.budget_ms ?? null);
    const latencies = jobs.map((j) => ((j.status === "done" || j.status === "late") && j.latency_ms != null ? j.latency_ms : null));
    let top = 0;
    for (const job of jobs) top = Math.max(top, job.latency_ms ?? 0, job.budget_ms ?? 0);
    yMax = Math.max(100, top * 1.12);
    plot.setData([xs, budgets, latencies]);
    setAttr(container, "data-jobs", jobs.length);
    return false;
  }

  return { render };
}
