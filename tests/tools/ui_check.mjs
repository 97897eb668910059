// Drive the /ui tuning page in Debian's chromium with playwright-core, like a planner would, and report what the
// page showed as JSON (tests/serve_app/test_ui_browser.py checks it against the API).
//
//   node tests/tools/ui_check.mjs config.json report.json
//
// config: {base, secured_base, api_key, chromium, disc_png, disc_tiff, scene_png, real_size_m, scene_real_size_m,
//          out_dir (screenshots), download_dir (the 3D models the page downloads)}
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

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
    countText: document.getElementById("count").textContent,
    done: Number(document.body.dataset.done),
    params: JSON.parse(document.body.dataset.params),
    roundTripMs: Number(document.body.dataset.roundTripMs),
    error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
  }));
}

const done = (page) => page.evaluate(() => Number(document.body.dataset.done));

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

async function upload(page, file, realSize) {
  await page.fill("#real_width", String(realSize));
  await page.fill("#real_height", String(realSize));
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

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "ui-check-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: config.chromium,
  headless: true,
  // The machine reaches no network but package registries: nothing may phone home or wait for it.
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 800 },
  acceptDownloads: true,
});
try {
  const page = await openPage(context, `${config.base}/ui/`);
  report.service_note = await page.textContent("#service-note");

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

  // 9. A TIFF, which the service reads and the browser cannot show: crowns on a blank canvas.
  since = await done(page);
  await page.setInputFiles("#file", config.disc_tiff);
  report.tiff = await settle(page, "done", since);
  report.tiff.info = await page.textContent("#image-info");
  report.tiff.canvas = await page.evaluate(() => [document.getElementById("canvas").width, document.getElementById("canvas").height]);
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
  await secured.close();
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
  fs.writeFileSync(reportPath, JSON.stringify(report, null, 2));
}
