/*
 * The canvas: the image decoded as the service decodes it, the vegetation mask, the crowns drawn over them, and
 * which crown is under the pointer. The DOM is touched only when a function is called, never at import time.
 */
import { hsvPlanes, inRange } from "./hsv.js";
import { HEAD_BYTES, unrotated } from "./orientation.js";

/** The crowns' stroke (over a wider dark one); the browser test looks for it. */
export const CROWN_COLOUR = "#ffd400";
/** Vegetation in the mask: magenta at 45 % (RGBA bytes, little-endian word). */
export const MASK_RGBA = 0x73ff00ff;
/** The mask is computed on at most this many pixels (scaled down above). */
export const MASK_MAX_PIXELS = 16_777_216;
/** The canvas of an image the browser cannot show (TIFF): the crowns are drawn on it. */
const BLANK = "#555d58";

/**
 * The file's pixels as the service reads them (OpenCV's IMREAD_UNCHANGED): no EXIF rotation, no colour profile.
 * Browsers rotate by the EXIF orientation whatever createImageBitmap is told, so they get a copy without the tag.
 * @param {File} file
 * @returns {Promise<{bitmap: ImageBitmap|null, orientation: number}>} bitmap null: the browser cannot read it
 *   (TIFF); orientation: the file's EXIF orientation (1: none)
 */
export async function decodeAsService(file) {
  let orientation = 1;
  try {
    const patch = unrotated(new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer()));
    let source = file;
    if (patch) {
      orientation = patch.orientation;
      const part = (p) => (Array.isArray(p) ? file.slice(p[0], p[1] === null ? undefined : p[1]) : p);
      source = new Blob(patch.parts.map(part), { type: file.type });
    }
    const bitmap = await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    return { bitmap, orientation };
  } catch (_) {
    return { bitmap: null, orientation }; // TIFF, or a file the browser cannot read: the service may still read it
  }
}

/**
 * The H, S, V planes of the image (scaled down to MASK_MAX_PIXELS at most) and the canvas the mask is painted on.
 * @param {ImageBitmap} bitmap
 * @param {number[]} size [width, height] pixels
 * @returns {{planes: object, image: ImageData, canvas: HTMLCanvasElement, size: number[]}}
 */
export function maskOf(bitmap, [w, h]) {
  const k = Math.min(1, Math.sqrt(MASK_MAX_PIXELS / (w * h)));
  const mw = Math.max(1, Math.round(w * k));
  const mh = Math.max(1, Math.round(h * k));
  const canvas = document.createElement("canvas");
  canvas.width = mw;
  canvas.height = mh;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, mw, mh);
  const image = ctx.getImageData(0, 0, mw, mh);
  return { planes: hsvPlanes(image.data), image, canvas, size: [mw, mh] }; // image: reused as the mask's pixels
}

/**
 * Paint the pixels inside the HSV bounds on the mask's canvas.
 * @param {{planes: object, image: ImageData, canvas: HTMLCanvasElement}} mask from maskOf
 * @param {Object<string, number>} p hue_min ... val_max
 * @returns {{count: number, share: number}} vegetation pixels, and their percentage of the mask's
 */
export function paintMask(mask, p) {
  const out = new Uint32Array(mask.image.data.buffer);
  const low = [p.hue_min, p.sat_min, p.val_min];
  const high = [p.hue_max, p.sat_max, p.val_max];
  const count = inRange(mask.planes, low, high, out, MASK_RGBA);
  mask.canvas.getContext("2d").putImageData(mask.image, 0, 0);
  return { count, share: (100 * count) / out.length };
}

function strokeCrowns(ctx, trees, scale) {
  // Both the service and the canvas (in image pixels) put pixel i at [i, i + 1): its centre is i + 0.5 in
  // pixel_x, pixel_y as here, so a crown is drawn at (pixel_x, pixel_y) as it is.
  const path = new Path2D();
  for (const t of trees) {
    const r = Math.max(t.pixel_diameter / 2, 0.5);
    path.moveTo(t.pixel_x + r, t.pixel_y);
    path.arc(t.pixel_x, t.pixel_y, r, 0, 2 * Math.PI);
  }
  ctx.lineWidth = 3.5 / scale;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
  ctx.stroke(path);
  ctx.lineWidth = 1.75 / scale;
  ctx.strokeStyle = CROWN_COLOUR;
  ctx.stroke(path);
}

/**
 * Draw the image (or a blank of its size), the mask and the crowns, fitted into width x height CSS pixels.
 * @param {HTMLCanvasElement} canvas
 * @param {{size: number[]|null, bitmap: ImageBitmap|null, mask: HTMLCanvasElement|null, trees: object[],
 *   width: number, height: number, dpr: number}} scene size: [w, h] image pixels (null: nothing to draw)
 * @returns {{scale: number, dpr: number}|null} CSS pixels per image pixel, and device pixels per CSS pixel
 */
export function drawScene(canvas, { size, bitmap, mask, trees, width, height, dpr }) {
  if (!size) {
    canvas.width = canvas.height = 0;
    return null;
  }
  const [w, h] = size;
  const scale = Math.min(width / w, height / h);
  canvas.style.width = `${Math.floor(w * scale)}px`;
  canvas.style.height = `${Math.floor(h * scale)}px`;
  canvas.width = Math.max(1, Math.floor(w * scale * dpr));
  canvas.height = Math.max(1, Math.floor(h * scale * dpr));
  const ctx = canvas.getContext("2d");
  ctx.setTransform(scale * dpr, 0, 0, scale * dpr, 0, 0); // image pixels from here on
  ctx.imageSmoothingQuality = "high";
  if (bitmap) ctx.drawImage(bitmap, 0, 0, w, h);
  else {
    ctx.fillStyle = BLANK;
    ctx.fillRect(0, 0, w, h);
  }
  if (mask) ctx.drawImage(mask, 0, 0, w, h);
  if (trees.length) strokeCrowns(ctx, trees, scale);
  return { scale, dpr };
}

/**
 * The crown under a point of the canvas, the nearest when several are (a small one counts within 3 CSS pixels).
 * @param {object[]} trees the detection's trees (pixel_x, pixel_y, pixel_diameter)
 * @param {{scale: number}} view from drawScene
 * @param {number} x CSS pixels from the canvas's left
 * @param {number} y CSS pixels from its top
 * @returns {object|null}
 */
export function treeAt(trees, view, x, y) {
  const ix = x / view.scale; // in the canvas's image pixels, as pixel_x
  const iy = y / view.scale;
  let best = null;
  let bestD = Infinity;
  for (const t of trees) {
    const d = Math.hypot(t.pixel_x - ix, t.pixel_y - iy);
    if (d <= Math.max(t.pixel_diameter / 2, 3 / view.scale) && d < bestD) {
      best = t;
      bestD = d;
    }
  }
  return best;
}
