// Validate a .glb with the Khronos glTF validator (npm gltf-validator); print its report's issues as JSON.
//   node validate_gltf.js scene.glb
import fs from "node:fs";
import validator from "gltf-validator";

const file = process.argv[2];
validator
  .validateBytes(new Uint8Array(fs.readFileSync(file)), { maxIssues: 100 })
  .then((report) => {
    console.log(JSON.stringify(report.issues));
  })
  .catch((error) => {
    console.error(String(error));
    process.exit(2);
  });
