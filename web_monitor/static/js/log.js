// The message log: OSC in/out and local session-API calls, newest at the bottom. New lines are
// appended (never a full re-render per update); the DOM keeps at most `limits.log` lines.
import { clearLog } from "./state.js";
import { $, el, formatValue, setText } from "./dom.js";

const ARROWS = { in: "←", out: "→", local: "⇢" };
const APPEND_EVERY_MS = 200; // new lines reach the DOM in batches: a log is read, not watched per frame
// Lines live in blocks of BLOCK_LINES; sealed (older) blocks are laid out and painted only when
// scrolled into view (content-visibility), the tail block (the newest 50-100 lines) always.
const BLOCK_LINES = 50;

function formatTime(t) {
  if (t == null) return "";
  if (t > 1e9) return new Date(t * 1000).toISOString().slice(11, 23); // Unix seconds
  return t.toFixed(3);
}

/** The searchable text of a line (cached on it). */
function lineText(entry) {
  if (entry._text === undefined) {
    const args = (entry.args ?? []).map(formatValue).join(" ");
    entry._text = `${entry.dir} ${entry.peer ?? ""} ${entry.address ?? ""} ${args} ${entry.error ?? ""}`.toLowerCase();
  }
  return entry._text;
}

function lineNode(entry) {
  if (entry.skipped) return el("div", { class: "line skipped" }, `… ${entry.skipped} lines not carried (more than one batch holds)`);
  const args = (entry.args ?? []).map(formatValue).join(" ");
  return el("div", { class: `line dir-${entry.dir}${entry.error ? " error" : ""}` },
    el("span", { class: "t" }, formatTime(entry.t)),
    el("span", { class: "dir", title: entry.dir }, ARROWS[entry.dir] ?? entry.dir),
    el("span", { class: "peer" }, entry.peer ?? ""),
    el("span", { class: "address" }, entry.address ?? ""),
    el("span", { class: "args" }, args),
    entry.error ? el("span", { class: "err" }, entry.error) : null);
}

export function createLogView(invalidate) {
  const box = $("log");
  const filterInput = $("log-filter");
  const pause = $("log-pause");
  let filter = "";
  let shownSerial = 0;
  let shownEpoch = -1;
  let shown = 0;
  let model = null;
  let lastAppend = 0;
  let timer = null;
  let tail = null; // the block new lines go to; older blocks are skipped by layout when off screen
  let following = true; // keep the newest line in view until the user scrolls up
  box.addEventListener("scroll", () => {
    following = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  }, { passive: true });

  filterInput.addEventListener("input", () => {
    filter = filterInput.value.trim().toLowerCase();
    shownEpoch = -1;
    invalidate();
  });
  pause.addEventListener("change", () => {
    shownEpoch = -1;
    invalidate();
  });
  $("log-clear").addEventListener("click", () => {
    if (model) clearLog(model);
    invalidate();
  });

  const matches = (entry) => !filter || entry.skipped || lineText(entry).includes(filter);

  /** Append line nodes: into the tail block, which hands its oldest BLOCK_LINES to a sealed block when full. */
  function appendLines(nodes) {
    for (const node of nodes) {
      if (!tail) {
        tail = el("div", { class: "block" });
        box.append(tail);
      }
      tail.append(node);
      if (tail.childElementCount >= 2 * BLOCK_LINES) {
        const sealed = el("div", { class: "block sealed" });
        for (let i = 0; i < BLOCK_LINES; i++) sealed.append(tail.firstElementChild);
        box.insertBefore(sealed, tail);
      }
    }
  }

  /** Remove the oldest lines until `limit` remain. */
  function trim(limit) {
    while (shown > limit) {
      const block = box.firstElementChild;
      if (!block) break;
      const excess = shown - limit;
      if (block !== tail && block.childElementCount <= excess) {
        shown -= block.childElementCount;
        block.remove();
        continue;
      }
      block.firstElementChild?.remove();
      shown -= 1;
      if (!block.firstElementChild) {
        block.remove();
        if (block === tail) tail = null;
      }
    }
  }

  function render(m) {
    model = m;
    if (pause.checked && shownEpoch !== -1) return false;
    const now = performance.now();
    if (shownEpoch === m.logEpoch && now - lastAppend < APPEND_EVERY_MS) {
      if (!timer && (m.log.at(-1)?.n ?? 0) !== shownSerial) {
        timer = setTimeout(() => { timer = null; invalidate(); }, APPEND_EVERY_MS);
      }
      return false;
    }
    lastAppend = now;
    const limit = m.limits.log;
    if (shownEpoch !== m.logEpoch) {
      shownEpoch = m.logEpoch;
      const lines = m.log.filter(matches).slice(-limit);
      box.replaceChildren();
      tail = null;
      appendLines(lines.map(lineNode));
      shown = lines.length;
      shownSerial = m.log.at(-1)?.n ?? 0;
    } else {
      const last = m.log.at(-1)?.n ?? 0;
      if (last === shownSerial) return false;
      const fresh = [];
      for (let i = m.log.length - 1; i >= 0 && m.log[i].n > shownSerial; i--) if (matches(m.log[i])) fresh.push(m.log[i]);
      shownSerial = last;
      fresh.reverse();
      const kept = fresh.slice(-limit);
      appendLines(kept.map(lineNode));
      shown += kept.length;
      trim(limit);
    }
    if (following) box.scrollTop = 1e9; // clamped to the bottom; no layout read here
    setText($("log-count"), `${shown} line${shown === 1 ? "" : "s"}${pause.checked ? " · paused" : ""}${m.logDropped ? ` · ${m.logDropped} not carried` : ""}`);
    return false;
  }

  return { render };
}
