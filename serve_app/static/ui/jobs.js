/*
 * A detection as a background job: POST /jobs (with upload progress), GET /jobs/{id} until it ends, DELETE to cancel.
 *
 * No DOM: the api (from api.js's createApi) and the timers are parameters, so Node tests (tests/js/jobs.test.mjs)
 * pass fakes.
 */
import { ApiError, abortError, formatDetail } from "./api.js";

/** The first wait before a poll, its growth per poll and its ceiling (ms). */
export const POLL_FIRST_MS = 200;
export const POLL_GROWTH = 1.5;
export const POLL_MAX_MS = 1000;
/** The states a job ends in: polling stops there. */
export const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Wait `ms`, or reject with an AbortError as soon as `signal` aborts; no listener is left behind either way.
 * @param {number} ms
 * @param {AbortSignal} signal
 * @param {{setTimeout: Function, clearTimeout: Function}} timers globalThis unless given
 * @returns {Promise<void>}
 */
export function sleep(ms, signal, timers = globalThis) {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      timers.clearTimeout(timer);
      reject(abortError());
    };
    const timer = timers.setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A running job's progress, as the page shows it.
 * @param {{state: string, stage?: string, progress?: object}} job progress: tiles_done, tiles_total, trees_so_far
 * @returns {{fraction: number|null, text: string}} fraction null: unknown (no tile count yet)
 */
export function jobProgress(job) {
  const p = job.progress || {};
  const total = p.tiles_total || 0;
  if (!total) return { fraction: null, text: `${job.stage || job.state}…` };
  return {
    fraction: p.tiles_done / total,
    text: `${job.stage}: tile ${p.tiles_done} of ${total}, ${p.trees_so_far} trees so far`,
  };
}

/**
 * What an ended job gives: the detection when it succeeded; else it throws.
 * @param {{state: string, result?: object, error?: {status?: number, detail?: unknown}}} job
 * @returns {object} the detection (legacy JSON)
 * @throws {ApiError} a failed job's error (its status, 500 when it has none); Error for a cancelled one
 */
export function jobOutcome(job) {
  if (job.state === "succeeded") return job.result && job.result.detection ? job.result.detection : job.result;
  if (job.state === "failed") {
    const err = job.error || {};
    throw new ApiError(err.status || 500, formatDetail(err.detail) || "the job failed");
  }
  throw new Error("The job was cancelled.");
}

export function jobPath(id) {
  return "jobs/" + encodeURIComponent(id);
}

/**
 * DELETE the job (cancel it); never throws: a job already gone or ended needs nothing.
 * @returns {Promise<void>}
 */
export function cancelJob(api, id) {
  return api.fetch(jobPath(id), { method: "DELETE" }).then(
    () => undefined,
    () => undefined
  );
}

/**
 * Run a detection as a job, to its end.
 *
 * Aborting `signal` cancels it: while uploading the upload is dropped; after, the job is deleted (also when the
 * abort came before the service's answer with the job's id).
 * @param {object} api from createApi: post (with upload progress) and fetch are used
 * @param {FormData} data the detection form (api.js detectionForm)
 * @param {{signal: AbortSignal, onProgress?: (fraction: number|null, text: string) => void, timers?: object}} options
 * @returns {Promise<object>} the detection
 * @throws the failed job's ApiError, an Error for a cancelled job, an AbortError once aborted
 */
export async function runJob(api, data, { signal, onProgress = () => {}, timers = globalThis }) {
  onProgress(0, "Uploading…");
  const created = await api.post("jobs", data, signal, (f) => onProgress(f, `Uploading ${Math.round(f * 100)} %`));
  const cancel = () => cancelJob(api, created.id);
  if (signal.aborted) {
    // Cancelled (or replaced) after the upload, before the answer: the job exists, and nobody will poll it.
    cancel();
    throw abortError();
  }
  signal.addEventListener("abort", cancel, { once: true });
  let wait = POLL_FIRST_MS;
  for (;;) {
    await sleep(wait, signal, timers);
    wait = Math.min(wait * POLL_GROWTH, POLL_MAX_MS);
    const job = await (await api.fetch(jobPath(created.id), { signal })).json();
    if (FINAL_STATES.has(job.state)) {
      signal.removeEventListener("abort", cancel); // ended: nothing to cancel any more
      return jobOutcome(job);
    }
    const { fraction, text } = jobProgress(job);
    onProgress(fraction, text);
  }
}
