// `mountgate run -it`: an interactive terminal through node-pty, driven like a
// person would drive it: keystrokes in, screen text out.
import t from 'tap';
import { createRequire } from 'node:module';
import { mkdirSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld, type World } from '../helpers/world.js';
import { cliPath } from '../helpers/paths.js';

const require = createRequire(import.meta.url);
const pty = require('node-pty') as typeof import('node-pty');

let world: World;
t.before(async () => {
  world = await createWorld({ users: { alice: {} } });
});
t.teardown(() => world?.teardown());

t.test('run -it gives a shell on a terminal inside the namespace, with the bind attached', async (tt) => {
  const alice = world.users.alice!;
  world.file('alice/note.txt', 'a note\n', alice);
  const target = join(world.scratch, 'it-target');
  mkdirSync(target);
  chownSync(target, alice.uid, alice.gid);
  const term = pty.spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, cliPath, 'run', '-it', '--bind', `${world.dirs.alice}:${target}:owner=1000`, '--', 'sh'], {
    name: 'xterm',
    cols: 100,
    rows: 30,
    cwd: '/',
    uid: alice.uid,
    gid: alice.gid,
    env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin', MOUNTGATE_BUS_ADDRESS: world.bus.address, HOME: '/nonexistent', TERM: 'xterm' },
  });
  let screen = '';
  term.onData((d) => (screen += d));
  const exited = new Promise<number>((res) => term.onExit(({ exitCode }) => res(exitCode)));
  const waitFor = async (re: RegExp, what: string) => {
    for (let k = 0; k < 200 && !re.test(screen); k++) await new Promise((r) => setTimeout(r, 50));
    tt.match(screen, re, what);
  };
  await waitFor(/# $/m, 'a root prompt appears inside the namespace');
  term.write(`tty; id -u; ls -ln ${target}\r`);
  await waitFor(/1000 +1000 +7 .*note\.txt/, 'the bind is attached, owned by 1000 inside');
  tt.match(screen, /\/dev\/pts\/\d+/, 'the shell runs on a pseudo-terminal');
  term.write('exit 7\r');
  tt.equal(await exited, 7, 'the exit status of the shell is the exit status of mountgate');
});
