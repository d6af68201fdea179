// Runs AS A TEST USER: calls GetInfo back to back until STOPFILE exists and
// prints each call's start (epoch ms) and latency (ms) as JSON, so the bench
// can tell the calls made at rest from those made while another user's
// RemoveImage ran.
//   node stall-client.mjs STOPFILE
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const { connect } = await import(join(process.env.MOUNTGATE_TEST_PKG, 'dist', 'src', 'index.js'));
const stopFile = process.argv[2];
const broker = await connect();
const samples = [];
while (!existsSync(stopFile)) {
  const start = Date.now();
  const t0 = performance.now();
  await broker.getInfo();
  samples.push([start, performance.now() - t0]);
}
broker.close();
// Exits once the pipe has it all (a pipe takes a write in pieces).
process.stdout.write(JSON.stringify({ samples }), () => process.exit(0));
