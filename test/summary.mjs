// Reads tap's TAP output and prints the plain closing line CI reads:
// "N passed, N failed[, N skipped]". A test is a test point one level inside a
// file (a t.test() or a top-level assertion); a file that fails to load counts
// as one failure.
import { readFileSync } from 'node:fs';

const lines = readFileSync(process.argv[2], 'utf8').split('\n');
let passed = 0, failed = 0, skipped = 0;
const filePoint = /^(not ok|ok) \d+ - (.*)$/;
const innerPoint = /^ {4}(not ok|ok) \d+ - ?(.*)$/;
let innerInFile = 0;
for (const line of lines) {
  let m = innerPoint.exec(line);
  if (m) {
    innerInFile++;
    if (/# SKIP/i.test(m[2])) skipped++;
    else if (m[1] === 'ok') passed++;
    else failed++;
    continue;
  }
  m = filePoint.exec(line);
  if (m) {
    if (innerInFile === 0 && m[1] === 'not ok') failed++;
    innerInFile = 0;
  }
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 ? 1 : 0);
