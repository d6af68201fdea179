// The client's bus connection marks received fds and its own socket
// close-on-exec once the syscall module (koffi) has loaded; until then they
// wait in a queue. A short call (Hello, then disconnect at once) closes its
// socket before koffi has loaded: draining the queue then met EBADF, and the
// rejection crashed the process (seen as `mountgate info` dying now and then
// in test/systemd/installed.test.ts). A child process does exactly that, many
// times over, against a real dbus-daemon, and must live to say so.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { startPrivateBus } from '../helpers/bus-config.js';

const callerModule = fileURLToPath(new URL('../../src/bus/caller.ts', import.meta.url));

t.test('a connection closed before the syscall module loaded does not crash the process', async (tt) => {
  const bus = await startPrivateBus();
  tt.teardown(() => bus.stop());
  // Connections opened and closed before koffi loads: the syscall module's
  // import is held back by a resolve hook (the race, about 20 ms each way on
  // this machine, goes either way by itself).
  const hooks = `export async function resolve(spec, ctx, next) {
    if (spec.endsWith('/sys/syscalls.js')) await new Promise((r) => setTimeout(r, 500));
    return next(spec, ctx);
  }`;
  const delay = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`;
  const script = `
    const { CallerBus } = await import(${JSON.stringify(callerModule)});
    const opened = [];
    for (let i = 0; i < 3; i++) opened.push(await CallerBus.open(${JSON.stringify(bus.address)}));
    for (const b of opened) b.disconnect();
    const early = performance.now();
    // Long enough for koffi to load and the queue to be drained.
    await new Promise((r) => setTimeout(r, 2000));
    process.stdout.write('closed ' + opened.length + ' at ' + Math.round(early) + ' ms\\n');
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', `data:text/javascript,${encodeURIComponent(delay)}`, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  tt.same({ code, signal }, { code: 0, signal: null }, `the child lives${err ? `: ${err.trim()}` : ''}`);
  tt.match(out, /^closed 3 at \d+ ms\n$/, 'and closed every connection');
});
