// Small DOM helpers: writes only when the value changes, so a render pass costs nothing when idle.

export const $ = (id) => document.getElementById(id);

export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function setAttr(node, name, value) {
  const text = String(value);
  if (node.getAttribute(name) !== text) node.setAttribute(name, text);
}

export function setDisabled(node, disabled) {
  if (node.disabled !== disabled) node.disabled = disabled;
}

/** `el("div", {class: "x", title: "y"}, child, "text")`: attributes, then children (nodes or text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value == null) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Milliseconds for a readout: "412 ms", "1.25 s". */
export function formatMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return "—";
  if (Math.abs(ms) >= 10000) return `${(ms / 1000).toFixed(1)} s`;
  if (Math.abs(ms) >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.round(ms)} ms`;
}

/** A value for a log line or a readout, short. */
export function formatValue(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(4)));
  if (typeof value === "string") return value.length > 120 ? `${value.slice(0, 117)}…` : value;
  return JSON.stringify(value);
}

/** Show an ack's outcome in `node`: nothing when ok, "code N: message" when refused. */
export function showAck(node, ack) {
  if (!node) return;
  if (!ack || ack.ok) {
    setText(node, "");
    node.classList.remove("error");
    return;
  }
  const code = ack.code != null && ack.code >= 0 ? `error ${ack.code}: ` : "";
  setText(node, `${code}${ack.message ?? "refused"}`);
  node.classList.add("error");
}

// Track colours: stable per track id; the agent always gold so it reads at a glance.
const TRACK_COLOURS = ["#5cc8ff", "#7ee787", "#ff9bce", "#c297ff", "#ff8f6b", "#56d4bc", "#a5b4fc", "#e6db74"];
export const AGENT_COLOUR = "#ffc24b";

export function trackColour(track) {
  if (track?.is_agent) return AGENT_COLOUR;
  const id = typeof track === "number" ? track : (track?.track_id ?? 0);
  return TRACK_COLOURS[((id % TRACK_COLOURS.length) + TRACK_COLOURS.length) % TRACK_COLOURS.length];
}

/** The session's track record for `trackId`, or a stand-in. */
export function trackOf(model, trackId) {
  return (model.session?.tracks ?? []).find((t) => t.track_id === trackId) ?? { track_id: trackId, is_agent: false };
}
