// The page's model of the monitor: snapshot + updates folded into bounded maps (socket_events.md).
// Pure: no DOM, no timers, no sockets, so it runs under `node --test`. Views read the model and
// compare `model.version[part]` with what they drew last; nothing here knows about views.

export const DEFAULT_LIMITS = Object.freeze({ roll_bars: 32, jobs: 256, attrs: 256, log: 500 });
export const FINAL_STATUSES = new Set(["done", "late", "cancelled", "failed", "dropped"]);
const PENDING_LIMIT = 400; // updates held while a snapshot is awaited; older ones are covered by it
const CLOCK_LIMIT = 16; // clocks remembered (audio looks up the clock of a bar)

/** An empty model, waiting for its first snapshot. */
export function createModel() {
  return {
    seq: null, // the last update applied (or folded into the snapshot)
    awaitingSnapshot: true, // updates are buffered until a snapshot arrives
    pending: [],
    info: null,
    limits: { ...DEFAULT_LIMITS },
    session: null,
    demo: null,
    prompt: null,
    closedBars: new Map(), // bar -> BAR
    meters: new Map(), // bar -> [num, den], from closed bars, clocks and generated bars
    human: new Map(), // "track:bar" -> NOTE[]
    generated: new Map(), // "track:bar" -> NOTE[] (a GENBAR replaces the entry)
    jobs: new Map(), // job_id -> the job's reports merged (queued, then its outcome)
    attrs: new Map(), // "track:bar" -> ATTR (the latest version of a bar)
    log: [], // LOG entries, each with a serial `n`
    logSerial: 0,
    logDropped: 0,
    clocks: new Map(), // bar -> CLOCK
    clock: null, // the latest CLOCK
    snapshots: 0,
    gaps: 0,
    version: { info: 0, session: 0, roll: 0, prompt: 0, jobs: 0, attrs: 0, log: 0, demo: 0, clock: 0 },
    logEpoch: 0, // bumped when the log is replaced (snapshot, clear): the view rebuilds
  };
}

export const noteKey = (track, bar) => `${track}:${bar}`;

function bump(model, ...parts) {
  for (const part of parts) model.version[part] += 1;
}

// ---- receiving ------------------------------------------------------------------------------------

/**
 * Take one `update`. Returns "applied", "stale" (already folded in), "buffered" (a snapshot is
 * awaited) or "gap" (a seq was missed: the caller asks for a snapshot; the update is kept).
 */
export function receiveUpdate(model, update) {
  if (model.awaitingSnapshot) {
    model.pending.push(update);
    if (model.pending.length > PENDING_LIMIT) model.pending.shift();
    return "buffered";
  }
  if (update.seq <= model.seq) return "stale";
  if (update.seq !== model.seq + 1) {
    model.gaps += 1;
    model.awaitingSnapshot = true;
    model.pending.push(update);
    return "gap";
  }
  applyUpdate(model, update);
  return "applied";
}

/**
 * Take a `snapshot`: replaces everything, then replays the buffered updates newer than it.
 * Returns "applied", "stale" (older than what the model holds) or "gap" (the replay found a hole).
 */
export function receiveSnapshot(model, snapshot) {
  if (!model.awaitingSnapshot && model.seq !== null && snapshot.seq <= model.seq) return "stale";
  applySnapshot(model, snapshot);
  const newer = model.pending.filter((u) => u.seq > snapshot.seq).sort((a, b) => a.seq - b.seq);
  model.pending = [];
  model.awaitingSnapshot = false;
  let result = "applied";
  for (const update of newer) {
    if (receiveUpdate(model, update) === "gap") result = "gap";
  }
  return result;
}

/** Mark the model stale (e.g. on reconnect): updates wait for the next snapshot. */
export function expectSnapshot(model) {
  model.awaitingSnapshot = true;
  model.pending = [];
}

// ---- folding ----------------------------------------------------------------------------------------

export function applySnapshot(model, snapshot) {
  const info = snapshot.info ?? null;
  model.info = info;
  model.limits = { ...DEFAULT_LIMITS, ...(info?.limits ?? {}) };
  model.seq = snapshot.seq;
  model.session = snapshot.session ?? null;
  model.demo = snapshot.demo ?? null;
  model.prompt = snapshot.prompt ?? null;
  model.closedBars.clear();
  model.meters.clear();
  model.human.clear();
  model.generated.clear();
  model.jobs.clear();
  model.attrs.clear();
  model.clocks.clear();
  model.clock = null;
  for (const bar of snapshot.bars ?? []) addBar(model, bar);
  for (const note of snapshot.notes ?? []) {
    const store = note.kind === "generated" ? model.generated : model.human;
    pushNote(store, note);
  }
  for (const job of snapshot.jobs ?? []) mergeJob(model, job);
  for (const attr of snapshot.attrs ?? []) addAttr(model, attr);
  model.log = [];
  model.logDropped = 0;
  for (const line of snapshot.log ?? []) addLog(model, line);
  model.logEpoch += 1;
  model.snapshots += 1;
  prune(model);
  bump(model, "info", "session", "roll", "prompt", "jobs", "attrs", "log", "demo", "clock");
}

export function applyUpdate(model, update) {
  model.seq = update.seq;
  if (update.reset) clearPiece(model); // a fresh session (server extension: see socket_events.md)
  if (update.session) {
    model.session = update.session;
    bump(model, "session", "roll"); // the playhead moves the roll window
  }
  if (update.bars?.length) {
    for (const bar of update.bars) addBar(model, bar);
    bump(model, "roll");
  }
  if (update.notes?.length) {
    // Updates carry human notes; generated content comes whole, as GENBARs.
    for (const note of update.notes) {
      if (note.kind === "generated") continue;
      pushNote(model.human, note);
    }
    bump(model, "roll");
  }
  if (update.generated?.length) {
    for (const genbar of update.generated) setGenerated(model, genbar);
    bump(model, "roll");
  }
  if (update.jobs?.length) {
    for (const job of update.jobs) mergeJob(model, job);
    bump(model, "jobs", "roll");
  }
  if (update.prompt !== undefined) {
    model.prompt = update.prompt;
    bump(model, "prompt", "roll");
  }
  if (update.attrs?.length) {
    for (const attr of update.attrs) addAttr(model, attr);
    bump(model, "attrs");
  }
  if (update.log?.length || update.dropped_log) {
    for (const line of update.log ?? []) addLog(model, line);
    if (update.dropped_log) {
      model.logDropped += update.dropped_log;
      addLog(model, { t: null, dir: "local", peer: "", address: "", args: [], error: null, skipped: update.dropped_log });
    }
    bump(model, "log");
  }
  if (update.demo) {
    model.demo = update.demo;
    bump(model, "demo");
  }
  if (update.clock?.length) {
    for (const clock of update.clock) addClock(model, clock);
    bump(model, "clock", "roll");
  }
  prune(model);
}

function clearPiece(model) {
  model.closedBars.clear();
  model.meters.clear();
  model.human.clear();
  model.generated.clear();
  model.prompt = null;
  model.clocks.clear();
  model.clock = null;
  bump(model, "roll", "prompt", "clock");
}

function addBar(model, bar) {
  model.closedBars.set(bar.bar, bar);
  if (bar.meter) model.meters.set(bar.bar, bar.meter);
}

function pushNote(store, note) {
  const key = noteKey(note.track, note.bar);
  const list = store.get(key);
  if (list) list.push(note);
  else store.set(key, [note]);
}

function setGenerated(model, genbar) {
  const notes = (genbar.notes ?? []).map((n) => ({ ...n, track: genbar.track, bar: genbar.bar, kind: "generated" }));
  model.generated.set(noteKey(genbar.track, genbar.bar), notes);
  if (genbar.meter && !model.closedBars.has(genbar.bar)) model.meters.set(genbar.bar, genbar.meter);
}

function mergeJob(model, report) {
  const known = model.jobs.get(report.job_id);
  if (known) {
    const budget = known.budget_ms;
    Object.assign(known, report);
    if (known.budget_ms == null) known.budget_ms = budget;
    if (report.status === "queued" && known.queued_t == null) known.queued_t = report.t;
    return;
  }
  model.jobs.set(report.job_id, { ...report, queued_t: report.status === "queued" ? report.t : null });
  while (model.jobs.size > model.limits.jobs) model.jobs.delete(model.jobs.keys().next().value);
}

function addAttr(model, attr) {
  const key = noteKey(attr.track, attr.bar);
  model.attrs.delete(key); // a regenerated bar moves to the end (most recent)
  model.attrs.set(key, attr);
  while (model.attrs.size > model.limits.attrs) model.attrs.delete(model.attrs.keys().next().value);
}

function addLog(model, line) {
  model.logSerial += 1;
  model.log.push({ ...line, n: model.logSerial });
  const excess = model.log.length - model.limits.log;
  if (excess > 0) model.log.splice(0, excess);
}

function addClock(model, clock) {
  model.clocks.set(clock.bar, clock);
  if (clock.meter && !model.closedBars.has(clock.bar)) model.meters.set(clock.bar, clock.meter);
  if (!model.clock || clock.bar >= model.clock.bar || clock.at > model.clock.at) model.clock = clock;
  while (model.clocks.size > CLOCK_LIMIT) model.clocks.delete(model.clocks.keys().next().value);
}

/** Clear the log (the page's "clear" button). */
export function clearLog(model) {
  model.log = [];
  model.logEpoch += 1;
  bump(model, "log");
}

// ---- derived views ------------------------------------------------------------------------------------

/** Bars shown past the playhead: the lookahead and anticipated bars, plus a margin. */
export function leadBars(model) {
  const params = model.session?.params ?? {};
  const k = Number(params.lookahead_bars ?? 1);
  const j = Number(params.num_anticipated_bars ?? 1);
  return Math.max(4, k + j + 2);
}

/** The playhead: the session's, else one past the last closed bar, else 0. */
export function playheadBar(model) {
  const playhead = model.session?.playhead;
  if (playhead != null) return playhead;
  let last = -1;
  for (const bar of model.closedBars.keys()) last = Math.max(last, bar);
  return last + 1;
}

/** The roll window [start, end): `roll_bars` bars ending `leadBars` past the playhead, from bar 0. */
export function rollWindow(model, playhead = playheadBar(model)) {
  const size = Math.max(1, model.limits.roll_bars);
  const end = Math.max(size, Math.floor(playhead) + leadBars(model));
  return { start: end - size, end };
}

/** Drop everything older than the roll window (bounded memory whatever the session length). */
export function prune(model) {
  const { start } = rollWindow(model);
  for (const [bar] of model.closedBars) if (bar < start) model.closedBars.delete(bar);
  for (const [bar] of model.meters) if (bar < start) model.meters.delete(bar);
  for (const store of [model.human, model.generated]) {
    for (const [key] of store) if (barOfKey(key) < start) store.delete(key);
  }
}

function barOfKey(key) {
  return Number(key.slice(key.indexOf(":") + 1));
}

/** The meter of `bar`: recorded, announced by a clock or a generated bar, else the last known before it. */
export function meterOf(model, bar) {
  const known = model.meters.get(bar);
  if (known) return known;
  let best = null;
  let bestBar = -Infinity;
  for (const [b, meter] of model.meters) {
    if (b < bar && b > bestBar) {
      best = meter;
      bestBar = b;
    }
  }
  return best ?? model.clock?.meter ?? model.demo?.meter ?? [4, 4];
}

/** Length of a bar in quarter notes. */
export function barQuarters(meter) {
  return (meter[0] * 4) / meter[1];
}

/** Jobs queued and not finished whose bars are still ahead of the playhead. */
export function openJobs(model) {
  const playhead = playheadBar(model);
  const open = [];
  for (const job of model.jobs.values()) {
    if (FINAL_STATUSES.has(job.status)) continue;
    const bars = job.bars?.length ? job.bars : [job.target_bar];
    if (Math.max(...bars) < playhead) continue;
    open.push(job);
  }
  return open;
}

/** Finished jobs, in the order they finished (their report's `t`). */
export function finishedJobs(model) {
  const done = [];
  for (const job of model.jobs.values()) if (FINAL_STATUSES.has(job.status)) done.push(job);
  return done.sort((a, b) => (a.t ?? 0) - (b.t ?? 0));
}

/** The timing readout: last latency, mean of the last 5, slack, budget, bar length, verdict. */
export function timingSummary(model) {
  const ran = finishedJobs(model).filter((j) => (j.status === "done" || j.status === "late") && j.latency_ms != null);
  const last = ran.at(-1) ?? null;
  const recent = ran.slice(-5);
  const average = recent.length ? recent.reduce((s, j) => s + j.latency_ms, 0) / recent.length : null;
  const periodS = model.session?.bar_period_s ?? null;
  const lookahead = Number(model.session?.params?.lookahead_bars ?? 1);
  const budget = last?.budget_ms ?? (periodS != null ? periodS * 1000 * lookahead : null);
  const lateRecent = recent.filter((j) => j.status === "late").length;
  let verdict = null;
  if (average != null && budget != null) verdict = average <= budget && lateRecent === 0 ? "fits" : "late";
  const counts = {};
  for (const job of model.jobs.values()) counts[job.status] = (counts[job.status] ?? 0) + 1;
  return {
    last: last?.latency_ms ?? null,
    average,
    slack: last?.slack_ms ?? null,
    budget,
    barMs: periodS != null ? periodS * 1000 : null,
    verdict,
    counts,
  };
}

/** The agent tracks of the session, else the tracks that have attributes. */
export function agentTracks(model) {
  const agents = (model.session?.tracks ?? []).filter((t) => t.is_agent).map((t) => t.track_id);
  if (agents.length) return agents;
  return [...new Set([...model.attrs.values()].map((a) => a.track))];
}

/** The ATTR entries of `track`, oldest bar first. */
export function attrsOf(model, track) {
  return [...model.attrs.values()].filter((a) => a.track === track).sort((a, b) => a.bar - b.bar);
}

/** Every note (human, then generated) of the bars in [start, end). */
export function notesIn(model, start, end) {
  const human = [];
  const generated = [];
  for (const [key, notes] of model.human) {
    const bar = barOfKey(key);
    if (bar >= start && bar < end) human.push(...notes);
  }
  for (const [key, notes] of model.generated) {
    const bar = barOfKey(key);
    if (bar >= start && bar < end) generated.push(...notes);
  }
  return { human, generated };
}

/** The generated notes the page holds for `bar`, any track. */
export function generatedAt(model, bar) {
  const out = [];
  for (const [key, notes] of model.generated) if (barOfKey(key) === bar) out.push(...notes);
  return out;
}
