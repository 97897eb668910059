/*
 * OpenCV's 8-bit RGB -> HSV (cv2.COLOR_RGB2HSV: H 0-179, S and V 0-255) and cv2.inRange, bit for bit, so the page
 * draws the service's vegetation mask (treecore/vegetation.py, before its clean-up) without asking the service.
 * An ES module, imported by the page (render.js) and by Node (tests/tools/hsv_all_colours.js, the exhaustive test).
 */

// OpenCV (imgproc/src/color_hsv.simd.hpp, RGB2HSV_b): fixed point with 12 fraction bits and two division
// tables filled with saturate_cast<int>, which rounds half to even.
const SHIFT = 12;
const HALF = 1 << (SHIFT - 1);
const SDIV = new Int32Array(256);
const HDIV = new Int32Array(256);

function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

for (let i = 1; i < 256; i++) {
  SDIV[i] = roundHalfEven((255 << SHIFT) / i);
  HDIV[i] = roundHalfEven((180 << SHIFT) / (6 * i));
}

/**
 * One colour.
 * @param {number} r 0-255
 * @param {number} g 0-255
 * @param {number} b 0-255
 * @returns {number[]} [h 0-179, s 0-255, v 0-255]
 */
export function rgbToHsv(r, g, b) {
  const v = Math.max(r, g, b);
  const diff = v - Math.min(r, g, b);
  const s = (diff * SDIV[v] + HALF) >> SHIFT;
  let h;
  if (v === r) h = g - b;
  else if (v === g) h = b - r + 2 * diff;
  else h = r - g + 4 * diff;
  h = (h * HDIV[diff] + HALF) >> SHIFT;
  if (h < 0) h += 180;
  return [h, s, v];
}

/**
 * H, S and V planes of RGBA pixels (alpha ignored: the service drops it too).
 * @param {Uint8ClampedArray|Uint8Array} rgba (N * 4) bytes, as in ImageData.data
 * @returns {{h: Uint8Array, s: Uint8Array, v: Uint8Array}} (N,) each
 */
export function hsvPlanes(rgba) {
  const n = rgba.length >> 2;
  const hp = new Uint8Array(n);
  const sp = new Uint8Array(n);
  const vp = new Uint8Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    const r = rgba[j];
    const g = rgba[j + 1];
    const b = rgba[j + 2];
    const v = r > g ? (r > b ? r : b) : g > b ? g : b;
    const lo = r < g ? (r < b ? r : b) : g < b ? g : b;
    const diff = v - lo;
    let h;
    if (v === r) h = g - b;
    else if (v === g) h = b - r + 2 * diff;
    else h = r - g + 4 * diff;
    h = (h * HDIV[diff] + HALF) >> SHIFT;
    hp[i] = h < 0 ? h + 180 : h;
    sp[i] = (diff * SDIV[v] + HALF) >> SHIFT;
    vp[i] = v;
  }
  return { h: hp, s: sp, v: vp };
}

/**
 * cv2.inRange over HSV planes, bounds inclusive; writes `on` or 0 per pixel into `out`.
 * @param {{h: Uint8Array, s: Uint8Array, v: Uint8Array}} planes from hsvPlanes
 * @param {number[]} lo [h, s, v] lower bounds
 * @param {number[]} hi [h, s, v] upper bounds
 * @param {Uint32Array} out (N,) pixels to fill (an ImageData's buffer)
 * @param {number} on the 32-bit RGBA word of a vegetation pixel
 * @returns {number} how many pixels are vegetation
 */
export function inRange(planes, lo, hi, out, on) {
  const { h, s, v } = planes;
  const [h0, s0, v0] = lo;
  const [h1, s1, v1] = hi;
  let count = 0;
  for (let i = 0; i < h.length; i++) {
    const hit = h[i] >= h0 && h[i] <= h1 && s[i] >= s0 && s[i] <= s1 && v[i] >= v0 && v[i] <= v1;
    out[i] = hit ? on : 0;
    count += hit ? 1 : 0;
  }
  return count;
}
