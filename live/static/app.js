// egstalker live page: streams audio (a file, the sample clip or the microphone) to /ws as 16 kHz PCM16 and
// shows the JPEG frames that come back. A file's audio is played here, each frame drawn when the audio
// clock reaches its time (frame i at i / fps), so sound and picture stay together; the microphone is not
// played back (you hear yourself) and its frames are drawn as they arrive.
"use strict";

const RATE = 16000;
const CHUNK = 640; // samples per message from the microphone (40 ms)
const FILE_CHUNK = 8000; // samples per message from a file (0.5 s)
const AHEAD_S = 2.0; // a file's audio is sent at most this far ahead of what is being played

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const query = token ? `?token=${encodeURIComponent(token)}` : "";
const canvas = $("view");
const g = canvas.getContext("2d");

// What the page has seen; read by tests and shown in the status line.
const stats = (window.liveStats = {
  state: "connecting", frames: 0, drawn: 0, samplesSent: 0, firstFrameMs: null, latencyMs: null, fps: 0,
  done: null, errors: [],
});

let ws = null;
let info = null;
let stream = null; // the stream in progress

function showStatus() {
  const parts = [stats.state];
  if (stats.firstFrameMs !== null) parts.push(`first frame ${stats.firstFrameMs.toFixed(0)} ms`);
  if (stats.latencyMs !== null) parts.push(`latency ${stats.latencyMs.toFixed(0)} ms`);
  parts.push(`${stats.fps.toFixed(1)} fps`, `${stats.frames} frames`);
  if (stats.done) parts.push(`${stats.done.frames} frames for ${stats.done.audio_seconds.toFixed(2)} s of audio`);
  $("status").textContent = parts.join(" · ");
  $("status").classList.remove("error");
}

function showError(message) {
  stats.errors.push(message);
  stats.state = "error";
  $("status").textContent = `error: ${message}`;
  $("status").classList.add("error");
  finishStream();
}

window.addEventListener("error", (e) => showError(e.message));
window.addEventListener("unhandledrejection", (e) => showError(String(e.reason)));

function setRunning(running) {
  $("start").disabled = running || !info;
  $("stop").disabled = !running;
}

function send(message) {
  ws.send(JSON.stringify(message));
}

function sendPcm(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32767)));
  ws.send(pcm.buffer);
  const now = performance.now();
  if (stream.t0 === null) stream.t0 = now;
  stats.samplesSent += samples.length;
  stream.sendLog.push([stats.samplesSent, now]);
}

// The time at which the audio a frame needs (its look-ahead) had been sent.
function neededSentAt(index) {
  const need = Math.min(stats.samplesSent, Math.ceil((index / info.fps + info.lookahead_ms / 1000) * RATE));
  const log = stream.sendLog;
  while (log.length > 1 && log[0][0] < need) log.shift();
  return log.length ? log[0][1] : null;
}

function onFrame(data) {
  const view = new DataView(data);
  const index = view.getUint32(0, true);
  const now = performance.now();
  if (!stream || stream.stopped) return;
  stats.frames += 1;
  stream.arrivals.push(now);
  while (stream.arrivals.length && stream.arrivals[0] < now - 1000) stream.arrivals.shift();
  stats.fps = stream.arrivals.length;
  if (stats.firstFrameMs === null) {
    stats.firstFrameMs = now - stream.t0;
    if (stream.buffer) startPlayback();
  }
  if (stream.mode === "mic") {
    const sent = neededSentAt(index);
    if (sent !== null) stats.latencyMs = now - sent;
  }
  stream.queue.push({ index, blob: new Blob([data.slice(8)], { type: "image/jpeg" }) });
  showStatus();
}

function onMessage(event) {
  if (typeof event.data !== "string") return onFrame(event.data);
  const msg = JSON.parse(event.data);
  if (msg.type === "hello") {
    info = msg;
    canvas.width = canvas.height = msg.size;
    $("note").textContent =
      `${msg.size}² at ${msg.fps} fps; ${msg.extractor} features computed online from a ` +
      `${msg.lookahead_ms} ms look-ahead, so a frame can be drawn at the earliest ${msg.lookahead_ms} ms ` +
      `after its audio starts. Silence gives a still, closed mouth; the eyes keep blinking.`;
    stats.state = "ready";
    setRunning(false);
    showStatus();
  } else if (msg.type === "done") {
    stats.done = msg;
    stats.state = "done";
    if (stream) stream.serverDone = true;
    if (!stream || !stream.buffer || stream.playEnded) finishStream();
    showStatus();
  } else if (msg.type === "error") {
    showError(msg.message);
  }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws${query}`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = onMessage;
  ws.onclose = () => {
    info = null;
    setRunning(false);
    if (stats.state !== "error") showError("the connection to the server closed; reload the page");
  };
}

function newStream(mode) {
  stats.frames = stats.drawn = 0;
  stats.samplesSent = 0;
  stats.firstFrameMs = stats.latencyMs = null;
  stats.fps = 0;
  stats.done = null;
  stats.state = "streaming";
  stream = {
    mode, t0: null, sendLog: [], arrivals: [], queue: [], shown: -1, stopped: false, serverDone: false,
    buffer: null, ctx: null, source: null, playStart: null, playEnded: false, nextSample: 0, mic: null,
  };
  send({ type: "start", camera_mode: $("camera").value });
  setRunning(true);
  showStatus();
  return stream;
}

async function decodeTo16k(bytes, ctx) {
  const decoded = await ctx.decodeAudioData(bytes);
  const offline = new OfflineAudioContext(1, Math.max(1, Math.ceil(decoded.duration * RATE)), RATE);
  const src = offline.createBufferSource();
  src.buffer = decoded;
  src.connect(offline.destination);
  src.start();
  return { playback: decoded, pcm: (await offline.startRendering()).getChannelData(0) };
}

async function startFile(bytes) {
  const ctx = new AudioContext();
  const { playback, pcm } = await decodeTo16k(bytes, ctx);
  const s = newStream("file");
  s.ctx = ctx;
  s.buffer = playback;
  s.pcm = pcm;
  pumpFile();
}

// Send the file's audio up to AHEAD_S beyond the playback position; then end the stream.
function pumpFile() {
  const s = stream;
  if (!s || s.stopped || s.mode !== "file" || s.nextSample >= s.pcm.length) return;
  const played = s.playStart === null ? 0 : Math.max(0, s.ctx.currentTime - s.playStart);
  const limit = Math.ceil((played + AHEAD_S) * RATE);
  while (s.nextSample < s.pcm.length && s.nextSample < limit) {
    sendPcm(s.pcm.subarray(s.nextSample, s.nextSample + FILE_CHUNK));
    s.nextSample += FILE_CHUNK;
  }
  if (s.nextSample >= s.pcm.length) send({ type: "end" });
  else setTimeout(pumpFile, 100);
}

function startPlayback() {
  const s = stream;
  s.source = s.ctx.createBufferSource();
  s.source.buffer = s.buffer;
  s.source.connect(s.ctx.destination);
  s.playStart = s.ctx.currentTime + 0.05;
  s.source.start(s.playStart);
  s.source.onended = () => {
    s.playEnded = true;
    if (stream === s && s.serverDone) finishStream();
  };
}

async function startMic() {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
  });
  const ctx = new AudioContext({ sampleRate: RATE });
  await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
  const node = new AudioWorkletNode(ctx, "pcm-capture");
  const s = newStream("mic");
  s.mic = { media, ctx, node, pending: [] };
  node.port.onmessage = (e) => {
    if (s.stopped || stream !== s) return;
    s.mic.pending.push(...e.data);
    while (s.mic.pending.length >= CHUNK) sendPcm(Float32Array.from(s.mic.pending.splice(0, CHUNK)));
  };
  ctx.createMediaStreamSource(media).connect(node);
}

function stopMic(s) {
  if (!s.mic) return;
  s.mic.node.port.onmessage = null;
  s.mic.media.getTracks().forEach((t) => t.stop());
  s.mic.ctx.close();
  if (s.mic.pending.length) sendPcm(Float32Array.from(s.mic.pending));
  s.mic = null;
}

function finishStream() {
  if (!stream) return;
  stopMic(stream);
  if (stream.source) stream.source.stop();
  if (stream.ctx) stream.ctx.close();
  stream.stopped = true;
  setRunning(false);
}

// Stop: the microphone's last words are still rendered (end); a file stops at once (stop).
function onStop() {
  const s = stream;
  if (!s) return;
  if (s.mode === "mic") {
    stopMic(s);
    send({ type: "end" });
    stats.state = "finishing";
  } else {
    send({ type: "stop" });
    finishStream();
    stats.state = "stopped";
  }
  $("stop").disabled = true;
  showStatus();
}

async function onStart() {
  setRunning(true);
  const source = document.querySelector("input[name=source]:checked").value;
  try {
    if (source === "mic") return await startMic();
    let bytes;
    if (source === "file") {
      const file = $("file").files[0];
      if (!file) throw new Error("choose an audio file first");
      if (file.size > info.max_upload_bytes) throw new Error(`the file is larger than ${info.max_upload_bytes} bytes`);
      bytes = await file.arrayBuffer();
    } else {
      const response = await fetch(`/api/sample.wav${query}`);
      if (!response.ok) throw new Error(`the sample could not be fetched (${response.status})`);
      bytes = await response.arrayBuffer();
    }
    await startFile(bytes);
  } catch (err) {
    showError(err.message || String(err));
  }
}

// Draw the frame that is due: for a file, the one the audio clock has reached; for the microphone, the newest.
function draw() {
  const s = stream;
  if (s && s.queue.length) {
    let due = null;
    if (s.mode === "file") {
      const t = s.playStart === null ? -1 : s.ctx.currentTime - s.playStart;
      while (s.queue.length && s.queue[0].index <= t * info.fps) due = s.queue.shift();
    } else {
      due = s.queue[s.queue.length - 1];
      s.queue.length = 0;
    }
    if (due) {
      stats.drawn += 1;
      createImageBitmap(due.blob).then((bitmap) => g.drawImage(bitmap, 0, 0, canvas.width, canvas.height));
    }
  }
  requestAnimationFrame(draw);
}

$("start").addEventListener("click", onStart);
$("stop").addEventListener("click", onStop);
$("camera").addEventListener("change", () => { if (stream && !stream.stopped) send({ type: "camera", mode: $("camera").value }); });
$("file").addEventListener("change", () => { document.querySelector("input[value=file]").checked = true; });
connect();
requestAnimationFrame(draw);
