// streamst live captions: microphone → /v1/stream (native protocol, see docs/protocol.md) → captions.

const TARGET_RATE_HZ = 16000;
const FRAME_MS = 100;
const MAX_QUEUED_FRAMES = 100; // audio held while the session opens: 10 s
const MAX_SEGMENTS_SHOWN = 300;
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
};
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
// Captions

const UNSPACED_SCRIPT = /[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]/;

// A space between committed text and the tentative tail, unless either side is CJK or has one.
function separator(before, after) {
  if (!before || !after || /\s$/.test(before) || /^\s/.test(after)) return "";
  return UNSPACED_SCRIPT.test(before.at(-1)) || UNSPACED_SCRIPT.test(after[0]) ? "" : " ";
}

class CaptionView {
  constructor(container) {
    this.container = container;
    this.segments = new Map(); // segment_id → {root, committed, tentative, source}
    this.finals = []; // {start_ms, end_ms, text} for SRT/VTT
  }

  clear() {
    this.container.replaceChildren();
    this.segments.clear();
    this.finals = [];
  }

  update(message) {
    const atBottom = this.isScrolledToBottom();
    const segment = this.segment(message.segment_id);
    segment.committed.textContent = message.committed_text;
    segment.tentative.textContent = separator(message.committed_text, message.tentative_text) + message.tentative_text;
    segment.placeholder.textContent = !message.committed_text && !message.tentative_text && message.type === "partial" ? "…" : "";
    segment.source.textContent = message.source_text;
    if (message.type === "final") {
      segment.root.classList.add("final");
      if (message.committed_text) {
        this.finals.push({ start_ms: message.start_ms, end_ms: message.end_ms, text: message.committed_text });
      } else {
        segment.root.remove();
        this.segments.delete(message.segment_id);
      }
    }
    this.trim();
    if (atBottom) this.container.scrollTop = this.container.scrollHeight;
  }

  segment(id) {
    let segment = this.segments.get(id);
    if (segment) return segment;
    const root = document.createElement("div");
    root.className = "segment";
    root.dataset.segmentId = id;
    const target = document.createElement("p");
    target.className = "target";
    const committed = document.createElement("span");
    committed.className = "committed";
    const tentative = document.createElement("span");
    tentative.className = "tentative";
    const placeholder = document.createElement("span");
    placeholder.className = "placeholder";
    target.append(committed, tentative, placeholder);
    const source = document.createElement("p");
    source.className = "source";
    root.append(target, source);
    this.container.append(root);
    segment = { root, committed, tentative, placeholder, source };
    this.segments.set(id, segment);
    return segment;
  }

  trim() {
    while (this.container.children.length > MAX_SEGMENTS_SHOWN) {
      const first = this.container.firstElementChild;
      this.segments.delete(Number(first.dataset.segmentId));
      first.remove();
    }
  }

  isScrolledToBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 40;
  }
}

// ---------------------------------------------------------------------------------------------
// Subtitles

function timestamp(ms, decimal) {
  ms = Math.max(0, Math.round(ms));
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const hours = Math.floor(ms / 3600000);
  const minutes = Math.floor((ms % 3600000) / 60000);
  const seconds = Math.floor((ms % 60000) / 1000);
  return `${pad(hours)}:${pad(minutes)}:${pad(seconds)}${decimal}${pad(ms % 1000, 3)}`;
}

function toSrt(finals) {
  return finals
    .map((f, i) => `${i + 1}\n${timestamp(f.start_ms, ",")} --> ${timestamp(Math.max(f.end_ms, f.start_ms + 1), ",")}\n${f.text}\n`)
    .join("\n");
}

function toVtt(finals) {
  const cues = finals.map((f) => `${timestamp(f.start_ms, ".")} --> ${timestamp(Math.max(f.end_ms, f.start_ms + 1), ".")}\n${f.text}\n`);
  return `WEBVTT\n\n${cues.join("\n")}`;
}

function download(text, filename, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
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

  // `settings`: {mode, policy, knob}, null for the server's defaults.
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
// Wiring

const view = new CaptionView(ui.captions);
let session = null;

function setButtons(running) {
  ui.start.disabled = running;
  ui.stop.disabled = !running;
  ui.source.disabled = running;
  ui.target.disabled = running;
  ui.mode.disabled = running;
  ui.policy.disabled = running;
  ui.knob.disabled = running;
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
  session = new CaptionSession(view);
  try {
    setStatus("Opening the microphone…");
    await session.start(source, target, { mode: ui.mode.value, policy: ui.policy.value, knob: knobValue() });
  } catch (error) {
    session.releaseMicrophone();
    setButtons(false);
    setStatus(error instanceof UserFacingError ? error.message : `Could not start: ${error.message || error}`, "error");
  }
});

ui.stop.addEventListener("click", () => session?.stop());
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
