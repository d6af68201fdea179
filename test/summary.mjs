// Reads tap's TAP output and prints the plain closing line CI reads:
// "N passed, N failed[, N skipped]", after one line naming each file that did
// not end cleanly. A test is a test point one level inside a file (a t.test()
// or a top-level assertion). Every file that did not end cleanly counts as one
// more failure: killed by a signal, timed out, exited with a test unfinished,
// failed outside any test point, produced no test point, or never reached its
// end (tap itself died). Every expected file (the
// files the run was asked to run) that produced no result is a failure too.
// Each failed test point is named too, with the first assertion that failed
// under it: CI shows only the end of the log, so the end must say where.
//   node test/summary.mjs TAP_LOG [EXPECTED_FILE...]
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const fileStart = /^# Subtest: (.+)$/;
const filePoint = /^(not ok|ok) \d+(?: - ([^#]*?))?\s*(?:#\s*(.*))?$/;
const innerPoint = /^ {4}(not ok|ok) \d+(?: - ?([^#]*?))?\s*(?:#\s*(.*))?$/;
/** tap's point for a test still pending when its process exited. */
const unfinished = /^ +not ok \d+ - test unfinished\b/;
/** A failed assertion (or nested test) deeper than a test point. */
const deepFailure = /^ {8,}not ok \d+(?: - (.*?))?\s*(?:#.*)?$/;
const yamlLine = /^ {2}(\w+): ?(.*)$/;
const directive = (comment) => /^(SKIP|TODO)\b/i.test(comment ?? '');
const normalize = (path) => path.replace(/^\.\//, '');

/**
 * Counts TAP text from `tap --reporter=tap`. Returns the counts and one line
 * per file that did not end cleanly or never reported.
 */
export function summarize(text, expected = []) {
  let passed = 0, failed = 0, skipped = 0;
  const problems = [];
  /** "FILE: TEST (first failed assertion)" for each failed test point. */
  const failures = [];
  /** The first failed assertion under the test point being read. */
  let firstFailure;
  const seen = new Set();
  /** The file being read: its name, inner counts, and once its own point came, that point. */
  let file;

  const close = () => {
    if (!file) return;
    const f = file;
    file = undefined;
    // A point that came with no "# Subtest:" line (a timed-out file) names its file in its diagnostics.
    if (f.bare) f.name = normalize(f.point?.yaml.externalID ?? f.point?.yaml.expired ?? f.name);
    seen.add(f.name);
    const points = `${f.passed} passed, ${f.failed} failed test point(s)`;
    if (!f.point) {
      failed++;
      problems.push(`${f.name}: never reached its end (${points})`);
      return;
    }
    const { ok, comment, yaml } = f.point;
    let reason;
    if (yaml.signal && yaml.signal !== 'null') reason = `killed by ${yaml.signal}`;
    else if (yaml.expired) reason = 'timed out';
    else if (f.unfinished) reason = 'exited before its tests finished';
    else if (!ok && f.failed === 0) reason = `failed outside any test point (exit code ${yaml.exitCode ?? 'unknown'})`;
    else if (ok && f.passed + f.failed + f.skipped === 0) {
      if (directive(comment)) { skipped++; return; }
      reason = 'produced no test point';
    }
    if (reason) {
      failed++;
      problems.push(`${f.name}: ${reason} (${points})`);
    }
  };

  let inYaml = false;
  for (const line of text.split('\n')) {
    if (inYaml) {
      if (line === '  ...') { inYaml = false; continue; }
      const m = yamlLine.exec(line);
      if (m && file?.point && !(m[1] in file.point.yaml)) file.point.yaml[m[1]] = m[2].trim();
      continue;
    }
    let m = fileStart.exec(line);
    if (m) {
      close();
      file = { name: normalize(m[1].trim()), passed: 0, failed: 0, skipped: 0 };
      continue;
    }
    if (file && unfinished.test(line)) file.unfinished = true;
    m = deepFailure.exec(line);
    if (m && file && !file.point) {
      firstFailure ??= m[1] ?? '(unnamed)';
      continue;
    }
    m = innerPoint.exec(line);
    if (m && file && !file.point) {
      if (directive(m[3])) { file.skipped++; skipped++; }
      else if (m[1] === 'ok') { file.passed++; passed++; }
      else {
        file.failed++;
        failed++;
        failures.push(`${file.name}: ${(m[2] ?? '').trim() || '(unnamed)'}${firstFailure ? ` (${firstFailure})` : ''}`);
      }
      firstFailure = undefined;
      continue;
    }
    m = filePoint.exec(line);
    if (m) {
      // A point after the file's own one (tap's "timeout!" point names no file).
      if (!file || file.point) {
        close();
        file = { name: (m[2] ?? '').trim(), passed: 0, failed: 0, skipped: 0, bare: true };
      }
      file.point = { ok: m[1] === 'ok', comment: m[3], yaml: {} };
      continue;
    }
    if (line === '  ---' && file?.point) {
      inYaml = true;
      continue;
    }
  }
  close();
  for (const name of expected.map(normalize)) {
    if (seen.has(name)) continue;
    failed++;
    problems.push(`${name}: produced no result`);
  }
  return { passed, failed, skipped, problems, failures };
}

/** The closing lines: one per failed test point, one per problem, then the line CI reads. */
export function report({ passed, failed, skipped, problems, failures = [] }) {
  return [
    ...failures.map((f) => `# failed: ${f}`),
    ...problems.map((p) => `# not clean: ${p}`),
    `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`,
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = summarize(readFileSync(process.argv[2], 'utf8'), process.argv.slice(3));
  for (const line of report(result)) console.log(line);
  process.exit(result.failed > 0 ? 1 : 0);
}
