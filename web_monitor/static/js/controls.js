// Controls: one per global parameter with the server's ranges, attribute levels, Init/Start/Stop and
// the agent's freeze/mute/cancel. Everything goes out as a `control` event (an OSC address and its
// arguments); a refusal is shown next to the control that caused it.
import { $, el, setDisabled, setText, showAck } from "./dom.js";
import { attributeEntries, isSupported } from "./attributes.js";

const SLIDER_MAX_SPAN = { int: 64, float: 100 };

function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function sameValue(a, b) {
  if (typeof a === "number" && typeof b === "number") return Math.abs(a - b) < 1e-9;
  return a === b;
}

function shownNumber(value) {
  if (typeof value !== "number") return String(value ?? "");
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
}

/** Parse a number input for a parameter: an error text, or the value to send. */
export function parseParamInput(spec, text) {
  const value = Number(String(text).trim());
  if (String(text).trim() === "" || !Number.isFinite(value)) return { error: `${spec.name}: not a number` };
  if (spec.type === "int" && !Number.isInteger(value)) return { error: `${spec.name} takes an integer` };
  return { value };
}

export function createControls(send) {
  const paramsNode = $("params");
  const attrsNode = $("attr-controls");
  let rows = new Map(); // param name -> {spec, input, slider, reset, error, row}
  let attrRows = new Map(); // attribute name -> {attribute, input, label, error, supported}
  let layoutKey = "";
  let drawnSession = -1;
  let model = null;
  const restore = new Set(); // controls to reset to the server's value even while focused

  async function act(node, address, args, row) {
    row?.classList.add("pending");
    const ack = await send(address, args);
    row?.classList.remove("pending");
    showAck(node, ack);
    if (!ack.ok) {
      if (row?.dataset.param) restore.add(row.dataset.param);
      if (row?.dataset.attr) restore.add(`attr:${row.dataset.attr}`);
      drawnSession = -1; // put the server's value back
    }
    return ack;
  }

  // ---- session and agent -------------------------------------------------------------------------
  const sessionAck = document.querySelector('.ack[data-for="session"]');
  const agentAck = document.querySelector('.ack[data-for="agent"]');
  $("btn-init").addEventListener("click", () => act(sessionAck, "/midigpt/session/init", [$("init-name").value.trim() || "monitor"]));
  $("btn-start").addEventListener("click", () => act(sessionAck, "/midigpt/session/start", []));
  $("btn-stop").addEventListener("click", () => act(sessionAck, "/midigpt/session/stop", []));
  $("agent-freeze").addEventListener("change", (e) => act(agentAck, "/midigpt/agent/freeze", [e.target.checked ? 1 : 0]));
  $("agent-mute").addEventListener("change", (e) => act(agentAck, "/midigpt/agent/mute", [e.target.checked ? 1 : 0]));
  $("agent-cancel").addEventListener("click", () => act(agentAck, "/midigpt/agent/cancel", []));
  $("param-reset-all").addEventListener("click", resetAll);
  $("attr-reset-all").addEventListener("click", () =>
    act(document.querySelector('.ack[data-for="attr-reset-all"]'), "/midigpt/attr/reset_all", []));

  /** Reset every parameter; while running, only the non-structural ones (the others are locked). */
  async function resetAll() {
    const node = document.querySelector('.ack[data-for="param-reset-all"]');
    if (model?.session?.state !== "RUNNING") {
      await act(node, "/midigpt/param/reset_all", []);
      return;
    }
    const values = model.session.params ?? {};
    for (const { spec, error, row } of rows.values()) {
      if (spec.structural || !(spec.name in values) || sameValue(values[spec.name], spec.default)) continue;
      await act(error, "/midigpt/param/reset", [spec.name], row);
    }
    showAck(node, { ok: true });
  }

  // ---- parameters --------------------------------------------------------------------------------
  function paramRow(spec) {
    const name = spec.name;
    const min = spec.min ?? spec.lo;
    const max = spec.max ?? spec.hi;
    const help = spec.help ?? spec.doc ?? "";
    const error = el("div", { class: "ack", id: `param-${name}-error` });
    let input;
    let slider = null;
    if (spec.choices && spec.choices.length) {
      input = el("select", { id: `param-${name}`, "data-param": name },
        ...spec.choices.map((choice, i) => el("option", { value: String(i) }, String(choice))));
      input.addEventListener("change", () => commit(spec.choices[Number(input.value)]));
    } else if (spec.type === "bool") {
      input = el("input", { id: `param-${name}`, type: "checkbox", "data-param": name });
      input.addEventListener("change", () => commit(input.checked));
    } else if (spec.type === "int" || spec.type === "float") {
      input = el("input", {
        id: `param-${name}`, type: "number", "data-param": name, class: "num",
        min: finite(min) ? min : null, max: finite(max) ? max : null, step: spec.type === "int" ? 1 : "any",
      });
      input.addEventListener("change", () => {
        const parsed = parseParamInput(spec, input.value);
        if (parsed.error) showAck(error, { ok: false, message: parsed.error });
        else commit(parsed.value);
      });
      if (finite(min) && finite(max) && max - min <= SLIDER_MAX_SPAN[spec.type]) {
        slider = el("input", {
          type: "range", min, max, step: spec.type === "int" ? 1 : (max - min) / 100,
          "aria-label": `${name} slider`, tabindex: -1,
        });
        slider.addEventListener("input", () => { input.value = shownNumber(Number(slider.value)); });
        slider.addEventListener("change", () => {
          const value = Number(slider.value);
          commit(spec.type === "int" ? Math.round(value) : value);
        });
      }
    } else {
      input = el("input", { id: `param-${name}`, type: "text", "data-param": name });
      input.addEventListener("change", () => commit(input.value));
    }
    const reset = el("button", { type: "button", class: "icon", title: `reset ${name} to ${shownNumber(spec.default)}`, "aria-label": `reset ${name}` }, "↺");
    const label = el("label", { for: `param-${name}`, title: help }, name, spec.structural ? el("span", { class: "tag", title: "structural: locked while the session runs" }, "S") : null);
    const row = el("div", { class: "param", "data-param": name },
      label, el("div", { class: "param-inputs" }, slider, input), reset, el("div", { class: "param-help muted" }, rangeText(spec, min, max), help ? ` — ${help}` : ""), error);
    reset.addEventListener("click", () => act(error, "/midigpt/param/reset", [name], row));
    function commit(value) {
      act(error, "/midigpt/param/set", [name, value], row);
    }
    return { spec, input, slider, reset, error, row };
  }

  function rangeText(spec, min, max) {
    if (spec.choices && spec.choices.length) return spec.choices.join(" | ");
    if (spec.type === "bool") return "on / off";
    if (finite(min) || finite(max)) {
      const left = spec.min_open || spec.lo_open ? "(" : "[";
      const right = spec.max_open || spec.hi_open ? ")" : "]";
      return `${left}${finite(min) ? shownNumber(min) : "−∞"}, ${finite(max) ? shownNumber(max) : "∞"}${right}`;
    }
    return spec.type;
  }

  function attrRow(attribute, supported) {
    const name = attribute.name;
    const error = el("div", { class: "ack", id: `attr-${name}-error` });
    const input = el("input", { id: `attr-${name}`, type: "range", min: -1, max: Math.max(0, attribute.levels - 1), step: 1, value: -1, disabled: !supported, "data-attr": name });
    const label = el("span", { class: "attr-level" }, supported ? "off" : "unsupported");
    input.addEventListener("input", () => setText(label, levelLabel(attribute, Number(input.value))));
    const row = el("div", { class: `param attr${supported ? "" : " unsupported"}`, "data-attr": name },
      el("label", { for: `attr-${name}` }, name), el("div", { class: "param-inputs" }, input), label,
      el("div", { class: "param-help muted" }, supported ? `${attribute.levels} levels, off = −1` : "not available for this checkpoint / agent"), error);
    input.addEventListener("change", () => act(error, "/midigpt/attr/set", [name, Number(input.value)], row));
    return { attribute, input, label, error, row, supported };
  }

  function levelLabel(attribute, level) {
    if (level < 0) return "off";
    const text = attribute.labels?.[level];
    return text != null && text !== String(level) ? `${level} · ${text}` : String(level);
  }

  function build(info) {
    rows = new Map();
    for (const spec of info?.params ?? []) rows.set(spec.name, paramRow(spec));
    paramsNode.replaceChildren(...[...rows.values()].map((r) => r.row));
    attrRows = new Map();
    for (const attribute of attributeEntries(info)) attrRows.set(attribute.name, attrRow(attribute, isSupported(info, attribute)));
    attrsNode.replaceChildren(...[...attrRows.values()].map((r) => r.row));
    if (!attrRows.size) attrsNode.replaceChildren(el("div", { class: "muted" }, "this checkpoint has no attributes"));
  }

  // ---- reflecting the server ---------------------------------------------------------------------
  function render(m, connected) {
    model = m;
    const key = JSON.stringify([m.info?.params ?? null, m.info?.attributes ?? null, m.info?.capabilities ?? null]);
    if (key !== layoutKey) {
      layoutKey = key;
      build(m.info);
      drawnSession = -1;
    }
    const sessionKey = m.version.session * 2 + (connected ? 1 : 0);
    if (sessionKey === drawnSession) return false;
    drawnSession = sessionKey;
    const session = m.session ?? {};
    const state = session.state ?? "UNINITIALIZED";
    const running = state === "RUNNING";
    setDisabled($("btn-init"), !connected);
    setDisabled($("btn-start"), !connected || state !== "INITIALIZING");
    setDisabled($("btn-stop"), !connected || state !== "RUNNING");
    const agentLive = connected && (state === "INITIALIZING" || running);
    for (const id of ["agent-freeze", "agent-mute", "agent-cancel"]) setDisabled($(id), !agentLive);
    if (typeof session.frozen === "boolean") $("agent-freeze").checked = session.frozen;
    if (typeof session.muted === "boolean") $("agent-mute").checked = session.muted;
    setDisabled($("param-reset-all"), !connected);
    $("param-reset-all").title = running ? "reset the non-structural parameters (structural ones are locked while running)" : "every parameter to its default";
    setDisabled($("attr-reset-all"), !connected);

    const values = session.params ?? {};
    for (const { spec, input, slider, reset, row } of rows.values()) {
      const locked = !connected || (spec.structural && running);
      setDisabled(input, locked);
      if (slider) setDisabled(slider, locked);
      setDisabled(reset, locked);
      row.classList.toggle("locked", spec.structural && running);
      const value = Object.hasOwn(values, spec.name) ? values[spec.name] : undefined;
      row.classList.toggle("changed", value !== undefined && !sameValue(value, spec.default));
      if (value === undefined || (document.activeElement === input && !restore.delete(spec.name))) continue;
      if (input.type === "checkbox") input.checked = Boolean(value);
      else if (input.tagName === "SELECT") {
        const index = spec.choices.findIndex((c) => sameValue(c, value) || String(c) === String(value));
        if (index >= 0) input.value = String(index);
      } else input.value = shownNumber(value);
      if (slider) slider.value = String(value);
    }
    const levels = session.attributes ?? {};
    for (const { attribute, input, label, supported } of attrRows.values()) {
      setDisabled(input, !connected || !supported);
      if (!supported || (document.activeElement === input && !restore.delete(`attr:${attribute.name}`))) continue;
      const level = levels[attribute.name] ?? -1;
      input.value = String(level);
      setText(label, levelLabel(attribute, level));
    }
    restore.clear();
    return false;
  }

  return { render };
}
