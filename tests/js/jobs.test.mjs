// The page's jobs.js under Node: a detection as a background job, polled until it ends, against a fake api (the
// interface of api.js's createApi) and fake timers (every wait recorded, none really waited).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError } from "../../serve_app/static/ui/api.js";
import { POLL_MAX_MS, jobOutcome, jobProgress, runJob, sleep } from "../../serve_app/static/ui/jobs.js";

const running = (done, total = 4, trees = 3 * done) => ({
  state: "running",
  stage: "detecting",
  progress: { tiles_done: done, tiles_total: total, trees_so_far: trees },
});
const DETECTION = { total_trees: 12, trees: [] };
/** A run that asks more than this polls on forever: the fake api fails it rather than let the test hang. */
const MAX_REQUESTS = 50;

// A fake api: POST jobs answers {id} (after `onPost`), each GET jobs/{id} the next of `states` (the last repeats),
// DELETE is recorded. `calls` lists every request as "METHOD path".
function fakeApi(states, { id = "job 1", onPost = () => {} } = {}) {
  const calls = [];
  const api = {
    async post(path, data, signal, onProgress) {
      calls.push(`POST ${path}`);
      onProgress(0.5);
      onProgress(1);
      onPost();
      return { id };
    },
    async fetch(path, options = {}) {
      const method = options.method || "GET";
      calls.push(`${method} ${path}`);
      if (method === "DELETE") return { json: async () => ({ state: "cancelled" }) };
      if (calls.length > MAX_REQUESTS) throw new Error(`polled on after ${MAX_REQUESTS} requests`);
      const job = states.length > 1 ? states.shift() : states[0];
      if (job instanceof Error) throw job;
      return { json: async () => job };
    },
  };
  return { api, calls };
}

// Timers that record each wait and fire at once (on the next turn of the event loop).
function fakeTimers() {
  const waits = [];
  return {
    waits,
    setTimeout: (fn, ms) => {
      waits.push(ms);
      return setTimeout(fn, 0);
    },
    clearTimeout: (t) => clearTimeout(t),
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

test("a job is polled until it succeeds, with its progress, and returns its detection", async () => {
  const succeeded = { state: "succeeded", result: { detection: DETECTION } };
  const { api, calls } = fakeApi([{ state: "queued" }, running(1), running(4), succeeded]);
  const timers = fakeTimers();
  const progress = [];
  const onProgress = (fraction, text) => progress.push([fraction, text]);
  const result = await runJob(api, "form", { signal: new AbortController().signal, onProgress, timers });
  assert.deepEqual(result, DETECTION);
  assert.deepEqual(calls, ["POST jobs", ...Array(4).fill("GET jobs/job%201")]);
  assert.deepEqual(progress, [
    [0, "Uploading…"],
    [0.5, "Uploading 50 %"],
    [1, "Uploading 100 %"],
    [null, "queued…"],
    [0.25, "detecting: tile 1 of 4, 3 trees so far"],
    [1, "detecting: tile 4 of 4, 12 trees so far"],
  ]);
  assert.deepEqual(timers.waits, [200, 300, 450, 675]); // growing by half, from 200 ms
});

test("polling stops after the end: no request, no wait, a later abort deletes nothing", async () => {
  const { api, calls } = fakeApi([running(1), { state: "succeeded", result: DETECTION }]);
  const timers = fakeTimers();
  const controller = new AbortController();
  assert.deepEqual(await runJob(api, "form", { signal: controller.signal, timers }), DETECTION); // legacy result
  const count = calls.length;
  await settle();
  controller.abort();
  await settle();
  assert.equal(calls.length, count, calls.join(", "));
  assert.equal(timers.waits.length, 2);
});

test("the wait between polls grows to at most a second", async () => {
  const { api } = fakeApi([...Array(8).fill(running(1)), { state: "succeeded", result: DETECTION }]);
  const timers = fakeTimers();
  await runJob(api, "form", { signal: new AbortController().signal, timers });
  assert.deepEqual(timers.waits, [200, 300, 450, 675, 1000, 1000, 1000, 1000, 1000]);
  assert.equal(Math.max(...timers.waits), POLL_MAX_MS);
});

test("a failed job surfaces its error, status and detail", async () => {
  const failed = { state: "failed", error: { status: 413, detail: "image of 300000000 pixels exceeds the limit" } };
  const { api, calls } = fakeApi([running(1), failed]);
  const error = await runJob(api, "form", { signal: new AbortController().signal, timers: fakeTimers() }).then(
    () => assert.fail("no error thrown"),
    (e) => e
  );
  assert.ok(error instanceof ApiError);
  assert.equal(error.status, 413);
  assert.equal(error.detail, "image of 300000000 pixels exceeds the limit");
  assert.ok(!calls.includes("DELETE jobs/job%201"));
  // A failure without a status or detail is still an error the user can read.
  assert.throws(() => jobOutcome({ state: "failed" }), { status: 500, detail: "the job failed" });
});

test("a job cancelled elsewhere ends the run with an error", async () => {
  const { api, calls } = fakeApi([running(1), { state: "cancelled" }]);
  await assert.rejects(runJob(api, "form", { signal: new AbortController().signal, timers: fakeTimers() }), {
    message: "The job was cancelled.",
  });
  await settle();
  assert.deepEqual(calls, ["POST jobs", "GET jobs/job%201", "GET jobs/job%201"]);
});

test("aborting while it runs sends DELETE for the job and stops polling", async () => {
  const controller = new AbortController();
  const { api, calls } = fakeApi([running(1)]);
  const onProgress = (fraction) => fraction === 0.25 && controller.abort(); // after the first poll
  await assert.rejects(runJob(api, "form", { signal: controller.signal, onProgress, timers: fakeTimers() }), {
    name: "AbortError",
  });
  await settle();
  assert.deepEqual(calls, ["POST jobs", "GET jobs/job%201", "DELETE jobs/job%201"]);
});

test("aborted during the upload, before the job's id came: the job is deleted at once, never polled", async () => {
  const controller = new AbortController();
  const { api, calls } = fakeApi([running(1)], { id: "j2", onPost: () => controller.abort() });
  await assert.rejects(runJob(api, "form", { signal: controller.signal, timers: fakeTimers() }), {
    name: "AbortError",
  });
  await settle();
  assert.deepEqual(calls, ["POST jobs", "DELETE jobs/j2"]);
});

test("a poll that fails (the service is gone) ends the run with that error", async () => {
  const { api } = fakeApi([running(1), new TypeError("Failed to fetch")]);
  await assert.rejects(runJob(api, "form", { signal: new AbortController().signal, timers: fakeTimers() }), {
    name: "TypeError",
    message: "Failed to fetch",
  });
});

test("sleep resolves after its time, and rejects at once when aborted, leaving no timer", async () => {
  const timers = fakeTimers();
  await sleep(5, new AbortController().signal, timers);
  const controller = new AbortController();
  const cleared = [];
  const waiting = sleep(60_000, controller.signal, {
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (t) => {
      cleared.push(t);
      clearTimeout(t);
    },
  });
  controller.abort();
  await assert.rejects(waiting, { name: "AbortError" });
  assert.equal(cleared.length, 1);
  await assert.rejects(sleep(5, controller.signal, timers), { name: "AbortError" }); // already aborted
});

test("progress without a tile count shows the stage or the state", () => {
  assert.deepEqual(jobProgress({ state: "running", stage: "decoding" }), { fraction: null, text: "decoding…" });
  const queued = { state: "queued", progress: { tiles_total: 0 } };
  assert.deepEqual(jobProgress(queued), { fraction: null, text: "queued…" });
});
