/*
 * The service's HTTP API as the page calls it: the detection form, the API key header, the errors' details.
 *
 * No DOM at import time: `createApi` takes the service's root URL, a function giving the key, and the `fetch` and
 * `XMLHttpRequest` to use (the page's by default), so Node tests (tests/js/api.test.mjs) pass fakes.
 */

/** The detection parameters, as the form fields of POST /detect-trees and POST /jobs name them. */
export const PARAMS = [
  "hue_min", "hue_max", "sat_min", "sat_max", "val_min", "val_max",
  "min_diameter", "max_diameter", "cluster_threshold", "real_width", "real_height", "method",
];

/** An answer of the service other than 2xx: its status and its `detail`, as text. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.name = "ApiError";
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

/**
 * An answer's `detail` as one line of text.
 * @param {unknown} detail a string, or FastAPI's validation errors [{loc: ["body", "hue_min"], msg}], or anything
 * @returns {string} "" for none
 */
export function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body" && p !== "query").join(".") : "";
        return (where ? where + ": " : "") + (d.msg || JSON.stringify(d));
      })
      .join("; ");
  }
  return detail === undefined ? "" : JSON.stringify(detail);
}

/**
 * The ApiError of a response that is not ok (its JSON `detail`, else its status text).
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
export async function apiError(response) {
  let detail = "";
  try {
    detail = formatDetail((await response.json()).detail);
  } catch (_) {
    detail = response.statusText || "no details";
  }
  return new ApiError(response.status, detail);
}

/**
 * What the user reads of an error: the status, the detail and a hint; or that the service cannot be reached.
 * @param {unknown} error an ApiError, the TypeError of a failed fetch, or anything else
 * @returns {string}
 */
export function describe(error) {
  if (error instanceof ApiError) {
    const hint = HINTS[error.status] ? "\n" + HINTS[error.status] : "";
    return `Error ${error.status}: ${error.detail}${hint}`;
  }
  if (error instanceof TypeError) return `Cannot reach the service (${error.message}). Is it running?`;
  return String(error && error.message ? error.message : error);
}

/**
 * The multipart form of a detection: the image and every parameter, as strings (String(3) is "3").
 * @param {Blob} file the image (a File's name is sent as the file name)
 * @param {Object<string, number|string>} params one value per name of PARAMS
 * @returns {FormData}
 */
export function detectionForm(file, params) {
  const data = new FormData();
  data.append("image", file, file.name || "image.png");
  for (const name of PARAMS) data.append(name, String(params[name]));
  return data;
}

export function abortError() {
  return new DOMException("aborted", "AbortError");
}

function shellQuote(text) {
  return "'" + String(text).replace(/'/g, "'\\''") + "'";
}

/**
 * The detection as a curl command; the key itself never goes into it (it reads $API_KEY).
 * @param {string} url the service's /detect-trees URL
 * @param {Object<string, number|string>} params
 * @param {{fileName: string, withKey: boolean}} options
 * @returns {string}
 */
export function curlCommand(url, params, { fileName, withKey }) {
  const lines = [`curl -s ${shellQuote(url)}`];
  if (withKey) lines.push(`-H "X-API-Key: $API_KEY"`);
  lines.push(`-F image=@${shellQuote(fileName)}`);
  const fields = PARAMS.map((name) => `-F ${name}=${params[name]}`);
  for (let i = 0; i < fields.length; i += 4) lines.push(fields.slice(i, i + 4).join(" "));
  return lines.join(" \\\n  ") + " > trees.json";
}

/**
 * A client of the service at `base`.
 * @param {{base: URL|string, apiKey?: () => string, fetch?: typeof fetch, XMLHttpRequest?: Function}} options
 *   base: the service's root (every path is relative to it); apiKey: the key to send ("" for none), asked at
 *   every call; fetch, XMLHttpRequest: the page's unless given (tests pass fakes).
 * @returns {{url: Function, headers: Function, fetch: Function, post: Function, detect: Function}}
 */
export function createApi({
  base,
  apiKey = () => "",
  fetch: fetchImpl = (...args) => globalThis.fetch(...args),
  XMLHttpRequest: Xhr = globalThis.XMLHttpRequest,
}) {
  const root = new URL(base);
  const url = (path) => new URL(path, root).href;

  function headers(extra) {
    const all = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) all["X-API-Key"] = key;
    return all;
  }

  // A fetch of `path` with the key; an answer other than 2xx is thrown as its ApiError.
  async function apiFetch(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = headers(opts.headers);
    const response = await fetchImpl(url(path), opts);
    if (!response.ok) throw await apiError(response);
    return response;
  }

  // The direct detection: POST /detect-trees, its JSON answer.
  async function detect(data, signal) {
    return (await apiFetch("detect-trees", { method: "POST", body: data, signal })).json();
  }

  return {
    root,
    url,
    headers,
    fetch: apiFetch,
    detect,
    post: (path, data, signal, onProgress) => postWithProgress(Xhr, url(path), headers(), data, signal, onProgress),
  };
}

// POST with upload progress (fetch has none): a large image can take a while to send.
// Aborted while uploading, the request is dropped (the service makes nothing). Once the upload is complete the
// service may already have made the job, so the request runs on to its answer: the caller checks
// signal.aborted and deletes what was made.
function postWithProgress(Xhr, href, headers, data, signal, onProgress) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError());
      return;
    }
    const xhr = new Xhr();
    const onAbort = () => xhr.abort();
    const settle = (fn, value) => {
      signal.removeEventListener("abort", onAbort);
      fn(value);
    };
    xhr.open("POST", href);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.upload.onload = () => signal.removeEventListener("abort", onAbort);
    xhr.onload = () => {
      const json = xhr.response || {};
      if (xhr.status >= 200 && xhr.status < 300) settle(resolve, json);
      else settle(reject, new ApiError(xhr.status, formatDetail(json.detail) || xhr.statusText));
    };
    xhr.onerror = () => settle(reject, new TypeError("network error"));
    xhr.onabort = () => settle(reject, abortError());
    signal.addEventListener("abort", onAbort, { once: true });
    xhr.send(data);
  });
}
