// streamst room viewer: reads a room's captions (no microphone) from
// /v1/rooms/{id}/captions?target=LANG&key=READ_KEY (docs/protocol.md, "Rooms"). Changing the
// language reconnects: the room sends that language's recent history, then live captions.

import { CaptionView, download, toSrt, toVtt } from "/static/captions.js";

const RECONNECT_DELAYS_MS = [1000, 2000, 5000, 10000]; // after a dropped connection, while the room lives

const $ = (id) => document.getElementById(id);
const ui = {
  target: $("target"),
  fullscreen: $("fullscreen"),
  theme: $("theme"),
  status: $("status"),
  captions: $("captions"),
  showSource: $("show-source"),
  showTentative: $("show-tentative"),
  textSize: $("text-size"),
  srt: $("download-srt"),
  vtt: $("download-vtt"),
};
const params = new URLSearchParams(location.search);
const roomId = decodeURIComponent(location.pathname.split("/")[2] || "");
const key = params.get("key") || "";

function setStatus(text, kind = "") {
  ui.status.textContent = text;
  ui.status.className = `status ${kind}`;
}

// ---------------------------------------------------------------------------------------------
// Languages

async function loadLanguages() {
  const response = await fetch("/v1/languages");
  const languages = await response.json();
  const browserLanguage = (navigator.language || "").split("-")[0];
  const wanted = [params.get("target"), localStorage.getItem("streamst.target"), browserLanguage, "en"];
  const selected = wanted.find((code) => code && languages.targets.some((o) => o.code === code));
  ui.target.replaceChildren(
    ...languages.targets.map((o) => new Option(`${o.name} (${o.code})`, o.code, false, o.code === selected)),
  );
  return languages.targets;
}

function languageName(code) {
  return [...ui.target.options].find((o) => o.value === code)?.text.replace(/ \(.*\)$/, "") || code;
}

// ---------------------------------------------------------------------------------------------
// The room's captions

class RoomReader {
  constructor(view) {
    this.view = view;
    this.ws = null;
    this.ended = false;
    this.error = null;
    this.attempt = 0;
    this.timer = null;
  }

  open(target) {
    this.close();
    this.ended = false;
    this.error = null;
    this.target = target;
    this.view.clear();
    updateDownloads();
    setStatus(`Connecting to the room in ${languageName(target)}…`);
    const url = new URL(`/v1/rooms/${encodeURIComponent(roomId)}/captions`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("target", target);
    url.searchParams.set("key", key);
    const ws = new WebSocket(url.href);
    ws.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    ws.onclose = (event) => this.onClose(ws, event);
    this.ws = ws;
  }

  close() {
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
  }

  onMessage(message) {
    switch (message.type) {
      case "joined":
        this.attempt = 0;
        setStatus(this.liveText(message.source), "live");
        break;
      case "partial":
      case "final":
        this.view.update(message);
        updateDownloads();
        break;
      case "error":
        this.error = message;
        setStatus(`${message.message} (${message.code})`, "error");
        break;
      case "end":
        this.ended = true;
        if (!this.error) {
          setStatus("The talk has ended. The downloads keep everything until you leave this page.", "ended");
        }
        break;
    }
  }

  liveText(source) {
    const from = source ? `${languageName(source)} → ` : "";
    const waiting = source ? "" : " The speaker has not started yet.";
    return `Live: ${from}${languageName(this.target)}.${waiting}`;
  }

  async onClose(ws, event) {
    if (ws !== this.ws || this.ended || this.error) return;
    const problem = await roomProblem();
    if (problem) return setStatus(problem, "error");
    const delay = RECONNECT_DELAYS_MS[Math.min(this.attempt, RECONNECT_DELAYS_MS.length - 1)];
    this.attempt += 1;
    setStatus(`The connection dropped (code ${event.code}); reconnecting in ${delay / 1000} s…`, "error");
    this.timer = setTimeout(() => this.open(this.target), delay);
  }
}

// Why the room cannot be read: the browser hides a refused handshake's body, so ask the server.
async function roomProblem() {
  if (!roomId) return "This address names no room: open the link the speaker shared.";
  if (!key) return "This link has no key: open the full link the speaker shared (it ends with ?key=…).";
  try {
    const response = await fetch(`/v1/rooms/${encodeURIComponent(roomId)}`);
    if (response.status === 404) return "There is no such room: the talk has ended, or the link is wrong.";
    const room = await response.json();
    if (room.listeners >= room.max_listeners) {
      return `The room is full (${room.listeners} of ${room.max_listeners} listeners). Try again in a minute.`;
    }
    if (!(ui.target.value in room.languages) && Object.keys(room.languages).length >= room.max_languages) {
      const offered = Object.keys(room.languages).map(languageName).join(", ");
      return `The room already translates into as many languages as it can: choose one of ${offered}.`;
    }
    return null;
  } catch {
    return "Cannot reach the server. Check the network connection, then reload the page.";
  }
}

// ---------------------------------------------------------------------------------------------
// Presentation

function applyDisplayOptions() {
  document.body.classList.toggle("hide-tentative", !ui.showTentative.checked);
  document.body.classList.toggle("show-source", ui.showSource.checked);
  document.documentElement.style.setProperty("--caption-scale", ui.textSize.value);
}

function setTheme(theme) {
  document.documentElement.classList.toggle("theme-light", theme === "light");
  document.documentElement.classList.toggle("theme-dark", theme === "dark");
  ui.theme.textContent = theme === "light" ? "Dark" : "Light";
  localStorage.setItem("streamst.theme", theme);
}

function currentTheme() {
  if (document.documentElement.classList.contains("theme-light")) return "light";
  if (document.documentElement.classList.contains("theme-dark")) return "dark";
  return matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
}

async function toggleFullscreen() {
  if (document.fullscreenElement) return document.exitFullscreen();
  try {
    await document.documentElement.requestFullscreen();
  } catch {
    document.body.classList.toggle("presenting"); // no full screen here: hide the controls at least
  }
}

function updateDownloads() {
  const none = view.finals.length === 0;
  ui.srt.disabled = none;
  ui.vtt.disabled = none;
}

// ---------------------------------------------------------------------------------------------
// Wiring

const view = new CaptionView(ui.captions);
const reader = new RoomReader(view);

function fileName(extension) {
  return `room-${roomId}-${reader.target || ui.target.value}.${extension}`;
}

ui.target.addEventListener("change", () => {
  localStorage.setItem("streamst.target", ui.target.value);
  reader.open(ui.target.value);
});
ui.fullscreen.addEventListener("click", toggleFullscreen);
document.addEventListener("fullscreenchange", () => {
  document.body.classList.toggle("presenting", Boolean(document.fullscreenElement));
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") document.body.classList.remove("presenting");
});
ui.captions.addEventListener("dblclick", toggleFullscreen);
ui.theme.addEventListener("click", () => setTheme(currentTheme() === "light" ? "dark" : "light"));
ui.srt.addEventListener("click", () => download(toSrt(view.finals), fileName("srt"), "application/x-subrip"));
ui.vtt.addEventListener("click", () => download(toVtt(view.finals), fileName("vtt"), "text/vtt"));
for (const control of [ui.showTentative, ui.showSource, ui.textSize]) {
  control.addEventListener("input", applyDisplayOptions);
}
if (params.get("source_text") === "1") ui.showSource.checked = true;
applyDisplayOptions();
setTheme(params.get("theme") || localStorage.getItem("streamst.theme") || currentTheme());

loadLanguages().then(
  () => reader.open(ui.target.value),
  () => setStatus("Cannot reach the server to list languages; check the address and reload.", "error"),
);
