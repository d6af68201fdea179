// SIGKILL of either broker process at random points of a mixed load, then a
// restart, round after round; after each, the state must be consistent:
//   sudo bash bench/run.sh crash [ROUNDS] [SEED]
// Checked every round: the broker answers again; store/tmp is empty; every
// stored object hashes to its name; no object is left that no image needs;
// every registered image has its file, whose sha256 is its id; the staging
// mount has nothing attached; no loop device and no erofs/overlay mount is
// left (the broker runs with --erofs-backing loop, so image mounts hold loop
// devices).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBroker } from '../test/helpers/broker.js';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { pkgRoot } from '../test/helpers/paths.js';
import Database from 'better-sqlite3';
import { StoreDb } from '../src/store/db.js';
import { FsVerityHasher } from '../src/verity/fsverity.js';

const rounds = Number(process.argv[2] ?? 20);
let seed = Number(process.argv[3] ?? 20261201);
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const client = join(pkgRoot, 'bench', 'load-client.mjs');
const methods = Object.fromEntries(['BindIdmapped', 'Explain', 'AddImage', 'PutObjects', 'MountImage', 'ListImages', 'RemoveImage'].map((m) => [m, { users: ['*'] }]));
const brokerArgs = ['--erofs-backing', 'loop'];
const world = await createWorld({ users: { a: {}, b: {} }, policy: { version: 1, methods, limits: { concurrentRequests: 8, requestsPerMinute: 1_000_000 } }, brokerArgs });

function frontPid(): number | undefined {
  const kids = readFileSync(`/proc/${world.broker.pid}/task/${world.broker.pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number);
  return kids.find((k) => {
    try {
      return readFileSync(`/proc/${k}/cmdline`, 'utf8').includes('front.js');
    } catch {
      return false;
    }
  });
}

/** Front processes serving this state directory, wherever they are in the process tree. */
function frontsOf(stateDir: string): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((p) => {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a.endsWith('front.js')) && argv.includes(stateDir);
    } catch {
      return false;
    }
  });
}

/** Stops the broker (SIGTERM) so that its store database can be opened, and waits for it and its front. */
async function stopBrokerKeepingState(): Promise<void> {
  const p = world.broker.process;
  if (p.exitCode === null && p.signalCode === null) {
    const exited = new Promise((res) => p.once('exit', res));
    p.kill('SIGTERM');
    await exited;
  }
  for (let t = 0; t < 200 && frontsOf(world.broker.stateDir).length > 0; t++) await new Promise((res) => setTimeout(res, 100));
}

/** What is wrong with the store, read with the broker stopped: the database's own invariants, and the files against it. */
function problems(): string[] {
  const out: string[] = [];
  const state = world.broker.stateDir;
  const store = join(state, 'store');
  const tmp = readdirSync(join(store, 'tmp'));
  if (tmp.length) out.push(`store/tmp holds ${tmp.length} file(s)`);
  const dbPath = join(state, 'store.db');
  const db = new StoreDb(dbPath);
  try {
    out.push(...db.check().map((v) => `database: ${v}`));
  } finally {
    db.close();
  }
  const raw = new Database(dbPath, { readonly: true });
  const referenced = new Set<string>();
  const present = new Set<string>();
  try {
    for (const { id } of raw.prepare('SELECT id FROM images').all() as { id: string }[]) {
      const image = join(state, 'images', id, 'image.erofs');
      if (!existsSync(image)) out.push(`image ${id.slice(0, 12)} is registered without its file`);
      else if (createHash('sha256').update(readFileSync(image)).digest('hex') !== id) out.push(`image ${id.slice(0, 12)}'s file does not hash to its id`);
    }
    for (const r of raw.prepare('SELECT digest, present FROM objects').all() as { digest: string; present: number }[]) {
      referenced.add(r.digest);
      if (r.present === 1) present.add(r.digest);
    }
  } finally {
    raw.close();
  }
  const objects = join(store, 'objects');
  const files = new Set<string>();
  for (const prefix of readdirSync(objects)) {
    for (const rest of readdirSync(join(objects, prefix))) {
      const digest = prefix + rest;
      files.add(digest);
      const h = new FsVerityHasher();
      h.update(readFileSync(join(objects, prefix, rest)));
      if (h.digest().toString('hex') !== digest) out.push(`object ${digest.slice(0, 12)} does not hash to its name`);
      if (!referenced.has(digest)) out.push(`object ${digest.slice(0, 12)} is needed by no image`);
    }
  }
  for (const d of present) if (!files.has(d)) out.push(`object ${d.slice(0, 12)} is recorded present but has no file`);
  // The lock helpers end when the executor's pipe closes; their namespace, and whatever was staged in it, with them.
  const lockHelpers = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && (() => { try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('mountgate-lock-'); } catch { return false; } })());
  if (lockHelpers.length) out.push(`${lockHelpers.length} lock helper(s) outlived the broker`);
  const loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
  if (loops) out.push(`${loops} loop device(s) attached`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => / - (erofs|overlay) /.test(l)).length;
  if (mounts) out.push(`${mounts} erofs/overlay mount(s) in the broker's namespace`);
  return out;
}

const kills = { executor: 0, front: 0 };
const found: string[] = [];
try {
  for (let r = 0; r < rounds; r++) {
    const load = ['a', 'b'].map((u) => runAs(world.users[u]!, [process.execPath, client, 'mixed', '3', '8', world.dirs[u]!], { busAddress: world.bus.address, env: { MOUNTGATE_TEST_PKG: pkgRoot }, timeoutMs: 120_000 }));
    await new Promise((res) => setTimeout(res, 200 + random() * 2300));
    const which = random() < 0.5 ? 'executor' : 'front';
    const seen = world.broker.audit.length;
    const front = frontPid();
    if (which === 'executor') process.kill(world.broker.pid, 'SIGKILL');
    else if (front) process.kill(front, 'SIGKILL');
    kills[which]++;
    await Promise.all(load);
    // A killed executor takes its front along (the channel closes); a killed front is restarted by the executor.
    await new Promise((res) => setTimeout(res, 500));
    const alive = world.broker.process.exitCode === null && world.broker.process.signalCode === null;
    if (!alive) {
      // Its front follows it out when it sees the channel close; the next broker needs the bus name free.
      for (let t = 0; t < 200 && frontsOf(world.broker.stateDir).length > 0; t++) await new Promise((res) => setTimeout(res, 100));
      try {
        world.broker = await startBroker(world.bus.address, undefined, world.broker, brokerArgs);
      } catch (err) {
        const owner = (() => {
          try {
            return execFileSync('dbus-send', [`--bus=${world.bus.address}`, '--print-reply', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.GetConnectionUnixProcessID', 'string:org.mountgate.Broker1'], { encoding: 'utf8' });
          } catch (e) {
            return String(e);
          }
        })();
        const pid = /uint32 (\d+)/.exec(owner)?.[1];
        console.log(`the name is owned by pid ${pid}: ${pid ? readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ') : owner}`);
        if (pid) {
          const link = (f: string) => { try { return execFileSync('readlink', [`/proc/${pid}/fd/${f}`], { encoding: 'utf8' }).trim(); } catch { return '?'; } };
          console.log(`its fd 3: ${link('3')}; state: ${/State:.*/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[0]}`);
          const inode = /socket:\[(\d+)\]/.exec(link('3'))?.[1];
          console.log(execFileSync('sh', ['-c', `grep -l . /proc/net/unix >/dev/null; awk '$7 == "${inode}" || $1 ~ /./ {}' /proc/net/unix; ls -l /proc/*/fd 2>/dev/null | grep -B999 'socket:\\[' | grep -c .`], { encoding: 'utf8' }).slice(0, 200));
        }
        console.log(world.broker.audit.slice(-6).map((l) => JSON.stringify(l).slice(0, 160)).join('\n'));
        throw err;
      }
    }
    else await world.broker.waitFor((l) => l.event === 'ready' && world.broker.audit.indexOf(l) >= seen, 20_000);
    // Settled: the images a killed front was mounting are released with its fds.
    await new Promise((res) => setTimeout(res, 500));
    const info = await runAs(world.users.a!, [process.execPath, join(pkgRoot, 'test', 'helpers', 'probe-client.mjs'), JSON.stringify([{ op: 'info' }])], { busAddress: world.bus.address });
    // The restarted broker reconciled the store; stopped, its database can be read.
    await stopBrokerKeepingState();
    const bad = [...(/"ok":true/.test(info.stdout) ? [] : [`the broker does not answer after the restart (${info.stdout.trim()})`]), ...problems()];
    world.broker = await startBroker(world.bus.address, undefined, world.broker, brokerArgs);
    console.log(`round ${String(r + 1).padStart(3)}: SIGKILL ${which.padEnd(8)} ${bad.length ? `PROBLEMS: ${bad.join('; ')}` : 'consistent'}`);
    found.push(...bad.map((b) => `round ${r + 1} (${which}): ${b}`));
  }
  console.log(`${rounds} rounds: ${kills.executor} SIGKILLs of the executor, ${kills.front} of the front; ${found.length} problem(s)`);
} finally {
  await world.teardown();
}
process.exitCode = found.length ? 1 : 0;
