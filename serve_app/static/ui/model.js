/*
 * The 3D scene of the trees shown: POST /generate-model, downloaded at once, or stored by the service and shown as
 * a link (name, size, validity) the user clicks. The DOM is touched only when a function is called.
 */

const $ = (id) => document.getElementById(id);

/** A size as the page writes it: "12 kB", "3.4 MB". */
export function bytes(n) {
  return n < 1e6 ? `${Math.max(1, Math.round(n / 1e3))} kB` : `${(n / 1e6).toFixed(1)} MB`;
}

/**
 * How long a link lasts: "valid for 45 min, until 14:05", "valid for 24 h, until 2 Dec, 14:05".
 * @param {number} seconds
 * @param {Date} until
 * @param {Date} now
 */
export function validity(seconds, until, now = new Date()) {
  const minutes = Math.max(1, Math.round(seconds / 60));
  let span = `${minutes} min`;
  if (minutes >= 2880) span = `${Math.round(minutes / 1440)} days`;
  else if (minutes >= 120) span = `${Math.round(minutes / 60)} h`;
  const time = until.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
  const today = until.toDateString() === now.toDateString();
  const day = today ? "" : `${until.toLocaleDateString("en-GB", { day: "numeric", month: "short" })}, `;
  return `valid for ${span}, until ${day}${time}`;
}

/** The file name of a Content-Disposition header, else `fallback`. */
export function filenameOf(response, fallback) {
  const header = response.headers.get("content-disposition") || "";
  const match = /filename="?([^";]+)"?/i.exec(header);
  return match ? match[1] : fallback;
}

/**
 * Where a stored scene's download_url points. A URL of the page's host under the service's own prefix
 * (…/download/name.zip) is this service, even when its scheme is not the page's (behind a TLS proxy url_for may say
 * http://) or its prefix is missing (a proxy that strips it): it is fetched here, relative to the page, with the
 * API key. Anything else (a signed storage URL) needs no key and is opened as it is.
 * @param {string} downloadUrl
 * @param {URL} root the service's root URL
 * @param {{origin: string, host: string}} here the page's location
 * @returns {{href: string, sameService: boolean}}
 */
export function storedTarget(downloadUrl, root, here) {
  const url = new URL(downloadUrl, root);
  if (url.origin === here.origin || url.host === here.host) {
    let rest = null;
    if (url.pathname.startsWith(root.pathname)) rest = url.pathname.slice(root.pathname.length);
    else {
      const tail = /\/(download\/[^/]+)$/.exec(url.pathname);
      if (tail) rest = tail[1];
    }
    // "./": the rest is a path, never read as a scheme
    if (rest !== null) return { href: new URL("./" + rest + url.search, root).href, sameService: true };
  }
  return { href: url.href, sameService: false };
}

/** Save a blob as a download named `filename`. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function setLink(link, target, filename) {
  link.href = target.href;
  link.textContent = filename;
  if (target.sameService) {
    link.download = filename;
    link.removeAttribute("target");
    link.removeAttribute("rel");
  } else {
    link.removeAttribute("download"); // ignored across origins anyway: the storage names the file
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

// The functions below take the page: {api (api.js createApi), state, showError, updateButtons}; of its state they
// read and write result (the detection shown), generating and stored.

/** Hide the stored scene's link. */
export function clearStored({ state }) {
  state.stored = null;
  $("stored").hidden = true;
  $("stored-link").removeAttribute("href");
  $("stored-link").textContent = "";
  $("stored-info").textContent = "";
}

// A stored scene: a real link the user clicks (a download started by the page itself after a long wait may be
// blocked as a pop-up), with the file's name, size and how long the link lasts.
function showStored({ api, state }, stored) {
  const target = storedTarget(stored.download_url, api.root, location);
  // Seconds are expires_in_s; expires_in is the legacy words ("1 hour"), a number only from an older service.
  const seconds = [stored.expires_in_s, stored.expires_in].find((value) => typeof value === "number") ?? null;
  const expiresAt = seconds ? Date.now() + seconds * 1000 : null;
  state.stored = { ...target, filename: stored.filename, expiresAt };
  setLink($("stored-link"), target, stored.filename);
  const size = `${Number(stored.filesize_mb).toLocaleString("en")} MB`;
  const expiry = expiresAt ? validity(seconds, new Date(expiresAt)) : "no expiry";
  $("stored-info").textContent = `(${size}; ${expiry})`;
  $("stored").hidden = false;
}

/** The stored scene's link was clicked: this service's file is fetched with the API key, else the link is followed. */
export async function downloadStored({ api, state, showError }, event) {
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
    const blob = await (await api.fetch(stored.href)).blob();
    saveBlob(blob, stored.filename);
    msg.textContent = `Downloaded ${stored.filename} (${bytes(blob.size)}).`;
    showError(null);
  } catch (error) {
    msg.textContent = "";
    showError(error);
  }
}

// The scene's answer: a file to save, or (above the service's LARGE_MODEL_THRESHOLD) a stored scene's link.
async function receive(page, response, format) {
  const type = response.headers.get("content-type") || "";
  if (type.startsWith("application/json")) {
    const stored = await response.json();
    showStored(page, stored);
    const trees = Number(stored.total_trees).toLocaleString("en");
    return `The scene of ${trees} trees is too large to send at once: it was stored. Download it:`;
  }
  const blob = await response.blob();
  const name = filenameOf(response, `trees.${format}`);
  saveBlob(blob, name);
  return `Downloaded ${name} (${bytes(blob.size)}).`;
}

/**
 * Make the 3D scene of the trees shown (one at a time: the buttons stay disabled meanwhile).
 * @param {object} page
 * @param {string} format "zip" (OBJ and MTL) or "glb"
 * @param {string} baseModel the base tree model's name
 */
export async function generate(page, format, baseModel) {
  const { api, state, showError, updateButtons } = page;
  const result = state.result;
  if (!result || state.generating) return;
  const label = format === "glb" ? "GLB" : "OBJ (zip)";
  const msg = $("action-msg");
  msg.textContent = `Generating the ${label} scene of ${result.total_trees.toLocaleString("en")} trees…`;
  clearStored(page);
  state.generating = true;
  updateButtons();
  try {
    const query = new URLSearchParams({ format, base_model: baseModel });
    const response = await api.fetch(`generate-model?${query}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ trees: result.trees }),
    });
    msg.textContent = await receive(page, response, format);
    showError(null);
  } catch (error) {
    msg.textContent = "";
    showError(error);
  } finally {
    state.generating = false;
    updateButtons();
  }
}
