// The monitor page: one Socket.IO connection, one model (state.js), views drawn in
// requestAnimationFrame only when what they show changed (socket_events.md is the contract).
import { io } from "/vendor/socket.io.esm.min.js";
import { createModel, expectSnapshot, receiveSnapshot, receiveUpdate } from "./state.js";
import { $ } from "./dom.js";
import { createPianoRoll } from "./pianoroll.js";
import { createPromptView } from "./prompt.js";
import { createTimingView } from "./timing.js";
import { createAttributeView } from "./attributes.js";
import { createControls } from "./controls.js";
import { createConnectionView, createSessionView } from "./session.js";
import { createLogView } from "./log.js";
import { createDemoView } from "./demo.js";
import { createAudio } from "./audio.js";

const ACK_TIMEOUT_MS = 5000;
const SNAPSHOT_RETRY_MS = 2000;

const model = createModel();
const socket = io({ transports: ["websocket", "polling"], reconnectionDelayMax: 4000 });
let connected = false;
const link = { state: "connecting", detail: "" }; // what the connection badge shows
let everConnected = false;
let snapshotInFlight = false;
let lastSnapshotRequest = 0;

// ---- rendering -------------------------------------------------------------------------------------
let dirty = true;
let animating = false;
const frameTimes = [];
const invalidate = () => { dirty = true; };

/** Send a session-API message; resolves with the ack ({ok, ...}), never rejects. */
function sendControl(address, args) {
  return emitWithAck("control", { address, args });
}

function emitWithAck(event, payload) {
  return new Promise((resolve) => {
    if (!connected) {
      resolve({ ok: false, code: -1, message: "not connected" });
      return;
    }
    socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (error, ack) => {
      invalidate();
      if (error) resolve({ ok: false, code: -1, message: "no answer from the server (timeout)" });
      else resolve(ack ?? { ok: false, code: -1, message: "empty answer" });
    });
  });
}

const audio = createAudio();
const views = [
  createSessionView(sendControl),
  createControls(sendControl),
  createPianoRoll($("pianoroll"), $("roll-legend"), invalidate),
  createPromptView($("prompt-window"), $("prompt-caption"), $("prompt-legend")),
  createTimingView($("timing-plot")),
  createAttributeView($("attr-plot"), $("attr-chips"), $("attr-track"), invalidate),
  createLogView(invalidate),
  createDemoView((payload) => emitWithAck("demo", payload)),
  createConnectionView(link), // last: "connected" appears once the views above are drawn
];

function showConnection(state, detail = "") {
  link.state = state;
  link.detail = detail;
  invalidate();
}

function frame(now) {
  frameTimes.push(now);
  while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
  if (dirty || animating) {
    dirty = false;
    animating = false;
    for (const view of views) {
      try {
        if (view.render(model, connected)) animating = true;
      } catch (error) {
        console.error("render failed", error); // keep the other views alive
      }
    }
  }
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);

// ---- the contract --------------------------------------------------------------------------------
function requestSnapshot() {
  if (snapshotInFlight || !connected) return;
  snapshotInFlight = true;
  lastSnapshotRequest = performance.now();
  socket.timeout(ACK_TIMEOUT_MS).emit("snapshot", {}, (error, snapshot) => {
    snapshotInFlight = false;
    if (!error && snapshot) takeSnapshot(snapshot);
  });
}

function takeSnapshot(snapshot) {
  if (receiveSnapshot(model, snapshot) === "gap") requestSnapshot();
  invalidate();
}

socket.on("snapshot", takeSnapshot);
socket.on("update", (update) => {
  const result = receiveUpdate(model, update);
  if (result === "stale") return;
  if (result === "gap") requestSnapshot();
  // Audio follows the raw stream: a buffered update still carries the bar's clock.
  for (const genbar of update.generated ?? []) audio.onGenerated(genbar, model);
  for (const clock of update.clock ?? []) audio.onClock(clock, model);
  invalidate();
});

socket.on("connect", () => {
  connected = true;
  lastSnapshotRequest = performance.now(); // the server pushes one on connect
  showConnection("connected");
  if (everConnected) {
    expectSnapshot(model); // what we hold may be stale: wait for a fresh snapshot
    requestSnapshot();
  }
  everConnected = true;
  invalidate();
});
socket.on("disconnect", (reason) => {
  connected = false;
  snapshotInFlight = false;
  showConnection("disconnected", reason);
  invalidate();
});
socket.io.on("reconnect_attempt", (attempt) => showConnection("reconnecting", `attempt ${attempt}`));
socket.io.on("reconnect_failed", () => showConnection("disconnected", "gave up reconnecting"));
socket.on("connect_error", (error) => {
  if (!socket.active) showConnection("disconnected", error.message);
});

// A snapshot that never came (lost, or the server's push raced a reconnect): ask again.
setInterval(() => {
  if (connected && model.awaitingSnapshot && !snapshotInFlight && performance.now() - lastSnapshotRequest > SNAPSHOT_RETRY_MS) requestSnapshot();
}, 500);

// ---- audio controls ------------------------------------------------------------------------------
const audioToggle = $("audio-toggle");
audioToggle.addEventListener("change", async () => {
  try {
    if (audioToggle.checked) await audio.enable();
    else await audio.disable();
  } catch (error) {
    audioToggle.checked = false;
    console.warn("audio unavailable", error);
  }
  $("audio-status").textContent = audio.describe();
});
$("audio-volume").addEventListener("input", (e) => audio.setVolume(Number(e.target.value)));
$("audio-human").addEventListener("change", (e) => audio.setBus("human", e.target.checked));
$("audio-agent").addEventListener("change", (e) => audio.setBus("agent", e.target.checked));

// ---- for tests and benchmarks --------------------------------------------------------------------
window.sidemanMonitor = {
  /** Frames per second over the last second of requestAnimationFrame callbacks. */
  fps() {
    const now = performance.now();
    return frameTimes.filter((t) => t >= now - 1000).length;
  },
  state: model,
  audio: { describe: audio.describe, scheduled: audio.counts },
  socket,
  requestSnapshot,
};
