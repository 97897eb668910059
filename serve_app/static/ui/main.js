/*
 * The tuning page: an image and the detection parameters in, the service's crowns drawn over the image out. This
 * module holds the page's state and wires the DOM's events to api.js, jobs.js, render.js and model.js.
 *
 * Every URL is relative to the page (…/ui/), so the page works under any route prefix. State for tests and
 * scripts sits on <body>: data-state (empty | busy | done | error | cancelled), data-count (trees shown),
 * data-done (detections finished so far), data-params (the parameters of the last one, JSON), data-round-trip-ms,
 * data-mask-pixels (vegetation pixels of the mask drawn) and data-image-size ("WxH": the pixel frame drawn, the
 * service's).
 */
import { ApiError, PARAMS, createApi, curlCommand, describe, detectionForm } from "./api.js";
import { runJob } from "./jobs.js";
import { bytes, clearStored, downloadStored, generate } from "./model.js";
import { decodeAsService, drawScene, maskOf, paintMask, treeAt } from "./render.js";

const HSV_PARAMS = new Set(["hue_min", "hue_max", "sat_min", "sat_max", "val_min", "val_max"]);
const DEBOUNCE_MS = 150;
const JOB_PIXELS = 16_000_000; // above this the page uses a background job, with a progress bar
const JOB_BYTES = 64 * 1024 * 1024; // the same for an image the browser cannot decode (TIFF), by its size
const KEY_STORAGE = "tree-detection-api-key";

const $ = (id) => document.getElementById(id);
const body = document.body;
const canvas = $("canvas");
const apiKey = () => $("api_key").value.trim();
// The service's root, whatever prefix it is served under.
const api = createApi({ base: new URL("../", document.baseURI), apiKey });

const state = {
  file: null, // the File the user chose
  bitmap: null, // its decoded pixels (null when the browser cannot decode it, e.g. TIFF)
  size: null, // [width, height] pixels (from the bitmap, or from the service's answer)
  mask: null, // render.js maskOf: the H, S, V planes of the (possibly scaled) pixels and the mask's canvas
  maskDirty: false, // the bounds changed since the mask was painted
  orientation: 1, // the EXIF orientation the file has (ignored, as the service does)
  frameWarning: "", // set when the browser's pixel frame is not the service's (the image is then not shown)
  userJobs: false, // the user's own choice of "Run as a background job" (a large image overrides it)
  generating: false, // a 3D model is being generated: its buttons stay disabled
  stored: null, // the stored scene linked under the 3D buttons: {href, sameService, filename, expiresAt}
  result: null, // the last detection shown
  seq: 0, // detections started; an answer to an older one is dropped
  inflight: null, // AbortController of the running detection
  debounce: 0,
  done: 0,
  view: null, // {scale, dpr} of the last drawing
};

// What model.js acts on (function declarations below are hoisted).
const page = { api, state, showError, updateButtons };

// ---- parameters and messages --------------------------------------------------------------------------------

function readParams() {
  const params = {};
  for (const name of PARAMS) {
    const el = $(name);
    params[name] = name === "method" ? el.value : el.value.trim() === "" ? NaN : Number(el.value);
  }
  return params;
}

function markFields(detail) {
  // The API names the parameter at fault ("min_diameter (20.0) must not exceed max_diameter (15.0)").
  for (const name of PARAMS) {
    const bad = Boolean(detail) && new RegExp(`\\b${name}\\b`).test(detail);
    $(name).classList.toggle("bad", bad);
    $(name).setAttribute("aria-invalid", String(bad));
  }
}

// An error (or a message) in the error box; null hides it.
function showError(error) {
  const box = $("error");
  markFields(error instanceof ApiError ? error.detail : "");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = typeof error === "string" ? error : describe(error);
  box.hidden = false;
}

function setProgress(fraction, text) {
  $("progress").hidden = false;
  const bar = $("progress-bar");
  if (fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
  $("progress-text").textContent = text;
}

function setState(name) {
  body.dataset.state = name;
}

function seconds(s) {
  return s === undefined ? "?" : `${Number(s).toFixed(2)} s`;
}

function showStats(result, roundTripMs) {
  $("count").textContent = result.total_trees.toLocaleString("en");
  const t = result.timings || {};
  let server = `server ${seconds(t.total_s)}`;
  if (t.detect_s !== undefined) server += ` (decode ${seconds(t.decode_s)}, detect ${seconds(t.detect_s)})`;
  const parts = [server, `round trip ${seconds(roundTripMs / 1000)}`];
  if (result.tile_count) parts.push(`${result.tile_count} tile${result.tile_count === 1 ? "" : "s"}`);
  $("timing").textContent = parts.join(" · ");
}

function clearStats() {
  $("count").textContent = "–";
  $("timing").textContent = "";
  body.dataset.count = "";
}

// ---- detection ------------------------------------------------------------------------------------------------

function scheduleDetect(delay) {
  clearTimeout(state.debounce);
  if (!state.file) return;
  state.debounce = setTimeout(detect, delay === undefined ? DEBOUNCE_MS : delay);
}

function request(params, jobs, signal) {
  const data = detectionForm(state.file, params);
  if (!jobs) return api.detect(data, signal);
  return runJob(api, data, { signal, onProgress: setProgress });
}

function showResult(result, roundTrip) {
  state.result = result;
  checkFrame(result);
  showError(null);
  draw();
  showStats(result, roundTrip);
  body.dataset.count = String(result.total_trees);
  body.dataset.roundTripMs = String(Math.round(roundTrip));
  setState("done");
}

function showFailure(error) {
  state.result = null;
  draw();
  clearStats();
  showError(error);
  setState("error");
}

async function detect() {
  if (!state.file) return;
  const seq = ++state.seq;
  if (state.inflight) state.inflight.abort(); // a newer request replaces the running one
  const controller = new AbortController();
  state.inflight = controller;
  const params = readParams();
  const jobs = $("use_jobs").checked;
  setState("busy");
  $("cancel").hidden = !jobs;
  if (!jobs) setProgress(null, "Detecting…");
  const started = performance.now();
  try {
    const result = await request(params, jobs, controller.signal);
    if (seq === state.seq) showResult(result, performance.now() - started);
  } catch (error) {
    if (seq === state.seq && !(error && error.name === "AbortError")) showFailure(error);
  } finally {
    if (seq === state.seq) {
      state.inflight = null;
      $("progress").hidden = true;
      body.dataset.params = JSON.stringify(params);
      body.dataset.done = String(++state.done);
      updateButtons();
    }
  }
}

function cancelDetection() {
  if (state.inflight) state.inflight.abort();
  state.seq++;
  state.inflight = null;
  $("progress").hidden = true;
  setState("cancelled");
  showError("Cancelled: change a parameter to run the detection again.");
}

// ---- image and mask -------------------------------------------------------------------------------------------

function resetImage(file) {
  if (state.inflight) state.inflight.abort();
  state.seq++;
  if (state.bitmap) state.bitmap.close(); // frees the previous image's pixels now, not at the next GC
  Object.assign(state, { file, bitmap: null, size: null, mask: null, result: null, orientation: 1, frameWarning: "" });
  clearStored(page);
  clearStats();
  body.dataset.maskPixels = "";
  body.dataset.imageSize = "";
  showError(null);
  $("drop-text").textContent = `${file.name} (${bytes(file.size)})`;
}

async function loadFile(file) {
  if (!file) return;
  resetImage(file);
  const { bitmap, orientation } = await decodeAsService(file);
  if (state.file !== file) {
    if (bitmap) bitmap.close(); // another file was chosen meanwhile
    return;
  }
  state.bitmap = bitmap;
  state.orientation = orientation;
  state.size = bitmap ? [bitmap.width, bitmap.height] : null;
  body.dataset.imageSize = state.size ? state.size.join("x") : "";
  const pixels = state.size ? state.size[0] * state.size[1] : 0;
  chooseJobs(pixels > JOB_PIXELS ? "over 16 MP" : !state.size && file.size > JOB_BYTES ? "over 64 MB" : "");
  if (bitmap) {
    state.mask = maskOf(bitmap, state.size);
    state.maskDirty = true;
  }
  setState("busy");
  updateImageInfo();
  draw();
  scheduleDetect(0);
}

// "Run as a background job" is the user's; an image above 16 MP (or a large file the browser cannot read) turns
// it on for that image only, and says why (`large`: the reason, "" for none). The next image starts from the
// user's own choice again.
function chooseJobs(large) {
  $("use_jobs").checked = Boolean(large) || state.userJobs;
  $("jobs-note").textContent = large ? `On for this image (${large}), to show its progress.` : "";
}

// The crowns are in the pixel frame the service decoded. Should the browser's frame differ (a rotation it applied
// that the page could not undo), the image is dropped: the crowns go on a blank canvas of the service's size.
function checkFrame(result) {
  const frame = [result.image_width, result.image_height];
  if (!frame.every(Number.isFinite)) return; // no size in the answer: nothing to compare, nothing to draw on
  if (state.size && state.bitmap && (state.size[0] !== frame[0] || state.size[1] !== frame[1])) {
    state.frameWarning =
      `The browser decoded this image as ${state.size.join(" × ")} px, the service as ${frame.join(" × ")} px ` +
      "(a rotation?): the crowns are drawn on a blank canvas, in the service's frame.";
    state.bitmap.close();
    Object.assign(state, { bitmap: null, mask: null });
    $("mask-info").textContent = "";
  }
  if (!state.bitmap) state.size = frame;
  body.dataset.imageSize = state.size.join("x");
  updateImageInfo();
}

// The mask to draw over the image (painted again when the bounds changed), or null.
function currentMask() {
  if (!state.mask || !$("show_mask").checked) {
    $("mask-info").textContent = "";
    return null;
  }
  if (state.maskDirty) {
    const { count, share } = paintMask(state.mask, readParams());
    state.maskDirty = false;
    body.dataset.maskPixels = String(count);
    const scaled = state.mask.size[0] !== state.size[0] ? " (on a scaled-down copy)" : "";
    $("mask-info").textContent = `Vegetation: ${share.toFixed(1)} % of the image${scaled}, before the clean-up.`;
  }
  return state.mask.canvas;
}

function imageInfo() {
  const cannot = "This browser cannot show this image (TIFF?): the crowns are drawn on a blank canvas.";
  if (!state.size) return cannot;
  const p = readParams();
  const [w, h] = state.size;
  const mx = p.real_width / w;
  const my = p.real_height / h;
  const known = Number.isFinite(mx) && Number.isFinite(my);
  const scale = known ? ` · ${mx.toPrecision(3)} × ${my.toPrecision(3)} m/px` : "";
  let text = `${w.toLocaleString("en")} × ${h.toLocaleString("en")} px (${((w * h) / 1e6).toFixed(1)} MP)${scale}`;
  if (!state.bitmap) text += `. ${cannot}`;
  else if (state.orientation !== 1) {
    text += `. Shown as stored, not turned by its EXIF orientation (${state.orientation}):`;
    text += " the service ignores it too.";
  }
  return text;
}

function updateImageInfo() {
  const info = $("image-info");
  info.classList.toggle("warn", Boolean(state.frameWarning));
  if (!state.file) info.textContent = "No image yet.";
  else info.textContent = state.frameWarning || imageInfo();
}

// ---- drawing --------------------------------------------------------------------------------------------------

function draw() {
  const mask = currentMask();
  const wrap = $("canvas-wrap");
  state.view = drawScene(canvas, {
    size: state.size,
    bitmap: state.bitmap,
    mask,
    trees: state.result ? state.result.trees : [],
    width: wrap.clientWidth,
    height: Math.max(320, window.innerHeight - wrap.getBoundingClientRect().top - 70),
    dpr: window.devicePixelRatio || 1,
  });
}

let drawQueued = false;
function queueDraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    draw();
  });
}

function showHover(event) {
  let tree = null;
  if (state.result && state.view) {
    const rect = canvas.getBoundingClientRect();
    tree = treeAt(state.result.trees, state.view, event.clientX - rect.left, event.clientY - rect.top);
  }
  $("hover").textContent = tree
    ? `tree ${tree.id}: x ${tree.x.toFixed(1)} m, y ${tree.y.toFixed(1)} m, crown ${tree.diameter.toFixed(1)} m`
    : "";
}

// ---- copy, buttons, service info ------------------------------------------------------------------------------

async function copyText(text) {
  const share = $("share");
  share.value = text;
  share.hidden = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      // denied: fall back to a selection copy below
    }
  }
  share.focus();
  share.select();
  try {
    return document.execCommand("copy");
  } catch (_) {
    return false;
  }
}

async function copy(kind) {
  const params = readParams();
  const fileName = state.file ? state.file.name : "tile.png";
  const text =
    kind === "curl"
      ? curlCommand(api.url("detect-trees"), params, { fileName, withKey: Boolean(apiKey()) })
      : JSON.stringify(params, null, 2);
  const ok = await copyText(text);
  const what = kind === "curl" ? "The curl command" : "The parameters (JSON)";
  $("action-msg").textContent = ok ? `${what}: copied to the clipboard.` : `${what}: select and copy it below.`;
}

function updateButtons() {
  const enabled = Boolean(state.result) && !state.generating; // one scene at a time
  for (const id of ["gen-zip", "gen-glb"]) $(id).disabled = !enabled;
  $("copy-curl").disabled = !state.file;
  $("copy-json").disabled = false;
}

async function loadServiceInfo() {
  const note = $("service-note");
  try {
    const info = await (await api.fetch("")).json();
    note.textContent = `${info.service} ${info.version}`;
    const models = await (await api.fetch("tree-models")).json();
    const select = $("base_model");
    const chosen = select.value;
    select.replaceChildren(
      ...models.models.map((m) => new Option(m.name, m.name, m.name === models.default, m.name === chosen))
    );
  } catch (error) {
    note.textContent =
      error instanceof ApiError && error.status === 401
        ? "This service needs an API key: enter it under Service."
        : `The service did not answer: ${describe(error)}`;
  }
}

// ---- wiring ---------------------------------------------------------------------------------------------------

function onParamInput(event) {
  const el = event.target;
  if (el.dataset.for) $(el.dataset.for).value = el.value; // slider -> its number box
  else if ($(`${el.id}_range`)) $(`${el.id}_range`).value = el.value; // number box -> its slider
  const name = el.dataset.for || el.id;
  if (HSV_PARAMS.has(name)) {
    state.maskDirty = true;
    if ($("show_mask").checked) queueDraw(); // the mask follows the slider at once, no round trip
  }
  if (name === "real_width" || name === "real_height") updateImageInfo();
  if (PARAMS.includes(name)) scheduleDetect();
}

function wireControls() {
  const controls = $("controls");
  controls.addEventListener("submit", (e) => e.preventDefault());
  controls.addEventListener("input", (e) => {
    if (e.target.id === "file" || e.target.id === "api_key") return;
    onParamInput(e);
  });
  $("show_mask").addEventListener("change", () => {
    state.maskDirty = true;
    draw();
  });
  $("use_jobs").addEventListener("change", () => {
    state.userJobs = $("use_jobs").checked;
    $("jobs-note").textContent = "";
    scheduleDetect(0);
  });
  let keyTimer = 0;
  $("api_key").addEventListener("input", () => {
    sessionStorage.setItem(KEY_STORAGE, apiKey());
    clearTimeout(keyTimer);
    keyTimer = setTimeout(() => {
      loadServiceInfo();
      scheduleDetect(0);
    }, 400);
  });
  $("api_key").value = sessionStorage.getItem(KEY_STORAGE) || "";
}

function wireFile() {
  $("file").addEventListener("change", (e) => loadFile(e.target.files[0]));
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  // One handler for a drop anywhere (the drop zone's included): the browser must not leave the page to show
  // the image, nor set the file input by itself as well.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) loadFile(e.dataTransfer.files[0]);
  });
}

function wireActions() {
  $("copy-curl").addEventListener("click", () => copy("curl"));
  $("copy-json").addEventListener("click", () => copy("json"));
  for (const id of ["gen-zip", "gen-glb"]) {
    $(id).addEventListener("click", (e) => generate(page, e.target.dataset.format, $("base_model").value));
  }
  $("stored-link").addEventListener("click", (e) => downloadStored(page, e));
  $("cancel").addEventListener("click", cancelDetection);
  canvas.addEventListener("mousemove", showHover);
  window.addEventListener("resize", queueDraw);
}

wireControls();
wireFile();
wireActions();
updateButtons();
loadServiceInfo();
