// The page's api.js under Node: the form it sends, the API key header, the errors it surfaces (a fake fetch and
// a fake XMLHttpRequest stand in for the browser's).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ApiError,
  PARAMS,
  apiError,
  createApi,
  curlCommand,
  describe,
  detectionForm,
  formatDetail,
} from "../../serve_app/static/ui/api.js";

const BASE = "http://example.test/prefix/";
const PARAMS_IN = {
  hue_min: 35, hue_max: 85, sat_min: 40, sat_max: 255, val_min: 40, val_max: 255,
  min_diameter: 3, max_diameter: 15, cluster_threshold: 10, real_width: 102.4, real_height: 100, method: "heatmap",
};

// A fetch that records its calls and answers each with the next of `answers` (a Response, or an Error to throw).
function fakeFetch(...answers) {
  const calls = [];
  const fetch = async (url, options) => {
    calls.push({ url, options });
    const answer = answers.shift();
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { fetch, calls };
}

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

test("the detection form has the image and every parameter, as the page's strings", () => {
  const file = new File([new Uint8Array([1, 2, 3])], "tile.png", { type: "image/png" });
  const data = detectionForm(file, PARAMS_IN);
  assert.deepEqual([...data.keys()], ["image", ...PARAMS]);
  assert.equal(data.get("image").name, "tile.png");
  assert.equal(data.get("image").size, 3);
  assert.equal(data.get("min_diameter"), "3"); // String(3): no ".0", as the API tests send it
  assert.equal(data.get("real_width"), "102.4");
  assert.equal(data.get("method"), "heatmap");
});

test("a blob without a name is sent as image.png", () => {
  const data = detectionForm(new Blob([new Uint8Array([1])]), PARAMS_IN);
  assert.equal(data.get("image").name, "image.png");
});

test("detect posts the form to detect-trees under the service's root and returns its JSON", async () => {
  const { fetch, calls } = fakeFetch(json({ total_trees: 7 }));
  const api = createApi({ base: BASE, fetch });
  const data = detectionForm(new Blob([new Uint8Array([1])]), PARAMS_IN);
  const signal = new AbortController().signal;
  assert.deepEqual(await api.detect(data, signal), { total_trees: 7 });
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "http://example.test/prefix/detect-trees");
  assert.equal(calls[0].options.method, "POST");
  assert.equal(calls[0].options.body, data);
  assert.equal(calls[0].options.signal, signal);
});

test("the API key is sent as X-API-Key when one is set, and not at all when it is empty", async () => {
  let key = "s3cret";
  const { fetch, calls } = fakeFetch(json({}), json({}), json({}));
  const api = createApi({ base: BASE, apiKey: () => key, fetch });
  await api.fetch("tree-models");
  await api.fetch("generate-model", { method: "POST", headers: { "Content-Type": "application/json" } });
  key = "";
  await api.fetch("tree-models");
  assert.deepEqual(calls[0].options.headers, { "X-API-Key": "s3cret" });
  assert.deepEqual(calls[1].options.headers, { "Content-Type": "application/json", "X-API-Key": "s3cret" });
  assert.deepEqual(calls[2].options.headers, {});
});

test("without a fetch given, the global one is used (looked up at each call)", async () => {
  const saved = globalThis.fetch;
  const { fetch, calls } = fakeFetch(json({ ok: 1 }));
  globalThis.fetch = fetch;
  try {
    const api = createApi({ base: BASE });
    assert.deepEqual(await (await api.fetch("")).json(), { ok: 1 });
  } finally {
    globalThis.fetch = saved;
  }
  assert.equal(calls[0].url, BASE);
});

test("a 4xx answer is thrown as an ApiError with its status and detail, shown with a hint", async () => {
  const detail = "min_diameter (20.0) must not exceed max_diameter (15.0)";
  const { fetch } = fakeFetch(json({ detail }, 422));
  const api = createApi({ base: BASE, fetch });
  const error = await api.fetch("detect-trees", { method: "POST" }).then(
    () => assert.fail("no error thrown"),
    (e) => e
  );
  assert.ok(error instanceof ApiError);
  assert.equal(error.status, 422);
  assert.equal(error.detail, detail);
  assert.equal(describe(error), `Error 422: ${detail}\nA parameter is out of range.`);
});

test("a 401 says to enter the API key", async () => {
  const { fetch } = fakeFetch(json({ detail: "Missing or invalid API key" }, 401));
  const error = await createApi({ base: BASE, fetch }).fetch("").catch((e) => e);
  assert.equal(describe(error), "Error 401: Missing or invalid API key\nEnter the service's API key under Service.");
});

test("FastAPI's validation errors are joined, by field", async () => {
  const detail = [
    { loc: ["body", "hue_min"], msg: "Input should be less than or equal to 179" },
    { loc: ["query", "format"], msg: "bad format" },
    { msg: "no location" },
  ];
  const error = await apiError(json({ detail }, 422));
  assert.equal(
    error.detail,
    "hue_min: Input should be less than or equal to 179; format: bad format; no location"
  );
  assert.equal(formatDetail({ any: 1 }), '{"any":1}');
  assert.equal(formatDetail(undefined), "");
});

test("an answer that is not JSON gives its status text", async () => {
  const error = await apiError(new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
  assert.equal(error.status, 502);
  assert.equal(error.detail, "Bad Gateway");
  assert.equal(describe(error), "Error 502: Bad Gateway"); // no hint for 502
});

test("a network error says the service cannot be reached", async () => {
  const { fetch } = fakeFetch(new TypeError("Failed to fetch"));
  const error = await createApi({ base: BASE, fetch }).fetch("").catch((e) => e);
  assert.ok(error instanceof TypeError);
  assert.equal(describe(error), "Cannot reach the service (Failed to fetch). Is it running?");
  assert.equal(describe(new Error("The job was cancelled.")), "The job was cancelled.");
});

// An XMLHttpRequest that records what is sent and answers as `answer` says (status and JSON, or a network error).
function fakeXhr(answer) {
  const sent = [];
  class Xhr {
    constructor() {
      this.headers = {};
      this.upload = {};
      sent.push(this);
    }
    open(method, url) {
      Object.assign(this, { method, url });
    }
    setRequestHeader(name, value) {
      this.headers[name] = value;
    }
    abort() {
      this.aborted = true;
      queueMicrotask(() => this.onabort());
    }
    send(body) {
      this.body = body;
      queueMicrotask(() => {
        if (this.aborted) return;
        this.upload.onprogress({ lengthComputable: true, loaded: 50, total: 100 });
        this.upload.onprogress({ lengthComputable: true, loaded: 100, total: 100 });
        this.upload.onload();
        if (answer.network) return this.onerror();
        this.status = answer.status;
        this.statusText = answer.statusText || "";
        this.response = answer.json;
        this.onload();
      });
    }
  }
  return { Xhr, sent };
}

test("post sends the form with the key and reports the upload's progress", async () => {
  const { Xhr, sent } = fakeXhr({ status: 202, json: { id: "j1" } });
  const api = createApi({ base: BASE, apiKey: () => "k", XMLHttpRequest: Xhr });
  const progress = [];
  const data = new FormData();
  const answer = await api.post("jobs", data, new AbortController().signal, (f) => progress.push(f));
  assert.deepEqual(answer, { id: "j1" });
  assert.equal(sent.length, 1);
  assert.equal(sent[0].method, "POST");
  assert.equal(sent[0].url, "http://example.test/prefix/jobs");
  assert.deepEqual(sent[0].headers, { "X-API-Key": "k" });
  assert.equal(sent[0].body, data);
  assert.deepEqual(progress, [0.5, 1]);
});

test("post surfaces a 4xx detail, and a network error as a TypeError", async () => {
  const signal = new AbortController().signal;
  const refused = createApi({ base: BASE, XMLHttpRequest: fakeXhr({ status: 429, json: { detail: "busy" } }).Xhr });
  const error = await refused.post("jobs", new FormData(), signal, () => {}).catch((e) => e);
  assert.ok(error instanceof ApiError);
  assert.equal(describe(error), "Error 429: busy\nThe service is busy with other jobs: try again in a moment.");
  const down = createApi({ base: BASE, XMLHttpRequest: fakeXhr({ network: true }).Xhr });
  const lost = await down.post("jobs", new FormData(), signal, () => {}).catch((e) => e);
  assert.ok(lost instanceof TypeError);
  assert.match(describe(lost), /^Cannot reach the service \(network error\)/);
});

test("post with an aborted signal sends nothing", async () => {
  const { Xhr, sent } = fakeXhr({ status: 202, json: { id: "j1" } });
  const controller = new AbortController();
  controller.abort();
  const error = await createApi({ base: BASE, XMLHttpRequest: Xhr })
    .post("jobs", new FormData(), controller.signal, () => {})
    .catch((e) => e);
  assert.equal(error.name, "AbortError");
  assert.equal(sent.length, 0);
});

test("the curl command names every field and never the key itself", () => {
  const curl = curlCommand("http://h/detect-trees", PARAMS_IN, { fileName: "it's.png", withKey: true });
  assert.ok(curl.startsWith("curl -s 'http://h/detect-trees' \\\n  -H \"X-API-Key: $API_KEY\""), curl);
  assert.ok(curl.includes("-F image=@'it'\\''s.png'"), curl);
  for (const name of PARAMS) assert.ok(curl.includes(`-F ${name}=${PARAMS_IN[name]}`), name);
  assert.ok(curl.endsWith(" > trees.json"));
  assert.ok(!curlCommand("u", PARAMS_IN, { fileName: "a.png", withKey: false }).includes("X-API-Key"));
});
