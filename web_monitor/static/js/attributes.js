// The agent's attributes per generated bar (uPlot): one lane per attribute with its realised
// feature (solid, divided by its maximum in view), requested level (dashed) and sampled level (wide
// steps), levels over their own range; attributes the checkpoint lacks are not plotted.
import uPlot from "/vendor/uPlot.esm.js";
import { agentTracks, attrsOf } from "./state.js";
import { el, setAttr, setText, formatValue } from "./dom.js";

const COLOURS = {
  tension: "#ff8f6b",
  note_density: "#5cc8ff",
  min_polyphony: "#7ee787",
  max_polyphony: "#c297ff",
  min_note_duration: "#ff9bce",
  max_note_duration: "#ffc24b",
  mean_pitch: "#56d4bc",
  mean_velocity: "#a5b4fc",
  mean_duration: "#e6db74",
};
const SHORT = {
  tension: "tension", note_density: "density", min_polyphony: "min poly", max_polyphony: "max poly",
  min_note_duration: "min dur", max_note_duration: "max dur", mean_pitch: "mean pitch",
  mean_velocity: "mean vel", mean_duration: "mean dur",
};
// Realised features with no attribute of their own: shown on demand.
const EXTRA_FEATURES = ["mean_pitch", "mean_velocity", "mean_duration"];

/** Attribute entries of `info.attributes` (the capability flags are not attributes). */
export function attributeEntries(info) {
  return (info?.attributes ?? []).filter((a) => !a.name.startsWith("supports_"));
}

export function isSupported(info, attribute) {
  return attribute.supported !== false && attribute.levels > 0 && info?.capabilities?.[attribute.name] !== false;
}

function hexAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},${alpha})`;
}

const axisStyle = { stroke: "#8b96a5", grid: { stroke: "rgba(255,255,255,0.06)", width: 1 }, ticks: { stroke: "rgba(255,255,255,0.1)", width: 1 } };

export function createAttributeView(container, chipsNode, trackSelect, invalidate) {
  let plot = null;
  let lanes = 0;
  let layoutKey = "";
  let drawn = "";
  let groups = []; // {name, levels, labels, supported, realised, requested, sampled: series index | null}
  let raw = []; // raw values per series index, for the readouts
  let bars = [];
  const hidden = new Set(EXTRA_FEATURES); // groups the user switched off
  let selectedTrack = null;

  trackSelect.addEventListener("change", () => {
    selectedTrack = Number(trackSelect.value);
    drawn = "";
    invalidate();
  });

  function build(info) {
    const attributes = attributeEntries(info);
    groups = attributes.map((a) => ({ name: a.name, levels: a.levels, labels: a.labels ?? [], supported: isSupported(info, a), hasRealised: a.name !== "tension" }));
    for (const name of EXTRA_FEATURES) groups.push({ name, levels: 0, labels: [], supported: true, hasRealised: true, extra: true });
    buildPlot();
    buildChips();
  }

  /** One lane per shown attribute, top to bottom; each series normalised into its lane. */
  function buildPlot() {
    const shown = groups.filter((g) => g.supported && !hidden.has(g.name));
    lanes = shown.length;
    const series = [{}];
    for (const group of groups) {
      group.realised = group.requested = group.sampled = null;
      group.lane = null;
    }
    shown.forEach((group, index) => {
      group.lane = lanes - 1 - index;
      const colour = COLOURS[group.name] ?? "#cccccc";
      if (!group.extra) {
        group.sampled = series.length;
        series.push({ stroke: hexAlpha(colour, 0.3), width: 6, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } });
        group.requested = series.length;
        series.push({ stroke: colour, width: 1.5, dash: [5, 4], paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } });
      }
      if (group.hasRealised) {
        group.realised = series.length;
        series.push({ stroke: colour, width: 2, points: { show: true, size: 4, fill: colour } });
      }
    });
    const laneNames = new Map(shown.map((g) => [g.lane + 0.5, SHORT[g.name] ?? g.name]));
    plot?.destroy();
    plot = new uPlot(
      {
        width: Math.max(200, container.clientWidth),
        height: plotHeight(),
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { size: 5 } },
        scales: { x: { time: false }, y: { range: () => [0, Math.max(1, lanes)] } },
        axes: [
          { ...axisStyle, label: "bar", labelSize: 14, labelFont: "11px system-ui", values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : "")) },
          { ...axisStyle, grid: { show: false }, size: 76, gap: 4, splits: () => [...laneNames.keys()], values: (u, ticks) => ticks.map((t) => laneNames.get(t) ?? "") },
        ],
        series,
        hooks: { setCursor: [(u) => renderReadouts(u.cursor.idx)], drawClear: [drawLanes] },
      },
      [[], ...series.slice(1).map(() => [])],
      container,
    );
    drawn = "";
  }

  function plotHeight() {
    return Math.max(120, 34 * lanes + 40);
  }

  function drawLanes(u) {
    const ctx = u.ctx;
    const { left, width } = u.bbox;
    ctx.save();
    for (let lane = 0; lane < lanes; lane++) {
      const top = u.valToPos(lane + 1, "y", true);
      const bottom = u.valToPos(lane, "y", true);
      ctx.fillStyle = lane % 2 ? "rgba(255,255,255,0.025)" : "rgba(0,0,0,0.12)";
      ctx.fillRect(left, top, width, bottom - top);
    }
    ctx.restore();
  }

  function buildChips() {
    chipsNode.replaceChildren(
      ...groups.map((group) => {
        const chip = el("button", {
          type: "button",
          class: `chip${group.supported ? "" : " unsupported"}${hidden.has(group.name) ? " off" : ""}`,
          "data-attr": group.name,
          disabled: !group.supported,
          title: group.supported ? "show / hide" : "not supported by this checkpoint",
        },
        el("i", { class: "swatch", style: `background:${COLOURS[group.name] ?? "#ccc"}` }),
        el("span", { class: "chip-name" }, group.name.replaceAll("_", " ")),
        el("span", { class: "chip-values" }, group.supported ? "" : "n/a"));
        chip.addEventListener("click", () => toggle(group, chip));
        group.chip = chip;
        return chip;
      }),
    );
  }

  function toggle(group, chip) {
    const show = hidden.has(group.name);
    if (show) hidden.delete(group.name);
    else hidden.add(group.name);
    chip.classList.toggle("off", !show);
    buildPlot();
    invalidate();
  }

  function levelText(group, level) {
    if (level == null) return "–";
    return group.labels[level] ?? String(level);
  }

  /** Chip readouts at bar index `index` (the cursor), else the latest bar. */
  function renderReadouts(index) {
    const at = index ?? bars.length - 1;
    for (const group of groups) {
      if (!group.supported || !group.chip) continue;
      const parts = [];
      if (group.realised != null) {
        const value = raw[group.realised]?.[at];
        parts.push(`r ${value == null ? "–" : formatValue(value)}`);
      }
      if (group.requested != null) parts.push(`q ${levelText(group, raw[group.requested]?.[at])}`);
      if (group.sampled != null) parts.push(`s ${levelText(group, raw[group.sampled]?.[at])}`);
      setText(group.chip.lastChild, parts.join(" · "));
    }
  }

  function chooseTrack(model) {
    const tracks = agentTracks(model);
    const key = tracks.join(",");
    if (trackSelect.dataset.tracks !== key) {
      trackSelect.dataset.tracks = key;
      trackSelect.replaceChildren(...tracks.map((t) => el("option", { value: t }, `agent ${t}`)));
      trackSelect.hidden = tracks.length < 2;
    }
    if (selectedTrack == null || !tracks.includes(selectedTrack)) selectedTrack = tracks[0] ?? null;
    if (selectedTrack != null) trackSelect.value = String(selectedTrack);
    return selectedTrack;
  }

  const inLane = (group, normalised) => group.lane + 0.1 + 0.8 * normalised;

  function render(model) {
    const info = model.info;
    const key = JSON.stringify([info?.attributes ?? null, info?.capabilities ?? null]);
    if (key !== layoutKey) {
      layoutKey = key;
      build(info);
      drawn = "";
    }
    const track = chooseTrack(model);
    const version = `${model.version.attrs}|${track}|${layoutKey.length}`;
    if (version === drawn) return false;
    drawn = version;
    const entries = track == null ? [] : attrsOf(model, track);
    bars = entries.map((e) => e.bar);
    const data = [bars];
    raw = [bars];
    for (let i = 1; i < plot.series.length; i++) {
      data.push(null);
      raw.push(null);
    }
    for (const group of groups) {
      if (group.lane == null) continue;
      if (group.realised != null) {
        const values = entries.map((e) => (e.realised ? (e.realised[group.name] ?? null) : null));
        let top = 0;
        for (const v of values) if (v != null) top = Math.max(top, Math.abs(v));
        raw[group.realised] = values;
        data[group.realised] = values.map((v) => (v == null ? null : inLane(group, top > 0 ? v / top : 0)));
      }
      const scale = Math.max(1, group.levels - 1);
      if (group.requested != null) {
        const levels = entries.map((e) => (e.requested?.[group.name] >= 0 ? e.requested[group.name] : null));
        raw[group.requested] = levels;
        data[group.requested] = levels.map((v) => (v == null ? null : inLane(group, v / scale)));
      }
      if (group.sampled != null) {
        const levels = entries.map((e) => (e.sampled?.[group.name] >= 0 ? e.sampled[group.name] : null));
        raw[group.sampled] = levels;
        data[group.sampled] = levels.map((v) => (v == null ? null : inLane(group, v / scale)));
      }
    }
    plot.setData(data.map((series) => series ?? bars.map(() => null)));
    setAttr(container, "data-bars", bars.length);
    renderReadouts(null);
    return false;
  }

  new ResizeObserver(() => plot?.setSize({ width: Math.max(200, container.clientWidth), height: plotHeight() })).observe(container);
  return { render };
}
