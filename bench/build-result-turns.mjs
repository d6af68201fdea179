// The front's longest turns while a build's result of N objects is read and
// registered: ImageService with its real build helper, in this process, a
// chain of setImmediate on its loop, each gap with the main thread's own
// CPU time (/proc/self/task/PID/schedstat: on a shared machine a gap's wall
// time also counts time descheduled). REPO is a built checkout (dist/), so
// two versions can be compared in one session (bench/notes/remove.md).
//   node bench/build-result-turns.mjs REPO [OBJECTS]
import { mkdtempSync, rmSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { syntheticEntries } from './lib/synthetic-tree.mjs';
const root = process.argv[2];
const objects = Number(process.argv[3] ?? 100000);
const entries = objects + objects / 10;
const { ImageService } = await import(join(root, 'dist/src/broker/images.js'));
const { sealedMemfd } = await import(join(root, 'dist/src/sys/syscalls.js'));
const digests = Array.from({ length: objects }, (_, k) => createHash('sha256').update(`object ${k}`).digest('hex'));
const list = syntheticEntries(entries, objects, (k) => ({ size: 10 + (k % 1000), digest: digests[k] }));
const fd = sealedMemfd('turns-manifest', Buffer.from(JSON.stringify({ version: 1, name: 'turns', entries: list })));
const dir = mkdtempSync(join(tmpdir(), 'mountgate-turns.'));
const svc = new ImageService({ stateDir: join(dir, 'state'), policy: () => ({ version: 1 }), features: { fileBackedErofs: false, idmappedMounts: false, fsVerity: false, overlayDataOnly: false }, fdDeadlineMs: 5000 });
// The probe: a chain of setImmediate, each gap between two of its callbacks one turn of the loop (or more).
// Each gap also with the main thread's own CPU time in it (schedstat): the machine is shared, and a wall-clock gap counts time spent descheduled.
const schedstat = `/proc/self/task/${process.pid}/schedstat`;
const cpuMs = () => Number(readFileSync(schedstat, 'utf8').split(' ')[0]) / 1e6;
let last = performance.now();
let lastCpu = cpuMs();
const gaps = [];
let running = true;
const probe = () => {
  const now = performance.now();
  const cpu = cpuMs();
  gaps.push([last, now, cpu - lastCpu]);
  last = performance.now();
  lastCpu = cpuMs();
  if (running) setImmediate(probe);
};
setImmediate(probe);
const t0 = performance.now();
const built = await svc.build(1000, fd);
// As methods.ts does: decided and registered in the turn the build resolves in.
const r0 = performance.now();
svc.imageFacts(built);
svc.storeUsage(1000, built.imageId);
const { durable } = svc.register(1000, built);
const registerMs = performance.now() - r0;
const buildMs = r0 - t0;
const missing = await durable;
const r1 = performance.now();
const rowsMs = r1 - r0;
// methods.ts's reply list, in one turn.
const d0 = performance.now();
// (New: durable resolves to the raw list, converted a page per turn.)
if (!Buffer.isBuffer(missing)) {
  const out = Buffer.allocUnsafe(missing.length * 32);
  for (let k = 0; k < missing.length; k++) out.write(missing[k], k * 32, 32, 'hex');
}
const listMs = performance.now() - d0;
running = false;
const max = (pred) => gaps.filter(pred).reduce((m, [a, b, c]) => [Math.max(m[0], b - a), Math.max(m[1], c)], [0, 0]);
const worstTurnMs = {
  // Before the build's result arrives (the helper builds on another core).
  building: max(([a, b]) => b < r0 - 1000),
  // The turn the result arrives in: read, parsed, decided and registered (old); the turns that read and check it (new).
  result: max(([a, b]) => b >= r0 - 1000 && a <= r0 + registerMs),
  rows: max(([a, b]) => a > r0 + registerMs && b <= r1),
};
console.log(JSON.stringify({ objects, entries, imageBytes: built.image.length, buildMs: Math.round(buildMs), registerCallMs: +registerMs.toFixed(1), rowsMs: Math.round(rowsMs), missing: Buffer.isBuffer(missing) ? missing.length / 32 : missing.length, replyListMs: +listMs.toFixed(1), worstTurnMs: Object.fromEntries(Object.entries(worstTurnMs).map(([k, [wall, cpu]]) => [k, { wall: +wall.toFixed(1), cpu: +cpu.toFixed(1) }])) }));
closeSync(fd);
rmSync(dir, { recursive: true, force: true });
process.exit(0);
