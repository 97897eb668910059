// Drive the /ui tuning page in Debian's chromium with playwright-core, like a planner would, and report what the
// page showed as JSON (tests/serve_app/test_ui_browser.py checks it against the API).
//
//   node tests/tools/ui_check.mjs config.json report.json
//
// config: {base, secured_base, api_key, chromium, disc_png, disc_tiff, scene_png, real_size_m, scene_real_size_m,
//          exif_jpeg, exif_real_size_m: [w, h], crown_rgb (the page's crown stroke), disc_points, exif_points
//          (image pixels [x, y] where the canvas is sampled), out_dir (screenshots), download_dir (downloads)}
import fs from "node:fs";
import path from "node:path";
import { launchChromium } from "./browser.mjs";

const [configPath, reportPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
const WAIT_MS = 180_000; // generous: two shared cores, and other tests may be running
const report = { round_trips_ms: {}, console_errors: [] };

function log(message) {
  console.error(`ui_check: ${message}`);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// Wait until the page has finished a detection newer than `since` whose parameters are the form's current ones.
async function settle(page, want, since) {
  await page.waitForFunction(
    ([want, since]) => {
      const body = document.body;
      if (Number(body.dataset.done) <= since || body.dataset.state !== want) return false;
      const shown = JSON.parse(body.dataset.params || "{}");
      return Object.entries(shown).every(([name, value]) => {
        const now = document.getElementById(name).value;
        return name === "method" ? now === value : Number(now) === value || (now === "" && value === null);
      });
    },
    [want, since],
    { timeout: WAIT_MS, polling: 50 }
  );
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    count: document.body.dataset.count,
    imageSize: document.body.dataset.imageSize,
    countText: document.getElementById("count").textContent,
    done: Number(document.body.dataset.done),
    params: JSON.parse(document.body.dataset.params),
    roundTripMs: Number(document.body.dataset.roundTripMs),
    error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
  }));
}

const done = (page) => page.evaluate(() => Number(document.body.dataset.done));

// The canvas around image pixels [x, y]: for each point, the colour nearest to `rgb` within `R` canvas pixels (as
// the largest difference of a channel: 0 is that colour) and the canvas pixel at the point itself.
async function sampleCanvas(page, points, rgb, R = 3) {
  return page.evaluate(
    ([points, rgb, R]) => {
      const canvas = document.getElementById("canvas");
      const ctx = canvas.getContext("2d");
      const k = ctx.getTransform().a; // canvas pixels per image pixel, as the page drew
      return points.map(([x, y]) => {
        const cx = Math.floor(x * k);
        const cy = Math.floor(y * k);
        const data = ctx.getImageData(cx - R, cy - R, 2 * R + 1, 2 * R + 1).data;
        let nearest = 255;
        for (let i = 0; i < data.length; i += 4) {
          const d = Math.max(...[0, 1, 2].map((c) => Math.abs(data[i + c] - rgb[c])));
          nearest = Math.min(nearest, d);
        }
        const at = 4 * (R * (2 * R + 1) + R);
        return { nearest, pixel: [data[at], data[at + 1], data[at + 2]] };
      });
    },
    [points, rgb, R]
  );
}

async function openPage(context, url) {
  const page = await context.newPage();
  page.on("console", (msg) => msg.type() === "error" && report.console_errors.push(msg.text()));
  page.on("pageerror", (err) => report.console_errors.push(String(err)));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("service-note").textContent !== "", null, {
    timeout: WAIT_MS,
  });
  return page;
}

// Hold the answers to POST requests whose URL matches `pattern` (a CDP wildcard): the request reaches the service as
// it is (page.route would lose a file body), its answer waits in Chromium (the Fetch domain, response stage) until
// release(). paused() resolves to the first one held: {status, answer (JSON)}.
async function holdAnswers(context, page, pattern) {
  const cdp = await context.newCDPSession(page);
  const held = [];
  let notify;
  const first = new Promise((resolve) => (notify = resolve));
  cdp.on("Fetch.requestPaused", async (event) => {
    if (event.request.method !== "POST") {
      await cdp.send("Fetch.continueRequest", { requestId: event.requestId }).catch(() => {});
      return;
    }
    const body = await cdp.send("Fetch.getResponseBody", { requestId: event.requestId });
    const text = body.base64Encoded ? Buffer.from(body.body, "base64").toString() : body.body;
    held.push(event.requestId);
    notify({ status: event.responseStatusCode, answer: JSON.parse(text) });
  });
  await cdp.send("Fetch.enable", { patterns: [{ urlPattern: pattern, requestStage: "Response" }] });
  return {
    paused: () =>
      Promise.race([
        first,
        new Promise((_, reject) => {
          setTimeout(() => reject(new Error(`no answer held at ${pattern}`)), WAIT_MS).unref(); // no wait at exit
        }),
      ]),
    async release() {
      for (const requestId of held) await cdp.send("Fetch.continueRequest", { requestId }).catch(() => {}); // gone
      await cdp.send("Fetch.disable");
      await cdp.detach();
    },
  };
}

async function upload(page, file, realSize) {
  const [realWidth, realHeight] = Array.isArray(realSize) ? realSize : [realSize, realSize];
  await page.fill("#real_width", String(realWidth));
  await page.fill("#real_height", String(realHeight));
  const since = await done(page);
  await page.setInputFiles("#file", file);
  return settle(page, "done", since);
}

async function download(page, button, name) {
  const [file] = await Promise.all([page.waitForEvent("download", { timeout: WAIT_MS }), page.click(button)]);
  const target = path.join(config.download_dir, name);
  await file.saveAs(target);
  return { path: target, suggested: file.suggestedFilename(), message: await page.textContent("#action-msg") };
}

const context = await launchChromium(config.chromium, "ui-check-", {
  viewport: { width: 1280, height: 800 },
  acceptDownloads: true,
});
try {
  const page = await openPage(context, `${config.base}/ui/`);
  report.service_note = await page.textContent("#service-note");
  report.default_method = await page.inputValue("#method");
  // The drawn discs are the page's test pattern: the tree-top method finds them exactly (the learned default is
  // trained on real crowns, not flat discs), so the page's mechanics are checked with it.
  await page.selectOption("#method", config.method);

  // 1. Upload the synthetic image with known trees; the first detection runs by itself.
  const first = await upload(page, config.disc_png, config.real_size_m);
  report.initial = first;
  report.round_trips_ms.disc = [first.roundTripMs];
  log(`disc image: ${first.count} trees, round trip ${first.roundTripMs} ms`);

  // 2. Move the min-diameter slider with the keyboard (four steps of 0.5 m: 3 -> 5 m), as a person would.
  let since = await done(page);
  await page.focus("#min_diameter_range");
  for (let i = 0; i < 4; i++) await page.keyboard.press("ArrowRight");
  const moved = await settle(page, "done", since);
  report.after_slider = moved;
  report.after_slider.samples = await sampleCanvas(page, config.disc_points, config.crown_rgb);
  report.round_trips_ms.disc.push(moved.roundTripMs);
  log(`after the slider: ${moved.count} trees (min_diameter ${moved.params.min_diameter})`);

  // 3. The vegetation mask, computed in the page.
  await page.check("#show_mask");
  report.mask = await page.evaluate(() => ({
    pixels: Number(document.body.dataset.maskPixels),
    info: document.getElementById("mask-info").textContent,
  }));
  await page.screenshot({ path: path.join(config.out_dir, "ui-mask.png") });
  await page.uncheck("#show_mask");

  // 4. Copy as JSON and as curl (the text is also shown in the page, which is what we read).
  await page.click("#copy-json");
  report.copied_json = JSON.parse(await page.inputValue("#share"));
  await page.click("#copy-curl");
  report.copied_curl = await page.inputValue("#share");
  report.copy_message = await page.textContent("#action-msg");

  // 5. An error from the API: min_diameter above max_diameter.
  since = await done(page);
  await page.fill("#min_diameter", "20");
  report.error = await settle(page, "error", since);
  report.error.marked = await page.evaluate(() => [...document.querySelectorAll("input.bad")].map((el) => el.id));
  await page.screenshot({ path: path.join(config.out_dir, "ui-error.png") });
  since = await done(page);
  await page.fill("#min_diameter", "5");
  report.recovered = await settle(page, "done", since);

  // 6. The 3D model: GLB and OBJ (zip), downloaded.
  report.glb = await download(page, "#gen-glb", "ui-scene.glb");
  report.zip = await download(page, "#gen-zip", "ui-scene.zip");

  // 7. The same detection as a background job (progress bar).
  const jobRequests = [];
  page.on("request", (r) => r.method() === "POST" && new URL(r.url()).pathname.endsWith("/jobs") && jobRequests.push(r.url()));
  since = await done(page);
  await page.check("#use_jobs");
  report.job = await settle(page, "done", since);
  report.job.requests = jobRequests.length;
  since = await done(page);
  await page.uncheck("#use_jobs");
  await settle(page, "done", since);

  // 7b. Cancelled after the upload, before the service's 202 arrived: the job it made is deleted at once.
  const jobAnswer = await holdAnswers(context, page, "*/jobs");
  await page.check("#use_jobs");
  const posted = await jobAnswer.paused();
  const deleted = page.waitForResponse(
    (r) => r.request().method() === "DELETE" && new URL(r.url()).pathname.endsWith(`/jobs/${posted.answer.id}`),
    { timeout: 30_000 }
  );
  await page.click("#cancel");
  await jobAnswer.release();
  const deletion = await deleted.catch(() => null);
  report.orphan = {
    status: posted.status,
    created: posted.answer.id,
    deleted: deletion ? new URL(deletion.url()).pathname : null,
    deleteStatus: deletion ? deletion.status() : null,
    state: await page.evaluate(() => document.body.dataset.state),
  };
  since = await done(page);
  await page.uncheck("#use_jobs");
  await settle(page, "done", since);

  // 8. Round trips on a 2048 x 2048 aerial-like scene (its crowns are dense: smaller ones, no merging), the
  // upload's, then three slider moves.
  since = await done(page);
  await page.fill("#min_diameter", "2");
  await page.fill("#cluster_threshold", "1.5");
  await settle(page, "done", since);
  const scene = await upload(page, config.scene_png, config.scene_real_size_m);
  report.scene = scene;
  report.round_trips_ms.scene = [scene.roundTripMs];
  for (const value of [34, 36, 35, 34, 35]) {
    since = await done(page);
    await page.fill("#hue_min", String(value));
    const again = await settle(page, "done", since);
    report.round_trips_ms.scene.push(again.roundTripMs);
  }
  report.scene_timing = await page.textContent("#timing");
  log(`scene: ${scene.count} trees; round trips ${report.round_trips_ms.scene.join(", ")} ms; ${report.scene_timing}`);
  report.median_round_trip_ms = {
    disc: median(report.round_trips_ms.disc),
    scene: median(report.round_trips_ms.scene),
  };
  await page.screenshot({ path: path.join(config.out_dir, "ui.png") });

  // 8b. The scene's zip is over the service's LARGE_MODEL_THRESHOLD: stored, and the page shows a link to it,
  // which the user clicks. While the service's answer is held, a detection finishes: the 3D buttons stay disabled.
  const buttons = () => page.evaluate(() => ["gen-zip", "gen-glb"].map((id) => document.getElementById(id).disabled));
  const modelAnswer = await holdAnswers(context, page, "*/generate-model*");
  await page.click("#gen-zip");
  await modelAnswer.paused();
  since = await done(page);
  await page.fill("#hue_min", "36");
  report.while_generating = await settle(page, "done", since);
  report.while_generating.buttons = await buttons();
  await modelAnswer.release();
  await page.waitForSelector("#stored-link", { state: "visible", timeout: WAIT_MS });
  report.stored = await page.evaluate(() => {
    const link = document.getElementById("stored-link");
    return {
      href: link.href,
      text: link.textContent,
      download: link.getAttribute("download"),
      info: document.getElementById("stored-info").textContent,
      note: document.getElementById("action-msg").textContent,
    };
  });
  report.stored.buttons = await buttons();
  Object.assign(report.stored, await download(page, "#stored-link", "ui-stored.zip"));
  since = await done(page);
  await page.fill("#hue_min", "35");
  await settle(page, "done", since);

  // 9. A TIFF, which the service reads and the browser cannot show: crowns on a blank canvas.
  since = await done(page);
  await page.setInputFiles("#file", config.disc_tiff);
  report.tiff = await settle(page, "done", since);
  report.tiff.info = await page.textContent("#image-info");
  report.tiff.canvas = await page.evaluate(() => [document.getElementById("canvas").width, document.getElementById("canvas").height]);

  // 9b. A JPEG tagged EXIF orientation 6 (turn 90°): the service ignores the tag, and so must the page's drawing.
  // (min_diameter 2 m and cluster_threshold 1.5 m since step 8: every disc of 4 to 11 m counts)
  const exif = await upload(page, config.exif_jpeg, config.exif_real_size_m);
  report.exif = exif;
  report.exif.info = await page.textContent("#image-info");
  report.exif.samples = await sampleCanvas(page, config.exif_points, config.crown_rgb);
  await page.screenshot({ path: path.join(config.out_dir, "ui-exif.png") });

  // 9c. A small image drawn about ten times enlarged: its crown's rim lies on the service's circle to a canvas pixel
  // (pixel i spans [i, i + 1) in both: no half-pixel shift).
  since = await done(page);
  await page.fill("#min_diameter", "0.5");
  await settle(page, "done", since);
  report.small = await upload(page, config.small_png, config.small_real_size_m);
  report.small.scale = await page.evaluate(() => document.getElementById("canvas").getContext("2d").getTransform().a);
  report.small.samples = await sampleCanvas(page, config.small_points, config.crown_rgb, 1);

  // 9d. An image over 16 MP ticks "Run as a background job" for itself only: the next image is back to the box as
  // the user left it (unticked since step 7), and runs directly.
  const jobsBox = () =>
    page.evaluate(() => ({
      checked: document.getElementById("use_jobs").checked,
      note: document.getElementById("jobs-note").textContent,
    }));
  let posts = jobRequests.length;
  report.big = await upload(page, config.big_png, config.big_real_size_m);
  Object.assign(report.big, await jobsBox(), { jobs: jobRequests.length - posts });
  posts = jobRequests.length;
  report.after_big = await upload(page, config.small_png, config.small_real_size_m);
  Object.assign(report.after_big, await jobsBox(), { jobs: jobRequests.length - posts });
  await page.close();

  // 10. The app with an API key, under a route prefix: the page loads without the key, the API needs it.
  const secured = await openPage(context, `${config.secured_base}/ui`);
  report.secured = { url: secured.url(), note: await secured.textContent("#service-note") };
  await secured.fill("#real_width", String(config.real_size_m));
  await secured.fill("#real_height", String(config.real_size_m));
  await secured.setInputFiles("#file", config.disc_png);
  report.secured.without_key = await settle(secured, "error", 0);
  since = await done(secured);
  await secured.fill("#api_key", config.api_key);
  report.secured.with_key = await settle(secured, "done", since);

  // 11. A stored scene's link to this service, as a TLS proxy's url_for may give it (the other scheme): the page
  // fetches it from its own origin with the API key. The answer of /generate-model is the test's; the file is the
  // one the service stored in 8b (both apps share the storage folder).
  const stored = new URL(report.stored.href);
  const otherScheme = stored.protocol === "http:" ? "https:" : "http:";
  const prefix = new URL(config.secured_base).pathname;
  const proxied = `${otherScheme}//${stored.host}${prefix}/download/${report.stored.text}`;
  await secured.route("**/generate-model*", (route) =>
    route.fulfill({
      status: 200,
      contentType: "application/json",
      body: JSON.stringify({
        download_url: proxied,
        filename: report.stored.text,
        filesize_mb: 0.5,
        total_trees: 630,
        message: "stored",
        expires_in: "1 hour",
        expires_in_s: 3600,
      }),
    })
  );
  const downloads = [];
  secured.on("request", (r) => new URL(r.url()).pathname.includes("/download/") && downloads.push(r.url()));
  await secured.click("#gen-zip");
  await secured.waitForSelector("#stored-link", { state: "visible", timeout: WAIT_MS });
  report.secured.stored = {
    given: proxied,
    href: await secured.getAttribute("#stored-link", "href"),
    resolved: await secured.evaluate(() => document.getElementById("stored-link").href),
    ...(await download(secured, "#stored-link", "ui-secured-stored.zip")),
  };
  report.secured.stored.requests = downloads;
  await secured.close();
} finally {
  await context.close(); // and its profile folder
  fs.writeFileSync(reportPath, JSON.stringify(report, null, 2));
}
