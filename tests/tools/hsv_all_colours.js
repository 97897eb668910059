// Run the page's hsv.js over all 2**24 RGB colours (R major, then G, then B) and write 5 bytes per colour:
// H, S, V from hsvPlanes, 1/0 from inRange with the bounds below, 1 if rgbToHsv agrees with hsvPlanes.
//   node hsv_all_colours.js path/to/hsv.js out.bin
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const hsv = await import(pathToFileURL(path.resolve(process.argv[2])).href);

const LOW = [35, 40, 40];
const HIGH = [85, 255, 255];
const n = 1 << 24;
const rgba = new Uint8Array(n * 4);
for (let c = 0; c < n; c++) {
  rgba[4 * c] = c >> 16;
  rgba[4 * c + 1] = (c >> 8) & 255;
  rgba[4 * c + 2] = c & 255;
  rgba[4 * c + 3] = 255;
}
const planes = hsv.hsvPlanes(rgba);
const mask = new Uint32Array(n);
hsv.inRange(planes, LOW, HIGH, mask, 1);
const out = Buffer.alloc(n * 5);
for (let c = 0; c < n; c++) {
  const [h, s, v] = hsv.rgbToHsv(c >> 16, (c >> 8) & 255, c & 255);
  out[5 * c] = planes.h[c];
  out[5 * c + 1] = planes.s[c];
  out[5 * c + 2] = planes.v[c];
  out[5 * c + 3] = mask[c];
  out[5 * c + 4] = h === planes.h[c] && s === planes.s[c] && v === planes.v[c] ? 1 : 0;
}
fs.writeFileSync(process.argv[3], out);
