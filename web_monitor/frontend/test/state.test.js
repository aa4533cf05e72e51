// The page's model (web_monitor/static/js/state.js): snapshot + updates in seq order, bounded.
// Run: node --test web_monitor/frontend/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  createModel, receiveSnapshot, receiveUpdate, expectSnapshot, rollWindow, notesIn, openJobs,
  finishedJobs, timingSummary, meterOf, attrsOf, generatedAt, clearLog,
} from "../../static/js/state.js";

const note = (track, bar, pitch, kind = "human", onset = 0) => ({ track, bar, pitch, velocity: 80, onset, duration: 0.25, kind });

function snapshot(overrides = {}) {
  return {
    seq: 10,
    info: { limits: { roll_bars: 8, jobs: 4, attrs: 3, log: 5 } },
    session: { state: "RUNNING", playhead: 5, params: { lookahead_bars: 1, num_anticipated_bars: 1 }, tracks: [] },
    bars: [{ bar: 4, meter: [3, 4], playhead: 5 }],
    notes: [note(0, 4, 60), note(1, 6, 40, "generated")],
    prompt: null,
    jobs: [],
    attrs: [],
    log: [],
    demo: { running: false },
    ...overrides,
  };
}

test("updates apply in seq order and a stale one is ignored", () => {
  const model = createModel();
  assert.equal(receiveSnapshot(model, snapshot()), "applied");
  assert.equal(receiveUpdate(model, { seq: 11, notes: [note(0, 5, 62)] }), "applied");
  assert.equal(receiveUpdate(model, { seq: 11, notes: [note(0, 5, 64)] }), "stale");
  assert.equal(notesIn(model, 0, 20).human.length, 2);
  assert.equal(model.seq, 11);
});

test("updates before the first snapshot wait for it; those it already holds are dropped", () => {
  const model = createModel();
  assert.equal(receiveUpdate(model, { seq: 10, notes: [note(0, 5, 61)] }), "buffered");
  assert.equal(receiveUpdate(model, { seq: 11, notes: [note(0, 5, 62)] }), "buffered");
  receiveSnapshot(model, snapshot());
  const pitches = notesIn(model, 0, 20).human.map((n) => n.pitch).sort();
  assert.deepEqual(pitches, [60, 62]);
  assert.equal(model.seq, 11);
});

test("a gap asks for a snapshot, and updates after the gap are replayed on top of it", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  assert.equal(receiveUpdate(model, { seq: 13, notes: [note(0, 5, 70)] }), "gap");
  assert.ok(model.awaitingSnapshot);
  assert.equal(receiveUpdate(model, { seq: 14, notes: [note(0, 5, 71)] }), "buffered");
  assert.equal(receiveSnapshot(model, snapshot({ seq: 12 })), "applied");
  assert.equal(model.seq, 14);
  assert.deepEqual(notesIn(model, 0, 20).human.map((n) => n.pitch).sort(), [60, 70, 71]);
  assert.equal(model.gaps, 1);
});

test("after a reconnect the next snapshot replaces the model even with a lower seq (server restart)", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  expectSnapshot(model);
  assert.equal(receiveSnapshot(model, snapshot({ seq: 0, notes: [] })), "applied");
  assert.equal(model.seq, 0);
  assert.equal(notesIn(model, 0, 20).human.length, 0);
});

test("a generated bar replaces the page's version of that bar", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  receiveUpdate(model, { seq: 11, generated: [{ track: 1, bar: 6, meter: [4, 4], notes: [note(1, 6, 41, "generated"), note(1, 6, 43, "generated")] }] });
  assert.deepEqual(generatedAt(model, 6).map((n) => n.pitch), [41, 43]);
  receiveUpdate(model, { seq: 12, generated: [{ track: 1, bar: 6, meter: [4, 4], notes: [] }] });
  assert.equal(generatedAt(model, 6).length, 0);
});

test("the roll window follows the playhead and forgets older bars", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot({ session: { state: "RUNNING", playhead: 2, params: {}, tracks: [] } }));
  assert.deepEqual(rollWindow(model), { start: 0, end: 8 }); // pinned at 0 during warm-up
  receiveUpdate(model, { seq: 11, session: { ...model.session, playhead: 20 } });
  const { start, end } = rollWindow(model);
  assert.equal(end - start, 8);
  assert.ok(start > 6);
  assert.equal(notesIn(model, 0, 100).human.length, 0);
  assert.equal(model.closedBars.size, 0);
});

test("meters: recorded, else the last known before the bar", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  assert.deepEqual(meterOf(model, 4), [3, 4]);
  assert.deepEqual(meterOf(model, 7), [3, 4]);
  receiveUpdate(model, { seq: 11, clock: [{ bar: 6, at: 1, period_s: 1, meter: [6, 8], human: [] }] });
  assert.deepEqual(meterOf(model, 6), [6, 8]);
  assert.deepEqual(meterOf(model, 9), [6, 8]);
});

test("job reports merge by id, keep their budget, and stay bounded", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  receiveUpdate(model, { seq: 11, jobs: [{ job_id: 1, target_bar: 6, bars: [6], status: "queued", budget_ms: 900, t: 1 }] });
  assert.equal(openJobs(model).length, 1);
  receiveUpdate(model, { seq: 12, jobs: [{ job_id: 1, target_bar: 6, bars: [6], status: "late", latency_ms: 950, slack_ms: -50, t: 2 }] });
  assert.equal(openJobs(model).length, 0);
  const [job] = finishedJobs(model);
  assert.equal(job.budget_ms, 900);
  assert.equal(job.status, "late");
  const jobs = [];
  for (let id = 2; id < 10; id++) jobs.push({ job_id: id, target_bar: 6 + id, bars: [6 + id], status: "done", latency_ms: 100, budget_ms: 1000, t: 2 + id });
  receiveUpdate(model, { seq: 13, jobs });
  assert.equal(model.jobs.size, 4);
  const summary = timingSummary(model);
  assert.equal(summary.last, 100);
  assert.equal(summary.average, 100);
  assert.equal(summary.verdict, "fits");
});

test("attributes keep the latest version of a bar and stay bounded", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  const attr = (bar, density) => ({ track: 1, bar, realised: { note_density: density }, requested: {}, sampled: {} });
  receiveUpdate(model, { seq: 11, attrs: [attr(6, 1), attr(7, 2), attr(6, 3), attr(8, 4), attr(9, 5)] });
  const bars = attrsOf(model, 1).map((a) => [a.bar, a.realised.note_density]);
  assert.deepEqual(bars, [[6, 3], [8, 4], [9, 5]]);
});

test("the log is bounded, counts lines not carried, and clears", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot());
  const line = (i) => ({ t: i, dir: "in", peer: "p", address: `/a/${i}`, args: [i], error: null });
  receiveUpdate(model, { seq: 11, log: [1, 2, 3, 4, 5, 6, 7].map(line), dropped_log: 3 });
  assert.equal(model.log.length, 5);
  assert.equal(model.logDropped, 3);
  assert.equal(model.log.at(-1).skipped, 3);
  clearLog(model);
  assert.equal(model.log.length, 0);
});

test("a reset update clears the piece but keeps jobs", () => {
  const model = createModel();
  receiveSnapshot(model, snapshot({ jobs: [{ job_id: 1, target_bar: 6, bars: [6], status: "done", latency_ms: 10, t: 1 }] }));
  receiveUpdate(model, { seq: 11, reset: true, session: { ...model.session, state: "INITIALIZING", playhead: null } });
  assert.equal(notesIn(model, 0, 100).human.length + notesIn(model, 0, 100).generated.length, 0);
  assert.equal(model.jobs.size, 1);
});
