/*
 * The EXIF orientation tag of a JPEG (APP1 "Exif") or PNG (eXIf chunk), and how to drop it.
 *
 * The service decodes with OpenCV's IMREAD_UNCHANGED, which ignores the tag: its pixel_x, pixel_y are in the
 * image's stored pixel frame. Browsers rotate by the tag whatever createImageBitmap is told (Chromium does since
 * its imageOrientation "none" became "from-image"), so the page decodes a copy without the tag: for a JPEG the
 * tag's value is rewritten to 1 (no checksum covers it), for a PNG the eXIf chunk is left out (its CRC would
 * not match an edit). Only the file's first bytes are read; the copy is a Blob of slices of the file.
 *
 * An ES module, imported by the page (render.js) and by Node (tests/tools/orientation_check.js).
 */

const ORIENTATION_TAG = 0x0112;
const SHORT = 3;
/** How many bytes of the file to read: EXIF sits before the pixels (a JPEG APP1 segment is at most 64 KB). */
export const HEAD_BYTES = 1 << 20;
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * The orientation entry of the first IFD of a TIFF structure (EXIF) at bytes[start, end).
 * @returns {{value: number, offset: number, little: boolean} | null} offset: of the value's two bytes.
 */
function tiffOrientation(bytes, start, end) {
  if (end - start < 8) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const order = view.getUint16(start);
  if (order !== 0x4949 && order !== 0x4d4d) return null; // "II" or "MM"
  const little = order === 0x4949;
  if (view.getUint16(start + 2, little) !== 42) return null;
  const ifd = start + view.getUint32(start + 4, little);
  if (ifd + 2 > end) return null;
  const entries = view.getUint16(ifd, little);
  for (let i = 0; i < entries; i++) {
    const entry = ifd + 2 + 12 * i;
    if (entry + 12 > end) return null;
    if (view.getUint16(entry, little) !== ORIENTATION_TAG) continue;
    if (view.getUint16(entry + 2, little) !== SHORT || view.getUint32(entry + 4, little) !== 1) return null;
    return { value: view.getUint16(entry + 8, little), offset: entry + 8, little };
  }
  return null;
}

function jpegPatch(bytes) {
  let i = 2;
  while (i + 4 <= bytes.length) {
    if (bytes[i] !== 0xff) return null; // not at a marker: give up, leave the file alone
    const marker = bytes[i + 1];
    if (marker === 0xff) {
      i += 1; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2; // no length
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return null; // the scan (pixels) or the end: no EXIF before it
    const length = (bytes[i + 2] << 8) | bytes[i + 3];
    const end = Math.min(i + 2 + length, bytes.length);
    const exif = i + 4;
    const isExif =
      marker === 0xe1 &&
      length >= 8 &&
      String.fromCharCode(...bytes.subarray(exif, exif + 4)) === "Exif" &&
      bytes[exif + 4] === 0 &&
      bytes[exif + 5] === 0;
    if (isExif) {
      const found = tiffOrientation(bytes, exif + 6, end);
      if (!found || found.value === 1) return null;
      const one = found.little ? new Uint8Array([1, 0]) : new Uint8Array([0, 1]);
      return { orientation: found.value, parts: [[0, found.offset], one, [found.offset + 2, null]] };
    }
    i += 2 + length;
  }
  return null;
}

function pngPatch(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let i = 8;
  while (i + 12 <= bytes.length) {
    const length = view.getUint32(i);
    const type = String.fromCharCode(...bytes.subarray(i + 4, i + 8));
    const next = i + 12 + length;
    if (type === "IDAT" || type === "IEND") return null; // a browser only reads eXIf before the pixels
    if (type === "eXIf") {
      const found = tiffOrientation(bytes, i + 8, Math.min(i + 8 + length, bytes.length));
      if (!found || found.value === 1) return null;
      return { orientation: found.value, parts: [[0, i], [next, null]] };
    }
    i = next;
  }
  return null;
}

/**
 * How to make a copy of the file without its EXIF orientation, from the file's first bytes.
 *
 * @param {Uint8Array} head the first HEAD_BYTES (or fewer) bytes of the file.
 * @returns {{orientation: number, parts: Array<[number, number | null] | Uint8Array>} | null} null when the
 *   file has no orientation other than 1 (or is not a JPEG or PNG); else the tag's value and the copy's parts
 *   in order: [start, end) ranges of the file (end null: to the file's end) and bytes to put in between.
 */
export function unrotated(head) {
  try {
    if (head.length > 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return jpegPatch(head);
    if (head.length > 8 && PNG_SIGNATURE.every((b, k) => head[k] === b)) return pngPatch(head);
  } catch (_) {
    // a malformed header (RangeError past the end): leave the file alone
  }
  return null;
}
