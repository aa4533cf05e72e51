// The rolling piano roll (canvas): the roll window's bars sized by meter, human notes filled,
// generated notes outlined, barlines with meters, the playhead, the bars being generated.
import { barQuarters, meterOf, notesIn, openJobs, playheadBar, leadBars, FINAL_STATUSES } from "./state.js";
import { el, setAttr, trackColour, trackOf, AGENT_COLOUR } from "./dom.js";
import { pitchName, programName } from "./gm.js";

const GUTTER = 34; // px, pitch labels
const HEADER = 18; // px, bar numbers and meters
const MIN_SPAN = 24; // semitones shown at least
const DRUM_ROW = 5; // px per drum sound in the drum lane
// The canvas is redrawn when its content changes, at most this often; the playhead between
// redraws is a DOM overlay moved by a compositor-only transform, so playback costs no canvas work.
const MIN_REDRAW_MS = 60;
const PLAYHEAD_STEPS = 16; // playhead positions per bar

/** The bar position now: from a fresh CLOCK (smooth), else the session playhead. */
function playheadPosition(model, nowUnix) {
  const clock = model.clock;
  if (clock && clock.period_s > 0) {
    const elapsed = nowUnix - clock.at;
    if (elapsed >= -0.5 && elapsed < clock.period_s * 2) {
      const fraction = Math.min(Math.max(elapsed / clock.period_s, 0), 1);
      return { position: clock.bar + fraction, live: elapsed < clock.period_s * 1.5 };
    }
  }
  return { position: playheadBar(model), live: false };
}

/** Bar -> start in quarters, for bars [first, last], each sized by its meter. */
function barLayout(model, first, last) {
  const starts = new Map();
  const lengths = new Map();
  let q = 0;
  for (let bar = first; bar <= last; bar++) {
    const length = barQuarters(meterOf(model, bar));
    starts.set(bar, q);
    lengths.set(bar, length);
    q += length;
  }
  const at = (barPosition) => {
    const bar = Math.floor(barPosition);
    if (!starts.has(bar)) return bar < first ? 0 : q;
    return starts.get(bar) + (barPosition - bar) * lengths.get(bar);
  };
  return { starts, lengths, at };
}

/** Pitch range covering the notes, rounded to half octaves so it does not jitter. */
function pitchRange(notes) {
  if (!notes.length) return { low: 48, high: 84 };
  let low = 127;
  let high = 0;
  for (const note of notes) {
    if (note.pitch < low) low = note.pitch;
    if (note.pitch > high) high = note.pitch;
  }
  low = Math.floor((low - 2) / 6) * 6;
  high = Math.ceil((high + 2) / 6) * 6;
  if (high - low < MIN_SPAN) {
    const grow = MIN_SPAN - (high - low);
    low -= Math.floor(grow / 2);
    high += Math.ceil(grow / 2);
  }
  return { low: Math.max(0, low), high: Math.min(127, high) };
}

export function createPianoRoll(canvas, legendNode, invalidate) {
  const context = canvas.getContext("2d", { alpha: false });
  const playheadNode = el("div", { class: "roll-playhead", "aria-hidden": "true" });
  canvas.after(playheadNode);
  let drawnKey = "";
  let lastDraw = -Infinity;
  let xOfDrawn = null; // bar position -> x of the last drawing
  let playheadX = NaN;
  let cssWidth = 0;
  let cssHeight = 0;
  let legendKey = "";
  let counts = { human: -1, generated: -1 };

  const resize = () => {
    const box = canvas.parentElement.getBoundingClientRect();
    cssWidth = Math.max(200, Math.floor(box.width));
    cssHeight = Math.max(160, Math.floor(box.height));
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
    canvas.style.width = `${cssWidth}px`;
    canvas.style.height = `${cssHeight}px`;
    context.setTransform(dpr, 0, 0, dpr, 0, 0);
    drawnKey = "";
    invalidate();
  };
  new ResizeObserver(resize).observe(canvas.parentElement);

  function renderLegend(model) {
    const tracks = model.session?.tracks ?? [];
    const key = JSON.stringify(tracks.map((t) => [t.track_id, t.program, t.is_drum, t.is_agent, t.ignore]));
    if (key === legendKey) return;
    legendKey = key;
    const items = tracks.map((t) =>
      el("span", { class: `legend-item${t.ignore ? " ignored" : ""}` },
        el("i", { class: "swatch", style: `background:${trackColour(t)}` }),
        `${t.track_id} ${programName(t.program, t.is_drum)}${t.is_agent ? " (agent)" : ""}`),
    );
    items.push(
      el("span", { class: "legend-item" }, el("i", { class: "swatch human" }), "human"),
      el("span", { class: "legend-item" }, el("i", { class: "swatch generated" }), "generated"),
      el("span", { class: "legend-item" }, el("i", { class: "swatch generating" }), "generating"),
    );
    legendNode.replaceChildren(...items);
  }

  /** Draw when the content or the playhead's bar changed (content changes throttled); move the playhead. */
  function render(model) {
    const { position, live } = playheadPosition(model, Date.now() / 1000);
    const currentBar = Math.floor(position);
    const key = `${model.version.roll}|${currentBar}|${cssWidth}x${cssHeight}`;
    const now = performance.now();
    let waiting = false;
    if (key !== drawnKey) {
      const barMoved = drawnKey.split("|")[1] !== String(currentBar);
      if (barMoved || now - lastDraw >= MIN_REDRAW_MS) {
        drawnKey = key;
        lastDraw = now;
        renderLegend(model);
        draw(model, currentBar);
      } else {
        waiting = true; // draw on a later frame
      }
    }
    movePlayhead(position);
    return live || waiting;
  }

  function movePlayhead(position) {
    if (!xOfDrawn) return;
    // Sixteenth-of-a-bar steps: every move is a composited frame, and with the model busy on one
    // core a smooth 60 fps playhead costs the daemon CPU time it needs (README, Performance).
    const x = Math.round(xOfDrawn(Math.floor(position * PLAYHEAD_STEPS) / PLAYHEAD_STEPS));
    if (x === playheadX) return;
    playheadX = x;
    playheadNode.style.transform = `translate3d(${x - 1}px, 0, 0)`;
  }

  function draw(model, currentBar) {
    const size = Math.max(1, model.limits.roll_bars);
    const last = Math.max(size, currentBar + leadBars(model)); // the window [first, last) moves a bar at a time
    const first = last - size;
    const layout = barLayout(model, first, last);
    const q0 = layout.at(first);
    const q1 = layout.at(last);
    const plotWidth = cssWidth - GUTTER;
    const plotHeight = cssHeight - HEADER;
    const xOf = (barPosition) => GUTTER + ((layout.at(barPosition) - q0) / (q1 - q0)) * plotWidth;
    xOfDrawn = (barPosition) => xOf(Math.min(Math.max(barPosition, first), last));

    const { human, generated } = notesIn(model, first, last);
    // Drum tracks get a lane of their own at the bottom: their pitches are sounds, not notes.
    const drumTracks = new Set((model.session?.tracks ?? []).filter((t) => t.is_drum).map((t) => t.track_id));
    const isDrum = (note) => drumTracks.has(note.track);
    const drumPitches = [...new Set(human.concat(generated).filter(isDrum).map((n) => n.pitch))].sort((a, b) => a - b);
    const drumLane = drumPitches.length ? drumPitches.length * DRUM_ROW + 8 : 0;
    const pitchHeight = plotHeight - drumLane;
    const { low, high } = pitchRange(human.concat(generated).filter((n) => !isDrum(n)));
    const rowHeight = pitchHeight / (high - low + 1);
    const drumRow = new Map(drumPitches.map((pitch, i) => [pitch, i]));
    const laneTop = HEADER + pitchHeight + 6;
    const yOf = (pitch) => HEADER + (high - pitch) * rowHeight;
    const yOfNote = (note) => (isDrum(note) ? laneTop + (drumPitches.length - 1 - drumRow.get(note.pitch)) * DRUM_ROW : yOf(note.pitch));
    const heightOf = (note) => (isDrum(note) ? DRUM_ROW - 1 : Math.max(2, rowHeight - 1));

    const ctx = context;
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    ctx.fillStyle = "#0b0f14";
    ctx.fillRect(0, 0, cssWidth, cssHeight);

    // Past / future shading, generating bars.
    ctx.fillStyle = "rgba(255,255,255,0.025)";
    ctx.fillRect(xOf(currentBar + 1), HEADER, cssWidth - xOf(currentBar + 1), plotHeight);
    const running = model.prompt && !FINAL_STATUSES.has(model.jobs.get(model.prompt.job_id)?.status) ? model.prompt.job_id : null;
    for (const job of openJobs(model)) {
      const bars = job.bars?.length ? job.bars : [job.target_bar];
      const isRunning = job.job_id === running;
      ctx.fillStyle = isRunning ? "rgba(255,194,75,0.2)" : "rgba(255,194,75,0.08)";
      for (const bar of bars) {
        if (bar < first || bar > last) continue;
        ctx.fillRect(xOf(bar), HEADER, xOf(bar + 1) - xOf(bar), plotHeight);
      }
    }

    // Pitch grid: C rows labelled, black keys darker.
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (let pitch = low; pitch <= high; pitch++) {
      const y = yOf(pitch);
      const black = [1, 3, 6, 8, 10].includes(pitch % 12);
      if (black) {
        ctx.fillStyle = "rgba(0,0,0,0.22)";
        ctx.fillRect(GUTTER, y, plotWidth, rowHeight);
      }
      if (rowHeight < 5 && pitch % 12 !== 0) continue;
      if (pitch % 12 === 0) {
        ctx.fillStyle = "rgba(255,255,255,0.08)";
        ctx.fillRect(GUTTER, y + rowHeight - 1, plotWidth, 1);
        ctx.fillStyle = "#8b96a5";
        ctx.fillText(pitchName(pitch), 4, y + rowHeight / 2);
      }
    }

    if (drumLane) {
      ctx.fillStyle = "rgba(255,255,255,0.035)";
      ctx.fillRect(GUTTER, laneTop - 3, plotWidth, drumLane - 2);
      ctx.fillStyle = "#8b96a5";
      ctx.textBaseline = "middle";
      ctx.fillText("drums", 2, laneTop + (drumLane - 8) / 2);
    }

    // Barlines, beats, bar numbers and meters.
    const barWidth = plotWidth / size;
    const labelEvery = barWidth >= 22 ? 1 : barWidth >= 11 ? 2 : 4;
    let previousMeter = null;
    ctx.textBaseline = "alphabetic";
    for (let bar = first; bar <= last; bar++) {
      const x = xOf(bar);
      const meter = meterOf(model, bar);
      const beats = meter[0];
      const barEnd = xOf(bar + 1);
      ctx.fillStyle = "rgba(255,255,255,0.05)";
      for (let beat = 1; beat < beats; beat++) ctx.fillRect(x + ((barEnd - x) * beat) / beats, HEADER, 1, plotHeight);
      if (x >= GUTTER) {
        ctx.fillStyle = "rgba(255,255,255,0.22)";
        ctx.fillRect(Math.round(x), HEADER - 4, 1, plotHeight + 4);
      }
      const meterChanged = !previousMeter || previousMeter[0] !== meter[0] || previousMeter[1] !== meter[1];
      previousMeter = meter;
      if (x < GUTTER || x > cssWidth - 8) continue;
      const isCurrent = bar === currentBar;
      if (bar % labelEvery === 0 || isCurrent) {
        ctx.fillStyle = isCurrent ? "#ffffff" : "#8b96a5";
        ctx.fillText(String(bar), x + 3, 12);
      }
      if (meterChanged && bar !== first) {
        ctx.fillStyle = "#ffc24b";
        ctx.fillText(`${meter[0]}/${meter[1]}`, x + 3, HEADER + 11);
      }
    }

    // Notes: human filled, generated outlined over a faint fill.
    ctx.save();
    ctx.beginPath();
    ctx.rect(GUTTER, HEADER, plotWidth, plotHeight);
    ctx.clip();
    let humanDrawn = 0;
    let generatedDrawn = 0;
    for (const note of human) {
      const track = trackOf(model, note.track);
      const x = xOf(note.bar + note.onset);
      const w = Math.max(2, xOf(note.bar + Math.min(note.onset + note.duration, 1)) - x - 1);
      if (x + w < GUTTER || x > cssWidth) continue;
      ctx.globalAlpha = track.ignore ? 0.3 : 0.5 + (0.5 * note.velocity) / 127;
      ctx.fillStyle = trackColour(track);
      ctx.fillRect(x, yOfNote(note), w, heightOf(note));
      humanDrawn += 1;
    }
    ctx.lineWidth = 1.5;
    for (const note of generated) {
      const track = trackOf(model, note.track);
      const colour = track.is_agent || !model.session ? AGENT_COLOUR : trackColour(track);
      const x = xOf(note.bar + note.onset);
      const w = Math.max(3, xOf(note.bar + Math.min(note.onset + note.duration, 1)) - x - 1);
      if (x + w < GUTTER || x > cssWidth) continue;
      const y = yOfNote(note);
      const h = heightOf(note);
      ctx.globalAlpha = 0.22;
      ctx.fillStyle = colour;
      ctx.fillRect(x, y, w, h);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = colour;
      ctx.strokeRect(x + 0.75, y + 0.75, w - 1.5, Math.max(1, h - 1.5));
      generatedDrawn += 1;
    }
    ctx.restore();
    ctx.globalAlpha = 1;

    // Gutter edge.
    ctx.fillStyle = "rgba(255,255,255,0.12)";
    ctx.fillRect(GUTTER - 1, HEADER, 1, plotHeight);

    if (humanDrawn !== counts.human || generatedDrawn !== counts.generated) {
      counts = { human: humanDrawn, generated: generatedDrawn };
      setAttr(canvas, "data-notes-human", humanDrawn);
      setAttr(canvas, "data-notes-generated", generatedDrawn);
    }
    setAttr(canvas, "data-window", `${first}-${last}`);
  }

  return { render };
}
