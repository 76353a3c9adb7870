// streamst live captions: microphone → /v1/stream (native protocol, see docs/protocol.md) → captions.

import { CaptionView, download, toSrt, toVtt } from "/static/captions.js";

const TARGET_RATE_HZ = 16000;
const FRAME_MS = 100;
const MAX_QUEUED_FRAMES = 100; // audio held while the session opens: 10 s
const PROTOCOL_VERSION = 1;

const $ = (id) => document.getElementById(id);
const ui = {
  source: $("source"),
  target: $("target"),
  mode: $("mode"),
  policy: $("policy"),
  knob: $("knob"),
  knobField: $("knob-field"),
  knobName: $("knob-name"),
  start: $("start"),
  stop: $("stop"),
  status: $("status"),
  captions: $("captions"),
  showTentative: $("show-tentative"),
  showSource: $("show-source"),
  textSize: $("text-size"),
  srt: $("download-srt"),
  vtt: $("download-vtt"),
  roomShare: $("room-share"),
  roomPanel: $("room-panel"),
  roomQr: $("room-qr"),
  roomLink: $("room-link"),
  roomReaders: $("room-readers"),
};
const ROOM_POLL_MS = 2000; // how often the speaker's page asks how many listeners read each language
const params = new URLSearchParams(location.search);

// ---------------------------------------------------------------------------------------------
// Status line

function setStatus(text, kind = "") {
  ui.status.textContent = text;
  ui.status.className = `status ${kind}`;
}

// ---------------------------------------------------------------------------------------------
// Modes, their policies and each policy's latency knob (the specs come from /v1/status)

const KNOB_STEP = { integer: 1, number: 0.05 };
let modeSpecs = {}; // mode → {help, default_policy, policies: {name: {help, knob}}}

async function loadModes() {
  try {
    const status = await (await fetch("/v1/status")).json();
    modeSpecs = status.policies || {};
    const wanted = params.get("mode") || status.default_mode;
    ui.mode.replaceChildren(...status.modes.map((mode) => new Option(mode, mode, false, mode === wanted)));
  } catch {
    ui.mode.replaceChildren();
  }
  showPolicies(params.get("policy"), params.get("knob"));
}

function knobSpec(mode, policy) {
  return modeSpecs[mode]?.policies[policy]?.knob;
}

// Fills the policy select for the chosen mode, `wanted` (or the mode's default) selected.
function showPolicies(wanted, knob) {
  const spec = modeSpecs[ui.mode.value];
  const policies = Object.entries(spec?.policies || {});
  const selected = policies.some(([name]) => name === wanted) ? wanted : spec?.default_policy;
  ui.policy.replaceChildren(
    ...policies.map(([name, policy]) => Object.assign(new Option(name, name, false, name === selected), { title: policy.help })),
  );
  ui.mode.title = spec?.help || "";
  showKnob(knob);
}

// Sets up the knob input for the chosen policy: its name, range and step; `value` or its default.
function showKnob(value) {
  const knob = knobSpec(ui.mode.value, ui.policy.value);
  ui.policy.title = ui.policy.selectedOptions[0]?.title || "";
  ui.knobField.hidden = !knob;
  if (!knob) return;
  const step = KNOB_STEP[knob.type] ?? KNOB_STEP.number;
  const inset = knob.exclusive ? step : 0; // the input's bounds are inclusive
  const bound = (limit, offset) => (limit == null ? "" : limit + offset);
  Object.assign(ui.knob, {
    min: bound(knob.minimum, inset),
    max: bound(knob.maximum, -inset),
    step,
    placeholder: knob.default,
    value: value ?? knob.default,
    title: knob.help,
  });
  ui.knobName.textContent = knob.name;
}

// A room runs the cascade: the chosen policy and knob if they are the cascade's, else its defaults.
function cascadeSettings() {
  return ui.mode.value === "cascade" ? { policy: ui.policy.value, knob: knobValue() } : { policy: null, knob: null };
}

// The knob as a number; null (the policy's default) when the field is hidden or empty.
function knobValue() {
  return !ui.knobField.hidden && Number.isFinite(ui.knob.valueAsNumber) ? ui.knob.valueAsNumber : null;
}

// "direct, wait-k k=2" from a `ready` message.
function settingsText({ mode, policy, knob }) {
  if (!policy) return mode;
  if (knob == null) return `${mode}, ${policy}`;
  return `${mode}, ${policy} ${knobSpec(mode, policy)?.name ?? "knob"}=${knob}`;
}

// ---------------------------------------------------------------------------------------------
// Languages

async function loadLanguages() {
  let languages;
  try {
    const response = await fetch("/v1/languages");
    languages = await response.json();
  } catch (error) {
    setStatus("Cannot reach the server to list languages; check the address and reload.", "error");
    return;
  }
  fillSelect(ui.source, languages.sources, pickDefault("source", languages.sources, "en"));
  const browserLanguage = (navigator.language || "").split("-")[0];
  const targetFallback = browserLanguage && browserLanguage !== ui.source.value ? browserLanguage : "zh";
  fillSelect(ui.target, languages.targets, pickDefault("target", languages.targets, targetFallback, "zh"));
}

function pickDefault(name, options, fallback, lastResort = options[0]?.code) {
  const wanted = [params.get(name), localStorage.getItem(`streamst.${name}`), fallback, lastResort];
  return wanted.find((code) => code && options.some((o) => o.code === code));
}

function fillSelect(select, options, selected) {
  select.replaceChildren(
    ...options.map((o) => {
      const option = new Option(`${o.name} (${o.code})`, o.code);
      option.selected = o.code === selected;
      return option;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Microphone

async function openMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
    throw new UserFacingError(
      "This browser cannot capture audio here: the page needs HTTPS (or localhost). " +
        "Ask the operator to start the server with --certfile and --keyfile, or use a current browser.",
    );
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    throw new UserFacingError(microphoneMessage(error));
  }
  let context;
  try {
    context = new AudioContext({ sampleRate: TARGET_RATE_HZ });
  } catch {
    context = new AudioContext();
  }
  await context.audioWorklet.addModule("/static/worklet.js");
  const input = context.createMediaStreamSource(stream);
  const writer = new AudioWorkletNode(context, "pcm16-writer", {
    processorOptions: { targetRateHz: TARGET_RATE_HZ, frameMs: FRAME_MS },
  });
  const mute = context.createGain();
  mute.gain.value = 0;
  input.connect(writer).connect(mute).connect(context.destination);
  if (context.state === "suspended") await context.resume();
  return {
    onFrame(callback) {
      writer.port.onmessage = (event) => callback(event.data);
    },
    close() {
      writer.port.onmessage = null;
      stream.getTracks().forEach((track) => track.stop());
      context.close();
    },
  };
}

function microphoneMessage(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this site (the icon in the address bar), then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, then press Start again.";
    case "NotReadableError":
      return "The microphone is busy or blocked by the system. Close other apps using it, then press Start again.";
    default:
      return `The microphone could not be opened (${error?.message || error}).`;
  }
}

class UserFacingError extends Error {}

// ---------------------------------------------------------------------------------------------
// Session

class CaptionSession {
  constructor(view) {
    this.view = view;
    this.ws = null;
    this.microphone = null;
    this.ready = false;
    this.queued = [];
    this.ended = false;
    this.lastError = null;
  }

  // `settings`: {mode, policy, knob, room}, null for the server's defaults; room: "new" shares it.
  async start(source, target, settings) {
    this.microphone = await openMicrophone();
    this.microphone.onFrame((frame) => this.sendAudio(frame));
    setStatus("Connecting…");
    this.ws = new WebSocket(streamUrl());
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () =>
      this.ws.send(
        JSON.stringify({
          type: "start",
          version: PROTOCOL_VERSION,
          source,
          target,
          mode: settings.mode || null,
          policy: settings.policy || null,
          knob: settings.knob,
          sample_rate_hz: TARGET_RATE_HZ,
          sample_format: "pcm16",
          ...(settings.room ? { room: settings.room } : {}),
        }),
      );
    this.ws.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    this.ws.onclose = (event) => this.onClose(event);
  }

  sendAudio(frame) {
    if (!this.ws || this.ended) return;
    if (!this.ready) {
      if (this.queued.length < MAX_QUEUED_FRAMES) this.queued.push(frame);
      return;
    }
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  onMessage(message) {
    switch (message.type) {
      case "ready":
        this.ready = true;
        for (const frame of this.queued.splice(0)) this.ws.send(frame);
        setStatus(`Live: ${message.source} → ${message.target} (${settingsText(message)}). Speak now.`, "live");
        if (message.room_id) showRoom(message.room_id, message.read_key);
        break;
      case "partial":
      case "final":
        this.view.update(message);
        updateDownloads();
        break;
      case "error":
        this.lastError = message;
        setStatus(`${message.message} (${message.code})`, "error");
        break;
      case "end":
        this.ended = true;
        if (!this.lastError) setStatus(message.reason === "shutdown" ? "The server is restarting; press Start to go on." : "Stopped.");
        break;
    }
  }

  async onClose(event) {
    this.releaseMicrophone();
    stopRoomPolling();
    setButtons(false);
    if (this.ended || this.lastError) return;
    setStatus(await refusalMessage(event), "error");
  }

  stop() {
    if (this.ws?.readyState === WebSocket.OPEN && this.ready) {
      this.ws.send(JSON.stringify({ type: "stop" }));
      setStatus("Finishing the last sentence…");
    } else {
      this.ws?.close();
    }
    this.releaseMicrophone();
  }

  releaseMicrophone() {
    this.microphone?.close();
    this.microphone = null;
  }
}

function streamUrl() {
  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = params.get("token");
  if (token) url.searchParams.set("token", token);
  return url.href;
}

// Why a connection closed before the server said anything: the browser hides the HTTP refusal,
// so ask the server's status endpoint.
async function refusalMessage(event) {
  try {
    const status = await (await fetch("/v1/status")).json();
    if (status.token_required && !params.get("token")) {
      return "This server needs a token: open the page with ?token=… in its address (ask the organiser).";
    }
    if (!status.accepting && status.sessions >= status.max_sessions) {
      return `The server is full (${status.sessions} of ${status.max_sessions} sessions in use). Try again in a minute.`;
    }
    if (status.shutting_down) return "The server is shutting down. Try again in a minute.";
    if (!status.accepting) return "The server is busy with the streams it has. Try again in a minute.";
    if (status.token_required) {
      return "The server refused this page: check the token in its address, or ask the organiser to allow this address.";
    }
    return `The connection closed unexpectedly (code ${event.code}). Press Start to try again.`;
  } catch {
    return "Cannot reach the server. Check the network connection, then press Start again.";
  }
}

// ---------------------------------------------------------------------------------------------
// Sharing as a room: the link and its QR code, and how many listeners read each language

let roomPoll = null;

function showRoom(roomId, readKey) {
  const link = new URL(`/room/${roomId}`, location.href);
  link.searchParams.set("key", readKey);
  ui.roomLink.href = link.href;
  ui.roomLink.textContent = link.href;
  ui.roomQr.src = `/v1/rooms/${roomId}/qr.svg?key=${encodeURIComponent(readKey)}`;
  ui.roomQr.onerror = () => (ui.roomQr.hidden = true);
  ui.roomPanel.hidden = false;
  stopRoomPolling();
  roomPoll = setInterval(() => showReaders(roomId), ROOM_POLL_MS);
}

async function showReaders(roomId) {
  try {
    const response = await fetch(`/v1/rooms/${roomId}`);
    if (!response.ok) return stopRoomPolling();
    const room = await response.json();
    const counts = Object.entries(room.languages)
      .filter(([, language]) => language.listeners > 0)
      .map(([code, language]) => `${code}: ${language.listeners}`);
    ui.roomReaders.textContent = counts.length
      ? `${room.listeners} listener${room.listeners === 1 ? "" : "s"} (${counts.join(" · ")})`
      : "No listeners yet.";
  } catch {
    // the next poll tries again
  }
}

function stopRoomPolling() {
  clearInterval(roomPoll);
  roomPoll = null;
}

// ---------------------------------------------------------------------------------------------
// Wiring

const view = new CaptionView(ui.captions);
let session = null;

function setButtons(running) {
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  ui.source.disabled = running;
  ui.target.disabled = running;
  ui.mode.disabled = running || ui.roomShare.checked;
  ui.policy.disabled = running;
  ui.knob.disabled = running;
  ui.roomShare.disabled = running;
}

function updateDownloads() {
  const none = view.finals.length === 0;
  ui.srt.disabled = none;
  ui.vtt.disabled = none;
}

function applyDisplayOptions() {
  document.body.classList.toggle("hide-tentative", !ui.showTentative.checked);
  document.body.classList.toggle("show-source", ui.showSource.checked);
  document.documentElement.style.setProperty("--caption-scale", ui.textSize.value);
}

ui.start.addEventListener("click", async () => {
  const source = ui.source.value;
  const target = ui.target.value;
  if (!source || !target) return setStatus("Choose both languages first.", "error");
  if (source === target) return setStatus("Choose a caption language different from the spoken one.", "error");
  localStorage.setItem("streamst.source", source);
  localStorage.setItem("streamst.target", target);
  view.clear();
  updateDownloads();
  setButtons(true);
  ui.roomPanel.hidden = true;
  const room = ui.roomShare.checked ? "new" : null;
  session = new CaptionSession(view);
  try {
    setStatus("Opening the microphone…");
    const settings = { mode: ui.mode.value, policy: ui.policy.value, knob: knobValue(), room };
    await session.start(source, target, room ? { ...settings, mode: "cascade", ...cascadeSettings() } : settings);
  } catch (error) {
    session.releaseMicrophone();
    setButtons(false);
    setStatus(error instanceof UserFacingError ? error.message : `Could not start: ${error.message || error}`, "error");
  }
});

ui.stop.addEventListener("click", () => session?.stop());
ui.roomShare.addEventListener("change", () => {
  // A room runs the cascade: show its policies while sharing is chosen.
  if (ui.roomShare.checked && ui.mode.value !== "cascade") {
    ui.mode.value = "cascade";
    showPolicies();
  }
  ui.mode.disabled = ui.roomShare.checked;
});
ui.mode.addEventListener("change", () => showPolicies());
ui.policy.addEventListener("change", () => showKnob());
ui.srt.addEventListener("click", () => download(toSrt(view.finals), "captions.srt", "application/x-subrip"));
ui.vtt.addEventListener("click", () => download(toVtt(view.finals), "captions.vtt", "text/vtt"));
for (const control of [ui.showTentative, ui.showSource, ui.textSize]) {
  control.addEventListener("input", applyDisplayOptions);
}
if (params.get("source_text") === "1") ui.showSource.checked = true;
applyDisplayOptions();
loadLanguages();
loadModes();
