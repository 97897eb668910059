// The page's model.js helpers under Node: where a stored scene's link points, how long it lasts, the file's name.
import assert from "node:assert/strict";
import { test } from "node:test";

import { bytes, filenameOf, storedTarget, validity } from "../../serve_app/static/ui/model.js";

const ROOT = new URL("https://trees.example/secured/");
const HERE = { origin: "https://trees.example", host: "trees.example" };

test("a link to this service is fetched from the page's origin, whatever scheme or prefix it was given", () => {
  const same = { href: "https://trees.example/secured/download/scene.zip", sameService: true };
  assert.deepEqual(storedTarget("https://trees.example/secured/download/scene.zip", ROOT, HERE), same);
  assert.deepEqual(storedTarget("http://trees.example/secured/download/scene.zip", ROOT, HERE), same); // TLS proxy
  assert.deepEqual(storedTarget("http://trees.example/download/scene.zip", ROOT, HERE), same); // prefix stripped
  assert.deepEqual(storedTarget("/secured/download/scene.zip", ROOT, HERE), same);
});

test("a signed storage URL is opened as it is", () => {
  const sas = "https://account.blob.example/models/scene.zip?sig=abc&se=2026";
  assert.deepEqual(storedTarget(sas, ROOT, HERE), { href: sas, sameService: false });
});

test("validity says how long and until when", () => {
  const now = new Date(2026, 11, 1, 12, 0);
  assert.equal(validity(45 * 60, new Date(2026, 11, 1, 12, 45), now), "valid for 45 min, until 12:45");
  assert.equal(validity(3 * 3600, new Date(2026, 11, 1, 15, 0), now), "valid for 3 h, until 15:00");
  assert.equal(validity(3 * 86400, new Date(2026, 11, 4, 12, 0), now), "valid for 3 days, until 4 Dec, 12:00");
  assert.equal(validity(10, new Date(2026, 11, 1, 12, 0), now), "valid for 1 min, until 12:00");
});

test("the file name comes from Content-Disposition, else the fallback", () => {
  const named = new Response("", { headers: { "content-disposition": 'attachment; filename="trees_42.glb"' } });
  assert.equal(filenameOf(named, "trees.glb"), "trees_42.glb");
  assert.equal(filenameOf(new Response(""), "trees.zip"), "trees.zip");
});

test("sizes read as kB or MB", () => {
  assert.equal(bytes(10), "1 kB");
  assert.equal(bytes(45_600), "46 kB");
  assert.equal(bytes(3_400_000), "3.4 MB");
});
