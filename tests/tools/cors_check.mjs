// Call the API from pages on other origins, and open its docs, in Debian's chromium with playwright-core; report
// what the browser let each page see as JSON (tests/serve_app/test_cors.py checks it).
//
//   node tests/tools/cors_check.mjs config.json report.json
//
// config: {chromium, api (the API's base URL, with an API key and CORS_ORIGINS = the allowed page's origin),
//          api_key, allowed_page, refused_page (URLs of a page, with tile.png beside it, on an allowed and on a
//          refused origin), real_size_m (of tile.png)}
import fs from "node:fs";
import { launchChromium } from "./browser.mjs";

const [configPath, reportPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
const WAIT_MS = 180_000; // two shared cores, and other tests may be running
const report = { console: [], outside_requests: [] };

function log(message) {
  console.error(`cors_check: ${message}`);
}

// In the page: a detection of its own tile.png, then a model of three of its trees, with `auth` as the request
// headers. Returns what the page's JavaScript can read, or the error a blocked fetch() throws.
async function callApi(page, auth) {
  return page.evaluate(
    async ([api, auth, real]) => {
      const out = {};
      try {
        const image = await (await fetch("tile.png")).blob(); // the page's own origin
        const form = new FormData();
        form.append("image", image, "tile.png");
        form.append("real_width", String(real));
        form.append("real_height", String(real));
        const detected = await fetch(`${api}/detect-trees`, { method: "POST", headers: auth, body: form });
        out.detect = { status: detected.status, body: await detected.json() };
        if (detected.ok) {
          const trees = { ...out.detect.body, trees: out.detect.body.trees.slice(0, 3) };
          const model = await fetch(`${api}/generate-model`, {
            method: "POST",
            headers: { ...auth, "Content-Type": "application/json" },
            body: JSON.stringify(trees),
          });
          out.model = {
            status: model.status,
            mtl: model.headers.get("X-Mtl-Url"),
            disposition: model.headers.get("Content-Disposition"),
            total: model.headers.get("X-Total-Trees"),
            bytes: (await model.arrayBuffer()).byteLength,
          };
        }
      } catch (error) {
        out.error = `${error.name}: ${error.message}`;
      }
      return out;
    },
    [config.api, auth, config.real_size_m]
  );
}

const context = await launchChromium(config.chromium, "cors-check-");
// Every request to a host other than 127.0.0.1 is refused and recorded: the docs must load from the service alone
// (their Content-Security-Policy stops ReDoc's CDN logo before it is requested: a console error, not a request).
await context.route(
  (url) => url.hostname !== "127.0.0.1",
  (route) => {
    report.outside_requests.push(route.request().url());
    return route.abort();
  }
);
try {
  const page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && report.console.push(m.text()));
  await page.goto(config.allowed_page);
  const key = { "X-API-Key": config.api_key };
  report.allowed_with_key = await callApi(page, key);
  report.allowed_with_bearer = await callApi(page, { Authorization: `Bearer ${config.api_key}` });
  report.allowed_without_key = await callApi(page, {});
  log(`allowed origin: ${JSON.stringify(report.allowed_with_key.model)}`);

  await page.goto(config.refused_page);
  report.refused_with_key = await callApi(page, key);
  log(`refused origin: ${report.refused_with_key.error}`);

  // Swagger UI with the key: Authorize (the ApiKey scheme), then "Try it out" on GET / answers 200.
  await page.goto(`${config.api}/docs`);
  await page.waitForSelector(".swagger-ui .info .title", { timeout: WAIT_MS });
  report.swagger = { title: await page.textContent(".swagger-ui .info .title") };
  await page.click("button.authorize");
  const apiKeyInput = page.locator(".auth-container", { hasText: "ApiKey" }).locator("input");
  await apiKeyInput.fill(config.api_key);
  await page.locator(".auth-container", { hasText: "ApiKey" }).locator("button.authorize").click();
  await page.click("button.close-modal");
  const info = page.locator(".opblock-get", { has: page.locator('.opblock-summary-path[data-path="/"]') });
  await info.locator(".opblock-summary").first().click();
  await info.locator("button.try-out__btn").click();
  await info.locator("button.execute").click();
  const status = info.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor({ timeout: WAIT_MS });
  report.swagger.try_it_out_status = (await status.textContent()).trim();
  report.swagger.sent_key = await page.evaluate(() =>
    [...document.querySelectorAll(".curl-command, .curl")].map((e) => e.textContent).join("\n")
  );

  await page.goto(`${config.api}/redoc`);
  await page.waitForSelector("h1", { timeout: WAIT_MS });
  report.redoc = { title: await page.textContent("h1") };
  await page.close();
} finally {
  await context.close(); // and its profile folder
  fs.writeFileSync(reportPath, JSON.stringify(report, null, 2));
}
