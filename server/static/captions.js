// Captions as the native protocol sends them (docs/protocol.md): one line per segment, committed
// text in full colour and the tentative tail dimmed; finals collected for SRT/VTT downloads.
// Shared by the speaker's page (app.js) and a room's viewer (room.js).

const MAX_SEGMENTS_SHOWN = 300;

const UNSPACED_SCRIPT = /[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]/;

// A space between committed text and the tentative tail, unless either side is CJK or has one.
function separator(before, after) {
  if (!before || !after || /\s$/.test(before) || /^\s/.test(after)) return "";
  return UNSPACED_SCRIPT.test(before.at(-1)) || UNSPACED_SCRIPT.test(after[0]) ? "" : " ";
}

export class CaptionView {
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

export function toSrt(finals) {
  return finals
    .map((f, i) => `${i + 1}\n${timestamp(f.start_ms, ",")} --> ${timestamp(Math.max(f.end_ms, f.start_ms + 1), ",")}\n${f.text}\n`)
    .join("\n");
}

export function toVtt(finals) {
  const cues = finals.map((f) => `${timestamp(f.start_ms, ".")} --> ${timestamp(Math.max(f.end_ms, f.start_ms + 1), ".")}\n${f.text}\n`);
  return `WEBVTT\n\n${cues.join("\n")}`;
}

export function download(text, filename, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

