"use strict";
// The stimulus monitor's page (edge_producers/presenter.py serves it). It draws every target's
// flicker frame by frame from requestAnimationFrame, as sampled sinusoidal stimulation: frame n
// after the onset has luminance 0.5 * (1 + sin(2 pi f n / refresh + phase)) (edge_producers/
// stimulus.py: luminance). The server sends the coming trials in this page's clock
// (performance.now()); the page reports the timestamp of the frame each trial's flicker started and
// stopped on, and the server turns those into markers in lab time.

const RECORD = new URLSearchParams(location.search).has("record");
// A trial whose onset passed by more than this (a page opened mid-trial) is skipped, not shown cut.
const MAX_LATE_MS = 100;
// Frames the refresh estimate spans: long enough that 0.1 ms timer coarsening costs < 0.002 ms.
const REFRESH_WINDOW = 120;
// Boxes rest at the flicker's mean luminance: no luminance step at onset or offset.
const REST_LUMINANCE = 0.5;
// The sync patch (bottom left) is white on every flicker frame: a photodiode on it measures the
// display's latency (edge.stimulus.display_latency_ms); the benchmark reads it back.
const SYNC_SIZE = 48;
const CUE_COLOUR = "rgb(255,0,0)";

const canvas = document.getElementById("stimulus");
const ctx = canvas.getContext("2d", {willReadFrequently: RECORD});
const labels = document.getElementById("labels");
const statusLine = document.getElementById("status");

const state = {
  ws: null,
  outbox: [],
  session: null,
  layoutKey: "",
  targets: [],
  boxes: [],
  rows: [],
  plan: new Map(),  // trial number -> {trial, target, cue, onset, offset} (page ms), not yet started
  running: null,
  stopRequested: false,
  times: [],  // the last REFRESH_WINDOW frame timestamps
  period: 1000 / 60,
  reported: [],  // frame timestamps not yet sent to the server
  log: [],
};

function status(text) { statusLine.textContent = text; }

function send(message) {
  const text = JSON.stringify(message);
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(text);
  else if (message.type === "event") state.outbox.push(text);  // a marker waits for the reconnect
}

function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => {
    state.ws = ws;
    status("connected");
    for (const text of state.outbox.splice(0)) ws.send(text);
  };
  ws.onmessage = (message) => {
    const received = performance.now();
    const data = JSON.parse(message.data);
    if (data.type === "ping") {
      // Answered first thing: the round trip bounds the error of the server's clock estimate.
      ws.send(JSON.stringify({type: "pong", t0: data.t0, t1: received * 1000, t2: performance.now() * 1000}));
    } else if (data.type === "plan") {
      applyPlan(data);
    }
  };
  ws.onclose = () => {
    if (state.ws === ws) state.ws = null;
    status("disconnected");
    setTimeout(connect, 1000);
  };
}

function applyPlan(data) {
  if (data.session !== state.session) {
    state.session = data.session;
    state.running = null;  // the old session was closed by the server; its trial stops here
  }
  // The session is closing: a running flicker stops on the next frame, which is reported as its END.
  state.stopRequested = Boolean(data.stop);
  const key = JSON.stringify(data.targets);
  if (key !== state.layoutKey) {
    state.layoutKey = key;
    state.targets = data.targets;
    layout();
  }
  const plan = new Map();
  for (const trial of data.trials) {
    if (!state.running || trial.trial !== state.running.trial) plan.set(trial.trial, trial);
  }
  state.plan = plan;
}

function layout() {
  const width = window.innerWidth, height = window.innerHeight;
  for (const c of [canvas, labels]) { c.width = width; c.height = height; }
  const rows = Math.max(1, ...state.targets.map((t) => t.row + 1));
  const columns = Math.max(1, ...state.targets.map((t) => t.column + 1));
  const cellW = width / columns, cellH = (height - SYNC_SIZE) / rows;
  const size = Math.floor(Math.min(cellW, cellH) * 0.6);
  state.boxes = state.targets.map((t) => {
    const x = Math.round((t.column + 0.5) * cellW - size / 2);
    const y = Math.round((t.row + 0.5) * cellH - size / 2);
    return {x, y, size, cx: x + (size >> 1), cy: y + (size >> 1)};
  });
  state.rows = [...new Set(state.boxes.map((b) => b.cy))];
  const back = labels.getContext("2d");
  back.fillStyle = "#000";
  back.fillRect(0, 0, width, height);
  back.fillStyle = "#777";
  const fontSize = Math.max(10, Math.floor(size / 6));
  back.font = `${fontSize}px sans-serif`;
  back.textAlign = "center";
  state.targets.forEach((t, i) => {
    const b = state.boxes[i];
    // Below the cue outline (drawn 6 px wide, 6 px out from the box).
    back.fillText(`${t.hz} Hz`, b.cx, b.y + size + 14 + fontSize);
  });
  ctx.clearRect(0, 0, width, height);  // transparent where nothing flickers: the labels show through
}

// The display's frame period from frame timestamps: the mean of the one-frame intervals (those
// within 5 % of the median), so that neither a dropped frame nor a late one biases it, and a
// coarse timer averages out. Counting the frames in the window's span instead counted a frame late by
// half a period, with the next one back on time, as three frames for two: on a busy machine a
// period came out 1.2 % short (16.47 ms for frames 16.665 ms apart), and a 10 Hz target, drawn from
// it, fitted 10.05 Hz with its phase jumping each time the frame count caught up.
function framePeriod(times) {
  const intervals = [];
  for (let i = 1; i < times.length; i++) intervals.push(times[i] - times[i - 1]);
  const median = [...intervals].sort((a, b) => a - b)[intervals.length >> 1];
  let sum = 0;
  let count = 0;
  for (const dt of intervals) {
    if (Math.abs(dt - median) <= median / 20) {
      sum += dt;
      count += 1;
    }
  }
  return sum / count;
}

function updatePeriod(ts) {
  const times = state.times;
  times.push(ts);
  if (times.length > REFRESH_WINDOW) times.shift();
  if (times.length >= 3) state.period = framePeriod(times);
}

function report(event, trial, ts, frame) {
  send({type: "event", session: state.session, trial: trial.trial, event, t: ts * 1000, frame,
        period_ms: trial.period, frames: trial.frames});
}

function frame(ts) {
  requestAnimationFrame(frame);
  updatePeriod(ts);
  state.reported.push(ts);
  const period = state.period;
  let running = state.running;
  if (running) {
    // Frames since the onset from the time elapsed, so a missed frame does not slow the sinusoid.
    running.n = Math.round((ts - running.onsetTs) / running.period);
    if (running.n >= running.frames || state.stopRequested) {
      report("END", running, ts, running.n);
      running = state.running = null;
    }
  }
  let cue = null;
  for (const [id, trial] of state.plan) {
    if (ts >= trial.offset) { state.plan.delete(id); continue; }
    if (!running && ts >= trial.onset - period / 2) {
      state.plan.delete(id);
      if (ts - trial.onset > MAX_LATE_MS) continue;
      // The flicker lasts the whole frames nearest to its planned end.
      const frames = Math.max(1, Math.round((trial.offset - ts) / period));
      running = state.running = {...trial, onsetTs: ts, period, frames, n: 0};
      report("START", running, ts, 0);
    } else if (trial.cue !== null && ts >= trial.cue - period / 2 && ts < trial.onset - period / 2) {
      cue = trial.target;
    }
  }
  draw(running, cue);
  if (RECORD) record(ts, running);
}

function grey(value) {
  const g = Math.round(255 * value);
  return `rgb(${g},${g},${g})`;
}

function draw(running, cue) {
  const omega = running ? 2 * Math.PI * running.n * running.period / 1000 : 0;
  state.targets.forEach((t, i) => {
    const b = state.boxes[i];
    const value = running ? 0.5 * (1 + Math.sin(omega * t.hz + t.phase)) : REST_LUMINANCE;
    ctx.fillStyle = grey(value);
    ctx.fillRect(b.x, b.y, b.size, b.size);
    ctx.lineWidth = 6;
    ctx.strokeStyle = i === cue ? CUE_COLOUR : "rgb(0,0,0)";
    ctx.strokeRect(b.x - 6, b.y - 6, b.size + 12, b.size + 12);
  });
  ctx.fillStyle = running ? "rgb(255,255,255)" : "rgb(0,0,0)";
  ctx.fillRect(0, canvas.height - SYNC_SIZE, SYNC_SIZE, SYNC_SIZE);
}

// Benchmark mode (?record): what each frame actually drew, read back from the canvas: the sync
// patch and every target's centre pixel, with the frame's timestamp.
function record(ts, running) {
  const width = canvas.width;
  const rows = new Map();
  for (const y of state.rows) rows.set(y, ctx.getImageData(0, y, width, 1).data);
  const sync = ctx.getImageData(SYNC_SIZE >> 1, canvas.height - (SYNC_SIZE >> 1), 1, 1).data[0];
  const values = state.boxes.map((b) => rows.get(b.cy)[4 * b.cx] / 255);
  state.log.push([ts, running ? running.trial : -1, running ? running.n : -1, sync / 255, values]);
}

setInterval(() => {
  // The frame times of the last second: the server keeps the refresh, jitter and dropped frames.
  if (state.reported.length) send({type: "frames", t: state.reported.splice(0)});
}, 1000);

window.presenter = {
  timeOrigin: performance.timeOrigin,
  takeLog() { return state.log.splice(0); },
  refreshHz() { return 1000 / state.period; },
  framePeriod,
  state,
};

window.addEventListener("resize", () => { if (state.targets.length) layout(); });
connect();
requestAnimationFrame(frame);
