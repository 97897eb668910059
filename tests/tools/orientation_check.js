// Run the page's orientation.js on files as the page does: read the first HEAD_BYTES, then write the copy the page
// would decode (the parts: ranges of the file and bytes between them). Prints [{orientation, out}] as JSON.
//   node orientation_check.js path/to/orientation.js in1 out1 [in2 out2 ...]
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const exif = await import(pathToFileURL(path.resolve(process.argv[2])).href);

const results = [];
const args = process.argv.slice(3);
for (let k = 0; k < args.length; k += 2) {
  const file = fs.readFileSync(args[k]);
  const head = new Uint8Array(file.buffer, file.byteOffset, Math.min(file.length, exif.HEAD_BYTES));
  const patch = exif.unrotated(head);
  const parts = patch ? patch.parts : [[0, null]];
  const out = Buffer.concat(
    parts.map((p) => (Array.isArray(p) ? file.subarray(p[0], p[1] === null ? file.length : p[1]) : Buffer.from(p)))
  );
  fs.writeFileSync(args[k + 1], out);
  results.push({ orientation: patch ? patch.orientation : null, out: args[k + 1] });
}
process.stdout.write(JSON.stringify(results));
