// The header strip and the session panel: state, status, playhead, model, engine process, degraded
// level; tracks (with the per-track ignore toggle), subscribers, job totals, capabilities.
import { $, el, setAttr, setDisabled, setText, showAck, trackColour } from "./dom.js";
import { programName } from "./gm.js";

function describeEngine(engine) {
  if (!engine || typeof engine !== "object") return "—";
  const parts = [];
  if (engine.process != null) parts.push(typeof engine.process === "object" ? JSON.stringify(engine.process) : String(engine.process));
  if (engine.restarts) parts.push(`${engine.restarts} restart${engine.restarts === 1 ? "" : "s"}`);
  return parts.join(" · ") || "—";
}

function describeSubscriber(subscriber) {
  if (Array.isArray(subscriber)) return subscriber.join(":");
  if (subscriber && typeof subscriber === "object") {
    if (subscriber.host != null) return `${subscriber.host}:${subscriber.port}`;
    return JSON.stringify(subscriber);
  }
  return String(subscriber);
}

export function createSessionView(send) {
  let drawn = "";
  let tracksKey = "";
  let capsKey = "";
  const tbody = $("tracks").querySelector("tbody");
  const tracksAck = document.querySelector('.ack[data-for="tracks"]');

  function renderTracks(model, connected) {
    const tracks = model.session?.tracks ?? [];
    const state = model.session?.state;
    const editable = connected && (state === "INITIALIZING" || state === "RUNNING");
    const key = JSON.stringify([tracks, editable]);
    if (key === tracksKey) return;
    tracksKey = key;
    if (!tracks.length) {
      tbody.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no tracks")));
      return;
    }
    tbody.replaceChildren(...tracks.map((track) => {
      const ignore = el("input", { type: "checkbox", id: `track-${track.track_id}-ignore`, "aria-label": `ignore track ${track.track_id}` });
      ignore.checked = Boolean(track.ignore);
      setDisabled(ignore, !editable || track.is_agent);
      ignore.title = track.is_agent ? "the agent track is never ignored" : "leave this track out of the prompt";
      ignore.addEventListener("change", async () => {
        const ack = await send("/midigpt/track/set_ignore", [track.track_id, ignore.checked ? 1 : 0]);
        showAck(tracksAck, ack);
        if (!ack.ok) ignore.checked = !ignore.checked;
      });
      return el("tr", { class: track.is_agent ? "agent" : "", "data-track": track.track_id },
        el("td", {}, el("i", { class: "swatch", style: `background:${trackColour(track)}` })),
        el("td", {}, String(track.track_id)),
        el("td", {}, track.is_agent ? "agent" : "conditioning"),
        el("td", { title: `GM program ${track.program}` }, programName(track.program, track.is_drum)),
        el("td", {}, track.is_drum ? "drums" : "melodic"),
        el("td", {}, ignore));
    }));
  }

  function renderCapabilities(info) {
    const caps = info?.capabilities ?? {};
    const key = JSON.stringify(caps);
    if (key === capsKey) return;
    capsKey = key;
    $("capabilities").replaceChildren(
      ...Object.entries(caps).map(([name, on]) =>
        el("span", { class: `cap ${on ? "on" : "off"}`, title: on ? "supported" : "not supported" }, `${on ? "✓" : "✗"} ${name.replace(/^supports_/, "").replaceAll("_", " ")}`)),
    );
  }

  function render(model, connected) {
    const key = `${model.version.session}|${model.version.info}|${connected}`;
    if (key === drawn) return false;
    drawn = key;
    const session = model.session ?? {};
    const info = model.info ?? {};
    const state = session.state ?? "UNINITIALIZED";
    const stateNode = $("session-state");
    setText(stateNode, state);
    setAttr(stateNode, "data-state", state);
    const status = $("gen-status");
    setText(status, session.status ?? "—");
    setAttr(status, "data-state", session.status ?? "");
    setText($("playhead"), session.playhead ?? "—");
    const period = session.bar_period_s;
    const spq = session.seconds_per_quarter;
    const bpm = spq ? ` · ${Math.round(60 / spq)} BPM` : "";
    setText($("bar-length"), period ? `${(period * 1000).toFixed(0)} ms${bpm}` : "—");
    const modelText = info.model ? `${info.model}${info.precision ? ` · ${info.precision}` : ""}` : "—";
    setText($("model-name"), modelText);
    setAttr($("model-name"), "title", modelText);
    const engine = session.engine ?? {};
    setText($("engine-info"), describeEngine(engine));
    const degraded = $("degraded");
    setText(degraded, String(session.degraded ?? 0));
    setAttr(degraded, "data-level", session.degraded ?? 0);
    setText($("session-name"), session.name ? `“${session.name}”` : "");
    const subscribers = session.subscribers ?? [];
    setText($("subscribers"), subscribers.length ? subscribers.map(describeSubscriber).join(", ") : "none");
    const jobs = session.jobs ?? {};
    const counts = Object.entries(jobs).filter(([, n]) => n).map(([status, n]) => `${status} ${n}`);
    setText($("job-counts"), counts.length ? counts.join(" · ") : "none");
    renderTracks(model, connected);
    renderCapabilities(info);
    return false;
  }

  return { render };
}

/**
 * The connection badge: connecting / syncing / connected / reconnecting / disconnected. It reads
 * "connected" only once a snapshot is in the model, so whatever it gates (controls, pieces) is drawn.
 */
export function createConnectionView(link) {
  return {
    render(model) {
      const state = link.state === "connected" && model.awaitingSnapshot ? "syncing" : link.state;
      const node = $("connection");
      setText(node, state);
      setAttr(node, "data-state", state);
      setAttr(node, "title", link.detail ?? "");
      return false;
    },
  };
}
