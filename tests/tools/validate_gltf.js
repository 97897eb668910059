// Validate a .glb with the Khronos glTF validator (npm gltf-validator); print its report's issues as JSON.
const fs = require("fs");
const path = require("path");
const validator = require(path.join(__dirname, "..", "..", "node_modules", "gltf-validator"));

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
