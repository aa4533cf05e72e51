// The prompt window the engine actually used for the last job (`/midigpt/prompt/state`):
// one row per track, one cell per bar of [start_bar, end_bar), coloured by its state letter.
import { el, setAttr, setText, trackColour } from "./dom.js";
import { programName } from "./gm.js";
import { playheadBar } from "./state.js";

const STATES = [
  ["C", "context"],
  ["T", "to generate"],
  ["M", "masked (token / remove)"],
  ["A", "masked (attention)"],
];
const KNOWN = new Set(STATES.map(([letter]) => letter));

export function createPromptView(grid, caption, legend) {
  let drawn = "";
  legend.replaceChildren(
    ...STATES.map(([letter, words]) =>
      el("span", { class: "legend-item" }, el("i", { class: `cell-swatch state-${letter}` }, letter), words)),
    el("span", { class: "legend-item" }, el("i", { class: "cell-swatch state-other" }, "?"), "other (letter shown)"),
    el("span", { class: "legend-item" }, el("i", { class: "cell-swatch target" }), "target bar"),
  );

  /** The session track a prompt row describes: rows are numbered by the session's track order. */
  function rowTrack(model, row, index) {
    const tracks = model.session?.tracks ?? [];
    const byIndex = tracks[row.id] ?? tracks[index];
    if (byIndex && byIndex.is_agent === row.is_agent) return byIndex;
    return tracks.find((t) => t.track_id === row.id) ?? null;
  }

  function render(model) {
    const prompt = model.prompt;
    const playhead = playheadBar(model);
    const key = `${model.version.prompt}|${playhead}|${model.version.session}|${model.version.jobs}`;
    if (key === drawn) return false;
    drawn = key;
    if (!prompt || prompt.start_bar == null) {
      grid.replaceChildren(el("div", { class: "empty" }, "no prompt yet: it appears with the first job"));
      setAttr(grid, "data-job-id", "");
      setText(caption, "no job yet");
      return false;
    }
    const bars = [];
    for (let bar = prompt.start_bar; bar < prompt.end_bar; bar++) bars.push(bar);
    grid.style.gridTemplateColumns = `minmax(6.5em, max-content) repeat(${bars.length}, minmax(1.6em, 1fr))`;
    const cells = [el("div", { class: "corner" }, "bar")];
    for (const bar of bars) {
      const classes = ["bar-head"];
      if (bar === prompt.target_bar) classes.push("target");
      if (bar === playhead) classes.push("now");
      cells.push(el("div", { class: classes.join(" "), title: bar === playhead ? "playhead" : "" }, String(bar)));
    }
    prompt.tracks.forEach((row, index) => {
      const track = rowTrack(model, row, index);
      const name = track ? `${track.track_id} ${programName(track.program, track.is_drum)}` : `#${row.id}`;
      cells.push(
        el("div", { class: "row-head", title: name },
          el("i", { class: "swatch", style: `background:${trackColour(track ?? { is_agent: row.is_agent, track_id: row.id })}` }),
          row.is_agent ? `${name} · agent` : name),
      );
      bars.forEach((bar, i) => {
        const letter = row.states[i] ?? "";
        const classes = ["cell", KNOWN.has(letter) ? `state-${letter}` : "state-other"];
        if (bar === prompt.target_bar) classes.push("target");
        if (bar < playhead) classes.push("past");
        cells.push(el("div", { class: classes.join(" "), title: `bar ${bar}: ${letter}` }, letter));
      });
    });
    grid.replaceChildren(...cells);
    setAttr(grid, "data-job-id", prompt.job_id ?? "");
    const job = prompt.job_id != null ? model.jobs.get(prompt.job_id) : null;
    const outcome = job && job.status !== "queued" ? ` · ${job.status}` : " · running";
    setText(caption, `job ${prompt.job_id ?? "?"} → bar ${prompt.target_bar} · window ${prompt.start_bar}–${prompt.end_bar - 1}${outcome}`);
    return false;
  }

  return { render };
}
