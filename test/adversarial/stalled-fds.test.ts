// Finding 2: fds from a filesystem the caller serves, whose daemon never
// answers (a FUSE daemon stopped with SIGSTOP). The broker must examine caller
// fds in a killable helper with a deadline (--fd-deadline-ms), answer Timeout,
// keep serving everybody else meanwhile, and refuse at once the fd kinds a
// method never takes (AddImage: sealed memfds only; PutObjects: pipes and
// stream sockets only) without asking the filesystem anything.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { treePids } from './helpers/broker-tree.js';
import { join } from 'node:path';
import { createAdvWorld, errorName, parseLines, probe, processesLeft, type AdvWorld, type Reply } from './helpers/adv-world.js';
import { allowOther, fuseScenario, openDevFuse } from './helpers/fuse.js';
import { brokerPath } from '../helpers/paths.js';

const deadlineMs = 2000;
// The option is the contract; an older broker that lacks it still runs (and shows the stall).
const supportsDeadline = execFileSync(process.execPath, [brokerPath, '--help'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }).includes('--fd-deadline-ms');

let world: AdvWorld;
t.before(async () => {
  world = await createAdvWorld({
    users: { alice: {}, bob: {} },
    policy: {
      version: 1,
      methods: { Explain: { users: ['*'], requireSubordinateIds: false }, BindIdmapped: { users: ['*'] }, AddImage: { users: ['*'], requireSubordinateIds: false }, PutObjects: { users: ['*'], requireSubordinateIds: false }, ListImages: { users: ['*'], requireSubordinateIds: false } },
      limits: { concurrentRequests: 8, requestsPerMinute: 100000 },
    },
    brokerArgs: supportsDeadline ? ['--fd-deadline-ms', String(deadlineMs)] : [],
  });
  // Warm up: the identity map's user namespace is cached by the first bind.
  await world.probeAs(world.users.alice!, [{ op: 'bind', source: { kind: 'dir', path: world.dirs.alice } }]);
});
t.teardown(() => world?.teardown());

t.test('the broker accepts --fd-deadline-ms', async (tt) => {
  tt.ok(supportsDeadline, 'mountgated --help lists --fd-deadline-ms');
});

/** pid, command, state and kernel wait channel: where a stuck broker process is stuck. */
function describe(pid: number): string {
  const read = (f: string) => {
    try {
      return readFileSync(`/proc/${pid}/${f}`, 'utf8');
    } catch {
      return '?';
    }
  };
  const state = /^State:\s+(.*)$/m.exec(read('status'))?.[1] ?? '?';
  // Threads waiting on a FUSE answer (a thread pool stuck on the stalled fd freezes everything queued behind it).
  let stuck: string[] = [];
  try {
    stuck = readdirSync(`/proc/${pid}/task`).filter((tid) => /fuse/.test(read(`task/${tid}/stack`)));
  } catch {
    stuck = [];
  }
  return `${pid} ${read('comm').trim()} ${state} wchan=${read('wchan')}; ${stuck.length} thread(s) waiting in FUSE${stuck.length ? ` (${read(`task/${stuck[0]}/stack`).split('\n').slice(0, 3).map((l) => l.replace(/^\[<0>\] /, '')).join(',')})` : ''}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the scenario's probe printed n answers, or timeoutMs passed; returns what it printed. */
async function answers(run: { stdout(): string }, n: number, timeoutMs: number): Promise<Reply[]> {
  const end = Date.now() + timeoutMs;
  while (parseLines(run.stdout()).length < n && Date.now() < end) await sleep(100);
  return parseLines(run.stdout());
}

async function stalledCase(tt: Tap.Test, variant: 'overlay-in-userns' | 'allow-other') {
  const alice = world.users.alice!;
  const base = join(world.dirs.alice!, `stall-${variant}`);
  for (const d of ['', 'src', 'low', 'other', 'merged']) {
    mkdirSync(join(base, d), { recursive: true });
    chownSync(join(base, d), alice.uid, alice.gid);
  }
  writeFileSync(join(base, 'src', 'manifest.json'), '{"version":1,"entries":[]}');
  chownSync(join(base, 'src', 'manifest.json'), alice.uid, alice.gid);
  const flag = join(base, 'go');
  const restores = [openDevFuse(), ...(variant === 'allow-other' ? [allowOther()] : [])];
  const userns = variant === 'overlay-in-userns';
  // In its own user+mount namespace the user mounts FUSE itself, and an overlay over it;
  // outside, fusermount3 mounts it with allow_other so that root may look.
  const fuseDir = userns ? 'merged' : 'low';
  const script = [
    `cd ${base}`,
    `bindfs -f ${userns ? '' : '-o allow_other '}src low & echo "fuse-pid $!" >&2`,
    `i=0; while ! grep -q " ${base}/low " /proc/self/mountinfo; do sleep 0.05; i=$((i+1)); [ $i -lt 200 ]; done`,
    ...(userns ? ['mount -t overlay overlay -o lowerdir=low:other merged'] : []),
    'exec "$@"',
  ].join('\n');
  const ops = [
    { op: 'open', source: { kind: 'dir', path: join(base, fuseDir) } },
    // Not an O_RDONLY file: the bus daemon's own close() of a FUSE file's fd flushes it, and a
    // stopped FUSE server freezes dbus-daemon itself there (see README). O_PATH fds and
    // directories are closed without asking the filesystem.
    { op: 'open', source: { kind: 'opath-file', path: join(base, fuseDir, 'manifest.json') } },
    { op: 'waitFile', path: flag },
    { op: 'explain', method: 'BindIdmapped', request: {}, source: { kind: 'kept', index: 0 } },
    { op: 'addImage', fd: { kind: 'kept', index: 0 } },
    { op: 'addImage', fd: { kind: 'kept', index: 1 } },
    { op: 'putObjects', fd: { kind: 'kept', index: 0 } },
    { op: 'putObjects', fd: { kind: 'kept', index: 1 } },
    { op: 'bind', source: { kind: 'kept', index: 0 } },
  ];
  const before = world.snapshot();
  const s = fuseScenario(alice, world.bus.address, script, [process.execPath, probe, JSON.stringify(ops)], { userns, mountpoints: [join(base, 'low')] });
  try {
    await s.daemonPid();
    await s.run.waitOutput(/"index":1/);
    await s.stop();
    // Past FUSE's attribute cache (1 s), so that even fstat must ask the daemon.
    await sleep(1200);
    writeFileSync(flag, '');
    await sleep(300);
    await world.served(tt, world.users.bob!, 'bob, while the broker examines a stalled fd');
    const [, , , explain] = await answers(s.run, 4, deadlineMs + 3000 + 500);
    tt.ok(explain, `Explain of a stalled directory fd is answered within the deadline + 3 s (got ${explain ? JSON.stringify(explain).slice(0, 300) : 'nothing'})`);
    if (explain) {
      tt.equal(explain.name, errorName('Timeout'), 'Explain: error Timeout');
      tt.match(explain.message ?? '', /did not answer/, 'Explain: the message says the fd did not answer');
      tt.ok((explain.ms ?? Infinity) <= deadlineMs + 3000, `Explain answered in ${explain.ms} ms`);
    }
    await world.served(tt, world.users.bob!, 'bob, after the first stalled call');
    tt.comment(`broker tree during the stall: ${treePids(world.broker.pid).map(describe).join(' | ')}; bus daemon: ${describe(world.bus.pid)}`);
    // The rest stays stalled for the refusals that must not look at the filesystem at all.
    const replies = await answers(s.run, 9, 3 * (deadlineMs + 3000));
    const [, , , , addDir, addFile, putDir, putFile, bind] = replies;
    for (const [what, r] of [['AddImage of a directory fd on the stalled FUSE', addDir], ['AddImage of an O_PATH fd of a file on it', addFile]] as const) {
      tt.equal(r?.name, errorName('InvalidRequest'), `${what}: InvalidRequest (${r?.name}: ${r?.message})`);
      tt.match(r?.message ?? '', /sealed memfd/, `${what}: the message asks for a sealed memfd`);
      tt.ok((r?.ms ?? Infinity) < 1000, `${what}: refused at once (${r?.ms} ms)`);
    }
    for (const [what, r] of [['PutObjects of a directory fd on the stalled FUSE', putDir], ['PutObjects of an O_PATH fd of a file on it', putFile]] as const) {
      tt.equal(r?.name, errorName('InvalidRequest'), `${what}: InvalidRequest (${r?.name}: ${r?.message})`);
      tt.match(r?.message ?? '', /pipe or a (connected )?(AF_UNIX )?stream socket/, `${what}: the message asks for a pipe or a stream socket`);
      tt.ok((r?.ms ?? Infinity) < 1000, `${what}: refused at once (${r?.ms} ms)`);
    }
    tt.equal(bind?.name, errorName('Timeout'), `BindIdmapped of the stalled directory: Timeout (${bind?.name}: ${bind?.message})`);
    tt.match(bind?.message ?? '', /did not answer/);
    await world.served(tt, world.users.bob!, 'bob, during the stall');
  } finally {
    await s.cleanup();
    restores.forEach((r) => r());
  }
  await world.nothingLeft(tt, before, { fdTimeoutMs: deadlineMs + 5000 });
  await world.served(tt, world.users.bob!, 'bob, after cleanup');
  tt.equal(await processesLeft(alice, 'bindfs'), '', 'no FUSE daemon left');
}

t.test('a directory fd of an overlay over a stopped FUSE daemon (user+mount namespace): Timeout, others served, nothing left', (tt) => stalledCase(tt, 'overlay-in-userns'));
t.test('a directory fd of a stopped allow_other FUSE mount: Timeout, others served, nothing left', (tt) => stalledCase(tt, 'allow-other'));
