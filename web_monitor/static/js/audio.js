// Web Audio playback of the demo: on each CLOCK the bar's human notes and the generated notes the
// page holds for it are scheduled at their times; a generated bar that arrives after its downbeat
// plays its onsets still ahead. A small synth of our own: oscillator + envelope per note, a
// brighter filtered timbre for the agent, noise bursts (and a pitched kick) for drum tracks.
import { noteKey } from "./state.js";

// Playback runs this much behind the clock so notes of a batch that arrives up to one update
// period late (updates come at most 20 per second) keep their rhythm instead of being skipped.
const DELAY_S = 0.12;
const CLOCKS_KEPT = 8;
const MAX_NOTES_PER_BAR = 256;

export function createAudio() {
  let ctx = null;
  let master = null;
  let humanBus = null;
  let agentBus = null;
  let noise = null;
  let volume = 0.6;
  let humanOn = true;
  let agentOn = true;
  const clocks = new Map(); // bar -> CLOCK
  const agentVoices = new Map(); // "track:bar" -> [AudioScheduledSourceNode] (stopped when replaced)
  const counts = { human: 0, agent: 0 }; // voices scheduled since audio was switched on (for tests)

  /** Unix seconds -> AudioContext time, through the page's clock (performance.timeOrigin). */
  function contextTime(unixSeconds) {
    const nowUnix = (performance.timeOrigin + performance.now()) / 1000;
    return ctx.currentTime + (unixSeconds - nowUnix) + DELAY_S;
  }

  async function enable() {
    if (!ctx) {
      ctx = new AudioContext({ latencyHint: "interactive" });
      master = ctx.createGain();
      master.gain.value = volume;
      const limiter = ctx.createDynamicsCompressor();
      limiter.threshold.value = -10;
      limiter.ratio.value = 8;
      master.connect(limiter).connect(ctx.destination);
      humanBus = ctx.createGain();
      agentBus = ctx.createGain();
      humanBus.gain.value = humanOn ? 1 : 0;
      agentBus.gain.value = agentOn ? 1 : 0;
      humanBus.connect(master);
      agentBus.connect(master);
      noise = ctx.createBuffer(1, ctx.sampleRate, ctx.sampleRate);
      const samples = noise.getChannelData(0);
      for (let i = 0; i < samples.length; i++) samples[i] = Math.random() * 2 - 1;
    }
    await ctx.resume();
    return ctx.state;
  }

  async function disable() {
    if (!ctx) return;
    const closing = ctx;
    ctx = null;
    agentVoices.clear();
    await closing.close();
  }

  function setVolume(value) {
    volume = value;
    if (master) master.gain.setTargetAtTime(value, ctx.currentTime, 0.02);
  }

  function setBus(which, on) {
    if (which === "human") humanOn = on;
    else agentOn = on;
    const bus = which === "human" ? humanBus : agentBus;
    if (bus) bus.gain.setTargetAtTime(on ? 1 : 0, ctx.currentTime, 0.02);
  }

  // ---- voices ----------------------------------------------------------------------------------------
  function tone(time, duration, pitch, velocity, agent) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const level = 0.05 + 0.17 * (velocity / 127) ** 1.5;
    osc.type = agent ? "sawtooth" : "triangle";
    osc.frequency.value = 440 * 2 ** ((pitch - 69) / 12);
    const release = Math.max(time + 0.02, time + duration);
    gain.gain.setValueAtTime(0, time);
    gain.gain.linearRampToValueAtTime(level, time + 0.006);
    gain.gain.setTargetAtTime(level * (agent ? 0.7 : 0.45), time + 0.006, agent ? 0.2 : 0.12);
    gain.gain.setTargetAtTime(0, release, 0.05);
    if (agent) {
      const filter = ctx.createBiquadFilter();
      filter.type = "lowpass";
      filter.frequency.value = 900 + 12 * pitch;
      filter.Q.value = 2;
      osc.connect(filter).connect(gain);
    } else {
      osc.connect(gain);
    }
    gain.connect(agent ? agentBus : humanBus);
    osc.start(time);
    osc.stop(release + 0.3);
    osc.onended = () => gain.disconnect();
    return osc;
  }

  function drum(time, pitch, velocity, agent) {
    const bus = agent ? agentBus : humanBus;
    const level = 0.1 + 0.35 * (velocity / 127);
    const gain = ctx.createGain();
    gain.connect(bus);
    if (pitch === 35 || pitch === 36) {
      const osc = ctx.createOscillator();
      osc.frequency.setValueAtTime(140, time);
      osc.frequency.exponentialRampToValueAtTime(45, time + 0.12);
      gain.gain.setValueAtTime(level * 1.6, time);
      gain.gain.exponentialRampToValueAtTime(0.001, time + 0.25);
      osc.connect(gain);
      osc.start(time);
      osc.stop(time + 0.3);
      osc.onended = () => gain.disconnect();
      return osc;
    }
    const source = ctx.createBufferSource();
    source.buffer = noise;
    const filter = ctx.createBiquadFilter();
    const cymbal = [42, 44, 46, 49, 51, 52, 53, 55, 57, 59].includes(pitch);
    filter.type = cymbal ? "highpass" : "bandpass";
    filter.frequency.value = cymbal ? 7000 : pitch === 38 || pitch === 40 ? 1800 : 300 + 20 * (pitch - 40);
    const length = pitch === 46 || pitch === 49 || pitch === 57 ? 0.35 : cymbal ? 0.06 : 0.14;
    gain.gain.setValueAtTime(level, time);
    gain.gain.exponentialRampToValueAtTime(0.001, time + length);
    source.connect(filter).connect(gain);
    source.start(time, Math.random() * 0.5);
    source.stop(time + length + 0.02);
    source.onended = () => gain.disconnect();
    return source;
  }

  /** Schedule `notes` of `clock`'s bar; onsets already passed are skipped. */
  function schedule(notes, clock, isDrum, agent) {
    const voices = [];
    const now = ctx.currentTime;
    for (const note of notes.slice(0, MAX_NOTES_PER_BAR)) {
      const start = contextTime(clock.at + note.onset * clock.period_s);
      if (start < now - 0.005) continue;
      const duration = Math.max(0.03, note.duration * clock.period_s);
      voices.push(isDrum(note.track) ? drum(start, note.pitch, note.velocity, agent) : tone(start, duration, note.pitch, note.velocity, agent));
      counts[agent ? "agent" : "human"] += 1;
    }
    return voices;
  }

  function stopVoices(key) {
    const voices = agentVoices.get(key);
    if (!voices) return;
    for (const voice of voices) {
      try {
        voice.stop();
      } catch {
        // already stopped: nothing to undo
      }
    }
    agentVoices.delete(key);
  }

  function drumLookup(model) {
    const drums = new Set((model.session?.tracks ?? []).filter((t) => t.is_drum).map((t) => t.track_id));
    return (track) => drums.has(track);
  }

  // ---- events --------------------------------------------------------------------------------------------
  /** A CLOCK: schedule the bar's human notes and the generated notes held for it. */
  function onClock(clock, model) {
    clocks.set(clock.bar, clock);
    while (clocks.size > CLOCKS_KEPT) clocks.delete(clocks.keys().next().value);
    if (!ctx || ctx.state !== "running") return;
    const isDrum = drumLookup(model);
    schedule(clock.human ?? [], clock, isDrum, false);
    for (const [key, notes] of model.generated) {
      if (!notes.length || notes[0].bar !== clock.bar) continue;
      stopVoices(key);
      agentVoices.set(key, schedule(notes, clock, isDrum, true));
    }
    for (const key of agentVoices.keys()) if (Number(key.split(":")[1]) < clock.bar - 2) agentVoices.delete(key);
  }

  /** A GENBAR: if its bar's clock has passed already, play what is still ahead (replacing a version). */
  function onGenerated(genbar, model) {
    if (!ctx || ctx.state !== "running") return;
    const clock = clocks.get(genbar.bar);
    if (!clock) return; // its CLOCK schedules it
    const key = noteKey(genbar.track, genbar.bar);
    stopVoices(key);
    const notes = (genbar.notes ?? []).map((n) => ({ ...n, track: genbar.track }));
    agentVoices.set(key, schedule(notes, clock, drumLookup(model), true));
  }

  function describe() {
    if (!ctx) return "off";
    return `${ctx.state} · ${Math.round(ctx.sampleRate / 100) / 10} kHz · +${Math.round(DELAY_S * 1000)} ms`;
  }

  return { enable, disable, setVolume, setBus, onClock, onGenerated, describe, counts };
}
