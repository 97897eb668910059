// Debian's chromium, headless, through playwright-core: the one way the browser tools start it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

/**
 * A persistent browser context in a fresh profile folder, removed when the context is closed.
 * @param {string} executablePath the chromium binary
 * @param {string} prefix the profile folder's name prefix, in the temp folder
 * @param {object} options more launchPersistentContext options (viewport, acceptDownloads, ...)
 */
export async function launchChromium(executablePath, prefix, options = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
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
    ...options,
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return context;
}
