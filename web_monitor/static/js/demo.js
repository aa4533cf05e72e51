// The demo performer panel: a piece (bundled or uploaded MIDI), BPM, the agent's instrument;
// Start/Stop go out as the `demo` event; the DEMO state comes back in snapshots and updates.
import { $, el, setAttr, setDisabled, setText, showAck } from "./dom.js";
import { GM_PROGRAMS } from "./gm.js";

const DEFAULT_AGENT_PROGRAM = 32; // Acoustic Bass

function meterText(meter) {
  return Array.isArray(meter) ? `${meter[0]}/${meter[1]}` : "";
}

function pieceLabel(piece) {
  const details = [piece.bars != null ? `${piece.bars} bars` : null, meterText(piece.meter)].filter(Boolean).join(", ");
  const title = piece.title && piece.title !== piece.id ? `${piece.id} — ${piece.title}` : piece.id;
  return details ? `${title} (${details})` : title;
}

export function createDemoView(sendDemo) {
  const pieceSelect = $("demo-piece");
  const bpmInput = $("demo-bpm");
  const programSelect = $("demo-program");
  const drumInput = $("demo-drum");
  const upload = $("demo-upload");
  const ack = document.querySelector('.ack[data-for="demo"]');
  const uploaded = []; // pieces added by this page's uploads
  let piecesKey = "";
  let drawn = "";
  let bpmTouched = false;
  let lastInfo = null;

  programSelect.replaceChildren(...GM_PROGRAMS.map((name, program) => el("option", { value: program }, `${program} ${name}`)));
  programSelect.value = String(DEFAULT_AGENT_PROGRAM);
  bpmInput.addEventListener("input", () => { bpmTouched = true; });

  upload.addEventListener("change", async () => {
    const file = upload.files?.[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    setText(ack, `uploading ${file.name}…`);
    ack.classList.remove("error");
    try {
      const response = await fetch("/demo/upload", { method: "POST", body: form });
      const body = await response.json().catch(() => ({}));
      const piece = body.piece ?? body.id; // the contract says "piece"; a Piece record says "id"
      if (!response.ok || !piece) throw new Error(body.message ?? body.error ?? `HTTP ${response.status}`);
      const label = `${file.name} (upload: ${body.bars ?? "?"} bars, ${meterText(body.meter)}, ${body.voices ?? "?"} voices)`;
      uploaded.push({ id: piece, label });
      piecesKey = "";
      fillPieces(lastInfo);
      pieceSelect.value = piece;
      showAck(ack, { ok: true });
      setText(ack, `uploaded as ${piece}`);
    } catch (error) {
      showAck(ack, { ok: false, message: `upload failed: ${error.message}` });
    }
    upload.value = "";
  });

  $("demo-start").addEventListener("click", async () => {
    const bpm = Number(bpmInput.value);
    if (!Number.isFinite(bpm) || bpm < 20 || bpm > 300) {
      showAck(ack, { ok: false, message: "BPM must be in 20..300" });
      return;
    }
    const reply = await sendDemo({
      action: "start",
      piece: pieceSelect.value,
      bpm,
      agent_program: Number(programSelect.value),
      agent_is_drum: drumInput.checked,
    });
    showDemoAck(reply);
  });
  $("demo-stop").addEventListener("click", async () => showDemoAck(await sendDemo({ action: "stop" })));

  function showDemoAck(reply) {
    showAck(ack, reply.ok ? { ok: true } : { ok: false, code: reply.code, message: reply.message });
    if (reply.ok && reply.message) setText(ack, reply.message);
  }

  function fillPieces(info) {
    const pieces = [...(info?.demo?.pieces ?? [])];
    for (const piece of uploaded) if (!pieces.some((p) => p.id === piece.id)) pieces.push(piece);
    const key = JSON.stringify(pieces.map((p) => p.id));
    if (key === piecesKey) return;
    piecesKey = key;
    const selected = pieceSelect.value || info?.demo?.default;
    pieceSelect.replaceChildren(...pieces.map((p) => el("option", { value: p.id }, p.label ?? pieceLabel(p))));
    if (pieces.some((p) => p.id === selected)) pieceSelect.value = selected;
  }

  function render(model, connected) {
    const key = `${model.version.demo}|${model.version.info}|${connected}`;
    if (key === drawn) return false;
    drawn = key;
    lastInfo = model.info;
    fillPieces(model.info);
    const demo = model.demo ?? { running: false, message: "" };
    if (!bpmTouched && demo.bpm) bpmInput.value = String(Math.round(demo.bpm * 100) / 100);
    setDisabled($("demo-start"), !connected || Boolean(demo.running));
    setDisabled($("demo-stop"), !connected); // stopping is harmless when nothing plays
    const node = $("demo-state");
    setAttr(node, "data-running", Boolean(demo.running));
    const parts = [demo.running ? "▶ running" : "■ stopped"];
    if (demo.piece) parts.push(demo.piece);
    if (demo.bpm) parts.push(`${Math.round(demo.bpm * 10) / 10} BPM`);
    if (demo.meter) parts.push(meterText(demo.meter));
    if (demo.bar != null) parts.push(`bar ${demo.bar}`);
    if (demo.loop_bars) parts.push(`loop ${demo.loop_bars} bars`);
    const text = parts.join(" · ") + (demo.message ? ` — ${demo.message}` : "");
    setText(node, text);
    return false;
  }

  return { render };
}
