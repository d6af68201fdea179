// Regression test for the closing part of patches/usocket+1.1.0.patch: the
// native wrap keeps its uv_poll_t inside itself and close() hands it to
// uv_close(), which finishes in a later phase of the event loop; a wrap
// garbage-collected in between made libuv finish closing freed memory, and
// the process aborted in uv__finish_close (or crashed with SIGSEGV). The
// client met it as `mountgate image add` dying now and then right after
// broker.close(), when the import's garbage was collected
// (test/import/rootfs-tar.test.ts found it). A child process closes sockets
// and collects garbage at once, many times: it must live to say so.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import t from 'tap';

const require = createRequire(import.meta.url);

t.test('a socket destroyed and garbage-collected in the same turn does not crash the process', async (tt) => {
  const script = `
    const { USocket } = require(${JSON.stringify(require.resolve('usocket'))});
    const net = require('net'); const fs = require('fs'); const os = require('os'); const path = require('path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-usocket-'));
    const sock = path.join(dir, 's');
    const server = net.createServer((c) => { c.on('error', () => {}); c.resume(); }).listen(sock, async () => {
      for (let i = 0; i < 200; i++) {
        const s = new USocket();
        await new Promise((r) => s.connect({ path: sock }, r));
        s.on('error', () => {});
        s.destroy();
        global.gc();
        await new Promise((r) => setImmediate(r));
      }
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
      process.stdout.write('closed 200\\n');
    });
  `;
  const child = spawn(process.execPath, ['--expose-gc', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  tt.same({ code, signal }, { code: 0, signal: null }, `the child lives${err ? `: ${err.trim()}` : ''}`);
  tt.equal(out, 'closed 200\n', 'and closed every socket');
});
