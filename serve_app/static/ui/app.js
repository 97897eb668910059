/*
 * The tuning page: an image and the detection parameters in, the service's crowns drawn over the image out.
 *
 * Every URL is relative to the page (…/ui/), so the page works under any route prefix. State for tests and
 * scripts sits on <body>: data-state (empty | busy | done | error | cancelled), data-count (trees shown),
 * data-done (detections finished so far), data-params (the parameters of the last one, JSON), data-round-trip-ms,
 * data-mask-pixels (vegetation pixels of the mask drawn) and data-image-size ("WxH": the pixel frame drawn, the
 * service's).
 */
(function () {
  "use strict";

  const PARAMS = [
    "hue_min", "hue_max", "sat_min", "sat_max", "val_min", "val_max",
    "min_diameter", "max_diameter", "cluster_threshold", "real_width", "real_height", "method",
  ];
  const HSV_PARAMS = new Set(["hue_min", "hue_max", "sat_min", "sat_max", "val_min", "val_max"]);
  const DEBOUNCE_MS = 150;
  const JOB_PIXELS = 16_000_000; // above this the page uses a background job, with a progress bar
  const JOB_BYTES = 64 * 1024 * 1024; // the same for an image the browser cannot decode (TIFF), by its size
  const MASK_MAX_PIXELS = 16_777_216; // the mask is computed on at most this many pixels (scaled down above)
  const MASK_RGBA = 0x73ff00ff; // vegetation in the mask: magenta at 45 % (RGBA bytes, little-endian word)
  const CROWN_COLOUR = "#ffd400"; // the crowns' stroke (over a wider dark one); the browser test looks for it
  const API = new URL("../", document.baseURI); // the service's root, whatever prefix it is served under

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");

  const state = {
    file: null, // the File the user chose
    bitmap: null, // its decoded pixels (null when the browser cannot decode it, e.g. TIFF)
    size: null, // [width, height] pixels (from the bitmap, or from the service's answer)
    planes: null, // H, S, V planes of the (possibly scaled) pixels, for the mask
    maskCanvas: null, // the mask, drawn scaled over the image
    maskImage: null, // its pixels (ImageData, up to 64 MB)
    maskSize: null,
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

  // ---- parameters -------------------------------------------------------------------------------------------

  function readParams() {
    const params = {};
    for (const name of PARAMS) {
      const el = $(name);
      params[name] = name === "method" ? el.value : el.value.trim() === "" ? NaN : Number(el.value);
    }
    return params;
  }

  function apiKey() {
    return $("api_key").value.trim();
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    return headers;
  }

  function apiUrl(path) {
    return new URL(path, API).href;
  }

  // ---- errors ---------------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  const HINTS = {
    400: "The service could not read the image.",
    401: "Enter the service's API key under Service.",
    404: "Not found.",
    413: "Too large for this service.",
    422: "A parameter is out of range.",
    429: "The service is busy with other jobs: try again in a moment.",
    503: "A worker or the storage of the service failed: try again.",
  };

  function formatDetail(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      // FastAPI's validation errors: [{loc: ["body", "hue_min"], msg: "..."}]
      return detail
        .map((d) => {
          const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body" && p !== "query").join(".") : "";
          return (where ? where + ": " : "") + (d.msg || JSON.stringify(d));
        })
        .join("; ");
    }
    return detail === undefined ? "" : JSON.stringify(detail);
  }

  async function apiError(response) {
    let detail = "";
    try {
      detail = formatDetail((await response.json()).detail);
    } catch (_) {
      detail = response.statusText || "no details";
    }
    return new ApiError(response.status, detail);
  }

  function describe(error) {
    if (error instanceof ApiError) {
      const hint = HINTS[error.status] ? "\n" + HINTS[error.status] : "";
      return `Error ${error.status}: ${error.detail}${hint}`;
    }
    if (error instanceof TypeError) return `Cannot reach the service (${error.message}). Is it running?`;
    return String(error && error.message ? error.message : error);
  }

  function markFields(detail) {
    // The API names the parameter at fault ("min_diameter (20.0) must not exceed max_diameter (15.0)").
    for (const name of PARAMS) {
      const bad = Boolean(detail) && new RegExp(`\\b${name}\\b`).test(detail);
      $(name).classList.toggle("bad", bad);
      $(name).setAttribute("aria-invalid", String(bad));
    }
  }

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

  // ---- HTTP -------------------------------------------------------------------------------------------------------

  async function apiFetch(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = authHeaders(opts.headers);
    const response = await fetch(apiUrl(path), opts);
    if (!response.ok) throw await apiError(response);
    return response;
  }

  function form(params) {
    const data = new FormData();
    data.append("image", state.file, state.file.name || "image.png");
    for (const name of PARAMS) data.append(name, String(params[name]));
    return data;
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort); // one poll, one listener: none is left behind
        resolve();
      }, ms);
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  // POST with upload progress (fetch has none): a large image can take a while to send.
  // Aborted while uploading, the request is dropped (the service makes nothing). Once the upload is complete the
  // service may already have made the job, so the request runs on to its answer: the caller checks
  // signal.aborted and deletes what was made.
  function postWithProgress(path, data, signal, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const onAbort = () => xhr.abort();
      const settle = (fn, value) => {
        signal.removeEventListener("abort", onAbort);
        fn(value);
      };
      xhr.open("POST", apiUrl(path));
      for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.upload.onload = () => signal.removeEventListener("abort", onAbort);
      xhr.onload = () => {
        const json = xhr.response || {};
        if (xhr.status >= 200 && xhr.status < 300) settle(resolve, json);
        else settle(reject, new ApiError(xhr.status, formatDetail(json.detail) || xhr.statusText));
      };
      xhr.onerror = () => settle(reject, new TypeError("network error"));
      xhr.onabort = () => settle(reject, new DOMException("aborted", "AbortError"));
      if (signal.aborted) {
        reject(new DOMException("aborted", "AbortError"));
        return;
      }
      signal.addEventListener("abort", onAbort, { once: true });
      xhr.send(data);
    });
  }

  // ---- detection ------------------------------------------------------------------------------------------------

  function useJobs() {
    return $("use_jobs").checked;
  }

  async function detectDirect(params, signal) {
    const response = await apiFetch("detect-trees", { method: "POST", body: form(params), signal });
    return response.json();
  }

  async function detectWithJob(params, signal) {
    setProgress(0, "Uploading…");
    const created = await postWithProgress("jobs", form(params), signal, (f) =>
      setProgress(f, `Uploading ${Math.round(f * 100)} %`)
    );
    const jobPath = "jobs/" + encodeURIComponent(created.id);
    const cancel = () => fetch(apiUrl(jobPath), { method: "DELETE", headers: authHeaders() }).catch(() => {});
    if (signal.aborted) {
      // Cancelled (or replaced) after the upload, before the answer: the job exists, and nobody will poll it.
      cancel();
      throw new DOMException("aborted", "AbortError");
    }
    signal.addEventListener("abort", cancel, { once: true });
    let wait = 200;
    for (;;) {
      await sleep(wait, signal);
      wait = Math.min(wait * 1.5, 1000);
      const job = await (await apiFetch(jobPath, { signal })).json();
      const p = job.progress || {};
      if (job.state === "succeeded" || job.state === "failed" || job.state === "cancelled") {
        signal.removeEventListener("abort", cancel); // finished: nothing to cancel any more
      }
      if (job.state === "succeeded") return job.result && job.result.detection ? job.result.detection : job.result;
      if (job.state === "failed") {
        const err = job.error || {};
        throw new ApiError(err.status || 500, formatDetail(err.detail) || "the job failed");
      }
      if (job.state === "cancelled") throw new Error("The job was cancelled.");
      const total = p.tiles_total || 0;
      const text = total
        ? `${job.stage}: tile ${p.tiles_done} of ${total}, ${p.trees_so_far} trees so far`
        : `${job.stage || job.state}…`;
      setProgress(total ? p.tiles_done / total : null, text);
    }
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

  function scheduleDetect(delay) {
    clearTimeout(state.debounce);
    if (!state.file) return;
    state.debounce = setTimeout(detect, delay === undefined ? DEBOUNCE_MS : delay);
  }

  async function detect() {
    if (!state.file) return;
    const seq = ++state.seq;
    if (state.inflight) state.inflight.abort(); // a newer request replaces the running one
    const controller = new AbortController();
    state.inflight = controller;
    const params = readParams();
    const jobs = useJobs();
    setState("busy");
    $("cancel").hidden = !jobs;
    if (!jobs) setProgress(null, "Detecting…");
    const started = performance.now();
    try {
      const result = jobs ? await detectWithJob(params, controller.signal) : await detectDirect(params, controller.signal);
      if (seq !== state.seq) return;
      const roundTrip = performance.now() - started;
      state.result = result;
      state.resultParams = params;
      checkFrame(result);
      showError(null);
      draw();
      showStats(result, roundTrip);
      body.dataset.count = String(result.total_trees);
      body.dataset.roundTripMs = String(Math.round(roundTrip));
      setState("done");
    } catch (error) {
      if (seq !== state.seq || (error && error.name === "AbortError")) return;
      state.result = null;
      draw();
      $("count").textContent = "–";
      $("timing").textContent = "";
      body.dataset.count = "";
      showError(error);
      setState("error");
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

  function bytes(n) {
    return n < 1e6 ? `${Math.max(1, Math.round(n / 1e3))} kB` : `${(n / 1e6).toFixed(1)} MB`;
  }

  function seconds(s) {
    return s === undefined ? "?" : `${Number(s).toFixed(2)} s`;
  }

  function showStats(result, roundTripMs) {
    $("count").textContent = result.total_trees.toLocaleString("en");
    const t = result.timings || {};
    let server = `server ${seconds(t.total_s)}`;
    if (t.detect_s !== undefined) server += ` (decode ${seconds(t.decode_s)}, detect ${seconds(t.detect_s)})`;
    const parts = [server];
    parts.push(`round trip ${seconds(roundTripMs / 1000)}`);
    if (result.tile_count) parts.push(`${result.tile_count} tile${result.tile_count === 1 ? "" : "s"}`);
    $("timing").textContent = parts.join(" · ");
  }

  // ---- image and mask -------------------------------------------------------------------------------------------

  async function loadFile(file) {
    if (!file) return;
    if (state.inflight) state.inflight.abort();
    state.seq++;
    if (state.bitmap) state.bitmap.close(); // frees the previous image's pixels now, not at the next GC
    Object.assign(state, {
      file,
      bitmap: null,
      size: null,
      planes: null,
      maskCanvas: null,
      maskImage: null,
      maskSize: null,
      result: null,
      orientation: 1,
      frameWarning: "",
    });
    clearStored();
    body.dataset.count = "";
    body.dataset.maskPixels = "";
    body.dataset.imageSize = "";
    $("count").textContent = "–";
    $("timing").textContent = "";
    showError(null);
    $("drop-text").textContent = `${file.name} (${bytes(file.size)})`;
    let bitmap = null;
    let orientation = 1;
    try {
      // As the service reads it (OpenCV's IMREAD_UNCHANGED): no EXIF rotation, no colour profile. Browsers rotate
      // by the EXIF orientation whatever createImageBitmap is told, so they get a copy without the tag.
      const head = new Uint8Array(await file.slice(0, TreeOrientation.HEAD_BYTES).arrayBuffer());
      const patch = TreeOrientation.unrotated(head);
      let source = file;
      if (patch) {
        orientation = patch.orientation;
        const part = (p) => (Array.isArray(p) ? file.slice(p[0], p[1] === null ? undefined : p[1]) : p);
        source = new Blob(patch.parts.map(part), { type: file.type });
      }
      bitmap = await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (_) {
      // TIFF, or a file the browser cannot read: the service may still read it
    }
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
    if (state.bitmap) computePlanes();
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
      Object.assign(state, { bitmap: null, planes: null, maskCanvas: null, maskImage: null, maskSize: null });
      $("mask-info").textContent = "";
    }
    if (!state.bitmap) state.size = frame;
    body.dataset.imageSize = state.size.join("x");
    updateImageInfo();
  }

  function computePlanes() {
    const [w, h] = state.size;
    const k = Math.min(1, Math.sqrt(MASK_MAX_PIXELS / (w * h)));
    const mw = Math.max(1, Math.round(w * k));
    const mh = Math.max(1, Math.round(h * k));
    const work = document.createElement("canvas");
    work.width = mw;
    work.height = mh;
    const wctx = work.getContext("2d", { willReadFrequently: true });
    wctx.drawImage(state.bitmap, 0, 0, mw, mh);
    const image = wctx.getImageData(0, 0, mw, mh);
    state.planes = TreeHsv.hsvPlanes(image.data);
    state.maskImage = image; // reused as the mask's pixels
    state.maskCanvas = work;
    state.maskSize = [mw, mh];
    state.maskDirty = true;
  }

  function updateMask() {
    if (!state.planes || !$("show_mask").checked) {
      $("mask-info").textContent = "";
      return;
    }
    if (state.maskDirty) {
      const p = readParams();
      const out = new Uint32Array(state.maskImage.data.buffer);
      const count = TreeHsv.inRange(
        state.planes,
        [p.hue_min, p.sat_min, p.val_min],
        [p.hue_max, p.sat_max, p.val_max],
        out,
        MASK_RGBA
      );
      state.maskCanvas.getContext("2d").putImageData(state.maskImage, 0, 0);
      state.maskDirty = false;
      body.dataset.maskPixels = String(count);
      const share = (100 * count) / out.length;
      const scaled = state.maskSize[0] !== state.size[0] ? " (on a scaled-down copy)" : "";
      $("mask-info").textContent = `Vegetation: ${share.toFixed(1)} % of the image${scaled}, before the clean-up.`;
    }
  }

  function updateImageInfo() {
    const info = $("image-info");
    if (!state.file) {
      info.textContent = "No image yet.";
      return;
    }
    const p = readParams();
    info.classList.toggle("warn", Boolean(state.frameWarning));
    if (state.frameWarning) {
      info.textContent = state.frameWarning;
      return;
    }
    if (!state.bitmap && !state.size) {
      info.textContent = "This browser cannot show this image (TIFF?): the crowns are drawn on a blank canvas.";
      return;
    }
    const [w, h] = state.size;
    const mx = p.real_width / w;
    const my = p.real_height / h;
    const scale = Number.isFinite(mx) && Number.isFinite(my) ? ` · ${mx.toPrecision(3)} × ${my.toPrecision(3)} m/px` : "";
    let text = `${w.toLocaleString("en")} × ${h.toLocaleString("en")} px (${((w * h) / 1e6).toFixed(1)} MP)${scale}`;
    if (!state.bitmap) text += ". This browser cannot show this image (TIFF?): the crowns are drawn on a blank canvas.";
    else if (state.orientation !== 1) {
      text += `. Shown as stored, not turned by its EXIF orientation (${state.orientation}):`;
      text += " the service ignores it too.";
    }
    info.textContent = text;
  }

  // ---- drawing --------------------------------------------------------------------------------------------------

  let drawQueued = false;
  function queueDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      draw();
    });
  }

  function draw() {
    updateMask();
    if (!state.size) {
      canvas.width = canvas.height = 0;
      return;
    }
    const [w, h] = state.size;
    const wrap = $("canvas-wrap");
    const room = Math.max(320, window.innerHeight - wrap.getBoundingClientRect().top - 70);
    const scale = Math.min(wrap.clientWidth / w, room / h);
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = `${Math.floor(w * scale)}px`;
    canvas.style.height = `${Math.floor(h * scale)}px`;
    canvas.width = Math.max(1, Math.floor(w * scale * dpr));
    canvas.height = Math.max(1, Math.floor(h * scale * dpr));
    state.view = { scale, dpr };
    ctx.setTransform(scale * dpr, 0, 0, scale * dpr, 0, 0); // image pixels from here on
    ctx.imageSmoothingQuality = "high";
    if (state.bitmap) ctx.drawImage(state.bitmap, 0, 0, w, h);
    else {
      ctx.fillStyle = "#555d58";
      ctx.fillRect(0, 0, w, h);
    }
    if (state.maskCanvas && $("show_mask").checked) ctx.drawImage(state.maskCanvas, 0, 0, w, h);
    const trees = state.result ? state.result.trees : [];
    if (trees.length) {
      // Both the service and the canvas (in image pixels, set above) put pixel i at [i, i + 1): its centre is
      // i + 0.5 in pixel_x, pixel_y as here, so a crown is drawn at (pixel_x, pixel_y) as it is.
      const path = new Path2D();
      for (const t of trees) {
        const r = Math.max(t.pixel_diameter / 2, 0.5);
        path.moveTo(t.pixel_x + r, t.pixel_y);
        path.arc(t.pixel_x, t.pixel_y, r, 0, 2 * Math.PI);
      }
      ctx.lineWidth = 3.5 / scale;
      ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
      ctx.stroke(path);
      ctx.lineWidth = 1.75 / scale;
      ctx.strokeStyle = CROWN_COLOUR;
      ctx.stroke(path);
    }
  }

  function treeAt(event) {
    if (!state.result || !state.view) return null;
    const rect = canvas.getBoundingClientRect();
    const x = (event.clientX - rect.left) / state.view.scale;
    const y = (event.clientY - rect.top) / state.view.scale;
    let best = null;
    let bestD = Infinity;
    for (const t of state.result.trees) {
      const d = Math.hypot(t.pixel_x - x, t.pixel_y - y); // x, y: in the canvas's image pixels, as pixel_x
      if (d <= Math.max(t.pixel_diameter / 2, 3 / state.view.scale) && d < bestD) {
        best = t;
        bestD = d;
      }
    }
    return best;
  }

  // ---- copy and generate ----------------------------------------------------------------------------------------

  function shellQuote(text) {
    return "'" + String(text).replace(/'/g, "'\\''") + "'";
  }

  function curlCommand(params) {
    const lines = [`curl -s ${shellQuote(apiUrl("detect-trees"))}`];
    if (apiKey()) lines.push(`-H "X-API-Key: $API_KEY"`); // the key itself never goes to the clipboard
    lines.push(`-F image=@${shellQuote(state.file ? state.file.name : "tile.png")}`);
    const fields = PARAMS.map((name) => `-F ${name}=${params[name]}`);
    for (let i = 0; i < fields.length; i += 4) lines.push(fields.slice(i, i + 4).join(" "));
    return lines.join(" \\\n  ") + " > trees.json";
  }

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
    const text = kind === "curl" ? curlCommand(params) : JSON.stringify(params, null, 2);
    const ok = await copyText(text);
    const what = kind === "curl" ? "The curl command" : "The parameters (JSON)";
    $("action-msg").textContent = ok ? `${what}: copied to the clipboard.` : `${what}: select and copy it below.`;
  }

  function saveBlob(blob, filename) {
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  function filenameOf(response, fallback) {
    const header = response.headers.get("content-disposition") || "";
    const match = /filename="?([^";]+)"?/i.exec(header);
    return match ? match[1] : fallback;
  }

  // Where a stored scene's download_url points. A URL of the page's host under the service's own prefix
  // (…/download/name.zip) is this service, even when its scheme is not the page's (behind a TLS proxy url_for may say
  // http://) or its prefix is missing (a proxy that strips it): it is fetched here, relative to the page, with the
  // API key. Anything else (a signed storage URL) needs no key and is opened as it is.
  function storedTarget(downloadUrl) {
    const url = new URL(downloadUrl, API);
    if (url.origin === location.origin || url.host === location.host) {
      let rest = null;
      if (url.pathname.startsWith(API.pathname)) rest = url.pathname.slice(API.pathname.length);
      else {
        const tail = /\/(download\/[^/]+)$/.exec(url.pathname);
        if (tail) rest = tail[1];
      }
      // "./": the rest is a path, never read as a scheme
      if (rest !== null) return { href: new URL("./" + rest + url.search, API).href, sameService: true };
    }
    return { href: url.href, sameService: false };
  }

  function clearStored() {
    state.stored = null;
    $("stored").hidden = true;
    $("stored-link").removeAttribute("href");
    $("stored-link").textContent = "";
    $("stored-info").textContent = "";
  }

  // "valid for 45 min, until 14:05", "valid for 24 h, until 2 Dec, 14:05"
  function validity(seconds, until) {
    const minutes = Math.max(1, Math.round(seconds / 60));
    let span = `${minutes} min`;
    if (minutes >= 2880) span = `${Math.round(minutes / 1440)} days`;
    else if (minutes >= 120) span = `${Math.round(minutes / 60)} h`;
    const time = until.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
    const today = until.toDateString() === new Date().toDateString();
    const day = today ? "" : `${until.toLocaleDateString("en-GB", { day: "numeric", month: "short" })}, `;
    return `valid for ${span}, until ${day}${time}`;
  }

  // A stored scene: a real link the user clicks (a download started by the page itself after a long wait may be
  // blocked as a pop-up), with the file's name, size and how long the link lasts.
  function showStored(stored) {
    const target = storedTarget(stored.download_url);
    const expiresAt = stored.expires_in ? Date.now() + stored.expires_in * 1000 : null;
    state.stored = { ...target, filename: stored.filename, expiresAt };
    const link = $("stored-link");
    link.href = target.href;
    link.textContent = stored.filename;
    if (target.sameService) {
      link.download = stored.filename;
      link.removeAttribute("target");
      link.removeAttribute("rel");
    } else {
      link.removeAttribute("download"); // ignored across origins anyway: the storage names the file
      link.target = "_blank";
      link.rel = "noopener noreferrer";
    }
    const size = `${Number(stored.filesize_mb).toLocaleString("en")} MB`;
    const expiry = expiresAt ? validity(stored.expires_in, new Date(expiresAt)) : "no expiry";
    $("stored-info").textContent = `(${size}; ${expiry})`;
    $("stored").hidden = false;
  }

  async function downloadStored(event) {
    const stored = state.stored;
    if (!stored) return;
    if (stored.expiresAt && Date.now() > stored.expiresAt) {
      event.preventDefault();
      $("action-msg").textContent = "The link has expired: generate the scene again.";
      return;
    }
    if (!stored.sameService) return; // the browser follows the link (a new tab, or the download)
    event.preventDefault(); // the service may need the API key, which a plain link cannot send
    const msg = $("action-msg");
    msg.textContent = `Downloading ${stored.filename}…`;
    try {
      const response = await apiFetch(stored.href);
      const blob = await response.blob();
      saveBlob(blob, stored.filename);
      msg.textContent = `Downloaded ${stored.filename} (${bytes(blob.size)}).`;
      showError(null);
    } catch (error) {
      msg.textContent = "";
      showError(error);
    }
  }

  async function generate(format) {
    const result = state.result;
    if (!result || state.generating) return;
    const label = format === "glb" ? "GLB" : "OBJ (zip)";
    const msg = $("action-msg");
    msg.textContent = `Generating the ${label} scene of ${result.total_trees.toLocaleString("en")} trees…`;
    clearStored();
    state.generating = true;
    updateButtons();
    try {
      const query = new URLSearchParams({ format, base_model: $("base_model").value });
      const response = await apiFetch(`generate-model?${query}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ trees: result.trees }),
      });
      const type = response.headers.get("content-type") || "";
      if (type.startsWith("application/json")) {
        // Above the service's LARGE_MODEL_THRESHOLD the scene is stored: a link to it, for the user to click.
        const stored = await response.json();
        showStored(stored);
        const trees = Number(stored.total_trees).toLocaleString("en");
        msg.textContent = `The scene of ${trees} trees is too large to send at once: it was stored. Download it:`;
      } else {
        const blob = await response.blob();
        const name = filenameOf(response, `trees.${format}`);
        saveBlob(blob, name);
        msg.textContent = `Downloaded ${name} (${bytes(blob.size)}).`;
      }
      showError(null);
    } catch (error) {
      msg.textContent = "";
      showError(error);
    } finally {
      state.generating = false;
      updateButtons();
    }
  }

  function updateButtons() {
    const enabled = Boolean(state.result) && !state.generating; // one scene at a time
    for (const id of ["gen-zip", "gen-glb"]) $(id).disabled = !enabled;
    $("copy-curl").disabled = !state.file;
    $("copy-json").disabled = false;
  }

  // ---- service info ---------------------------------------------------------------------------------------------

  async function loadServiceInfo() {
    const note = $("service-note");
    try {
      const info = await (await apiFetch("")).json();
      note.textContent = `${info.service} ${info.version}`;
      const models = await (await apiFetch("tree-models")).json();
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

  function wire() {
    const controls = $("controls");
    controls.addEventListener("submit", (e) => e.preventDefault());
    controls.addEventListener("input", (e) => {
      if (e.target.id === "file" || e.target.id === "api_key") return;
      onParamInput(e);
    });
    $("file").addEventListener("change", (e) => loadFile(e.target.files[0]));
    $("show_mask").addEventListener("change", () => {
      state.maskDirty = true;
      draw();
    });
    $("use_jobs").addEventListener("change", () => {
      state.userJobs = $("use_jobs").checked;
      $("jobs-note").textContent = "";
      scheduleDetect(0);
    });
    $("stored-link").addEventListener("click", downloadStored);
    let keyTimer = 0;
    $("api_key").addEventListener("input", () => {
      sessionStorage.setItem("tree-detection-api-key", apiKey());
      clearTimeout(keyTimer);
      keyTimer = setTimeout(() => {
        loadServiceInfo();
        scheduleDetect(0);
      }, 400);
    });
    $("api_key").value = sessionStorage.getItem("tree-detection-api-key") || "";

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

    $("copy-curl").addEventListener("click", () => copy("curl"));
    $("copy-json").addEventListener("click", () => copy("json"));
    for (const id of ["gen-zip", "gen-glb"]) $(id).addEventListener("click", (e) => generate(e.target.dataset.format));
    $("cancel").addEventListener("click", () => {
      if (state.inflight) state.inflight.abort();
      state.seq++;
      state.inflight = null;
      $("progress").hidden = true;
      setState("cancelled");
      showError("Cancelled: change a parameter to run the detection again.");
    });
    canvas.addEventListener("mousemove", (e) => {
      const t = treeAt(e);
      $("hover").textContent = t
        ? `tree ${t.id}: x ${t.x.toFixed(1)} m, y ${t.y.toFixed(1)} m, crown ${t.diameter.toFixed(1)} m`
        : "";
    });
    window.addEventListener("resize", queueDraw);
  }

  wire();
  updateButtons();
  loadServiceInfo();
})();
