// The page's render.js under Node (no canvas): which crown is under the pointer.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CROWN_COLOUR, treeAt } from "../../serve_app/static/ui/render.js";

const TREES = [
  { id: 1, pixel_x: 100, pixel_y: 100, pixel_diameter: 40 },
  { id: 2, pixel_x: 130, pixel_y: 100, pixel_diameter: 40 },
  { id: 3, pixel_x: 300, pixel_y: 50, pixel_diameter: 1 },
];

test("the crown under the pointer is the nearest whose disc holds it, in image pixels", () => {
  const view = { scale: 0.5, dpr: 2 }; // CSS pixels per image pixel
  assert.equal(treeAt(TREES, view, 50, 50).id, 1); // image (100, 100)
  assert.equal(treeAt(TREES, view, 58, 50).id, 2); // image (116, 100): in both discs, nearer 2
  assert.equal(treeAt(TREES, view, 50, 62), null); // image (100, 124): outside
});

test("a crown smaller than the pointer counts within 3 CSS pixels", () => {
  assert.equal(treeAt(TREES, { scale: 1 }, 302, 50).id, 3);
  assert.equal(treeAt(TREES, { scale: 1 }, 304, 50), null);
  assert.equal(treeAt([], { scale: 1 }, 0, 0), null);
});

test("the crown colour is a #rrggbb the browser test can read", () => {
  assert.match(CROWN_COLOUR, /^#[0-9a-f]{6}$/i);
});
