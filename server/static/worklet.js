// Microphone audio → 16 kHz mono PCM16 frames, posted to the page as ArrayBuffers.
// Runs in the AudioWorkletGlobalScope, where `sampleRate` is the context's rate.

const PCM16_FULL_SCALE = 32768;

class Pcm16Writer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRateHz = 16000, frameMs = 100 } = options.processorOptions || {};
    this.ratio = sampleRate / targetRateHz; // input samples per output sample
    this.frameSamples = Math.round((targetRateHz * frameMs) / 1000);
    this.frame = new Int16Array(this.frameSamples);
    this.nFrame = 0;
    this.pending = new Float32Array(0); // input samples not yet turned into output
    this.position = 0; // where the next output sample starts in `pending`, in input samples
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const mono = this.downmix(channels);
    if (this.ratio === 1) {
      for (let i = 0; i < mono.length; i++) this.write(mono[i]);
    } else {
      this.resample(mono);
    }
    return true;
  }

  downmix(channels) {
    if (channels.length === 1) return channels[0];
    const out = new Float32Array(channels[0].length);
    for (const channel of channels) for (let i = 0; i < out.length; i++) out[i] += channel[i] / channels.length;
    return out;
  }

  // Decimates by averaging the input samples each output sample covers (a box low-pass), which is
  // enough to keep speech clean when going down from 44.1 or 48 kHz.
  resample(input) {
    const joined = new Float32Array(this.pending.length + input.length);
    joined.set(this.pending);
    joined.set(input, this.pending.length);
    let position = this.position;
    while (position + this.ratio <= joined.length) {
      const from = Math.floor(position);
      const to = Math.max(from + 1, Math.floor(position + this.ratio));
      let sum = 0;
      for (let i = from; i < to; i++) sum += joined[i];
      this.write(sum / (to - from));
      position += this.ratio;
    }
    const keepFrom = Math.floor(position);
    this.pending = joined.slice(keepFrom);
    this.position = position - keepFrom;
  }

  write(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.frame[this.nFrame++] = Math.max(-PCM16_FULL_SCALE, Math.min(PCM16_FULL_SCALE - 1, Math.round(clipped * PCM16_FULL_SCALE)));
    if (this.nFrame === this.frameSamples) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.nFrame = 0;
    }
  }
}

registerProcessor("pcm16-writer", Pcm16Writer);
