// The installed package under a real systemd: a Debian bookworm root
// (scripts/nspawn-root.sh, built once and cached outside the tree) booted with
// `systemd-nspawn --boot`, the .deb installed with dpkg inside it, and a user
// calling the broker through the container's system bus, so that D-Bus
// activation starts mountgate-front.service, whose connection to
// mountgated.socket starts mountgated.service, each with its unit's real
// capability sets, syscall filter and namespace options. Runs as root.
//
// Node: the container gets the host's /usr/bin/node, COPIED into a local
// package named nodejs (nodejsHostPackage below) that dpkg installs before the
// .deb. A bind mount of the binary would leave the package's Depends on nodejs
// unsatisfied (dpkg --force-depends, or a stub package that claims a nodejs it
// does not ship); the local package ships the real binary at /usr/bin/node,
// the very one the .deb's native addons were built against.
//
// The root is booted with --volatile=overlay: everything the run installs or
// writes lands on a tmpfs above the cached tree and is gone at power-off.
// First run: about a minute more for debootstrap; later runs reuse the tree.
import t from 'tap';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { builtDeb } from '../helpers/deb.js';
import { repoRoot } from '../helpers/paths.js';

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };

interface Result { code: number; stdout: string; stderr: string }

/** Runs a program to its end; never throws for a non-zero exit. */
function sh(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 120_000, cwd: opts.cwd, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err && code === 1 && !stderr ? String(err.message) : '') });
      });
  });
}

/** A `nodejs` package holding the host's own node binary (see the top of this file). */
async function nodejsHostPackage(out: string): Promise<string> {
  const stage = join(out, 'nodejs-stage');
  mkdirSync(join(stage, 'DEBIAN'), { recursive: true });
  mkdirSync(join(stage, 'usr/bin'), { recursive: true });
  copyFileSync(process.execPath, join(stage, 'usr/bin/node'));
  chmodSync(join(stage, 'usr/bin/node'), 0o755);
  const hostVersion = (await sh('dpkg-query', ['-W', '-f=${Version}', 'nodejs'])).stdout.trim();
  const version = `${hostVersion || `${process.versions.node}-1`}+mountgate.host1`;
  const arch = (await sh('dpkg', ['--print-architecture'])).stdout.trim();
  writeFileSync(join(stage, 'DEBIAN/control'), [
    'Package: nodejs',
    `Version: ${version}`,
    `Architecture: ${arch}`,
    'Maintainer: mountgate tests <mountgate@localhost>',
    // What `ldd /usr/bin/node` of NodeSource's build needs.
    'Depends: libc6 (>= 2.28), libgcc-s1, libstdc++6',
    'Section: web',
    'Priority: optional',
    `Description: Node.js ${process.version}, the test host's /usr/bin/node`,
    ' Copied from the machine that built the mountgate package under test.',
    '',
  ].join('\n'));
  const deb = join(out, `nodejs_${version}_${arch}.deb`);
  const r = await sh('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', stage, deb]);
  if (r.code !== 0) throw new Error(`dpkg-deb nodejs: ${r.stderr}`);
  rmSync(stage, { recursive: true, force: true });
  return deb;
}

/** pid -> ppid of every process now. */
function processTable(): Map<number, number> {
  const table = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      table.set(Number(name), ppid);
    } catch {
      // gone meanwhile
    }
  }
  return table;
}

const pidNamespace = (pid: number): string | undefined => {
  try { return readlinkSync(`/proc/${pid}/ns/pid`); } catch { return undefined; }
};

/** A booted container: systemd-nspawn and the host pid of the container's systemd. */
class Container {
  private readonly log: string[] = [];
  private nspawn?: ChildProcess;
  private exited?: Promise<void>;
  leader = 0;
  leaderPidNs = '';

  constructor(private readonly root: string, private readonly name: string, private readonly binds: string[]) {}

  async boot(timeoutMs: number): Promise<void> {
    const args = ['--quiet', '--register=no', '--keep-unit', '--boot', '--console=pipe', `--machine=${this.name}`,
      '-D', this.root, '--volatile=overlay',
      // Its own network namespace (only lo): nothing in it needs a network,
      // and nspawn keeps CAP_NET_ADMIN for a private network only, which
      // systemd needs to bring up lo in the unit's PrivateNetwork=, as on a host.
      '--private-network',
      // nspawn 252 puts its own seccomp allow-list on the whole container, and
      // pidfd_getfd is not on it: every process in the container got EPERM,
      // whatever the unit said (measured; a host has no such outer filter).
      // The unit's own filter is what this test is about, so let it through.
      '--system-call-filter=pidfd_getfd', ...this.binds.map((b) => b.startsWith('ro:') ? `--bind-ro=${b.slice(3)}` : `--bind=${b.slice(3)}`)];
    const child = spawn('systemd-nspawn', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.nspawn = child;
    const keep = (d: Buffer) => { this.log.push(d.toString()); if (this.log.length > 400) this.log.shift(); };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + timeoutMs;
    // nspawn forks the container's PID 1 (systemd) as its direct child.
    while (!this.leader) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`systemd-nspawn exited: ${this.output()}`);
      if (Date.now() > deadline) throw new Error(`no container init after ${timeoutMs} ms: ${this.output()}`);
      for (const [pid, ppid] of processTable()) {
        if (ppid !== child.pid) continue;
        try {
          if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'systemd') this.leader = pid;
        } catch {
          // gone
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    this.leaderPidNs = pidNamespace(this.leader) ?? '';
  }

  output(): string {
    return this.log.join('').slice(-4000);
  }

  /** A command inside the container, as root, in all of its namespaces. */
  exec(argv: string[], timeoutMs = 120_000): Promise<Result> {
    return sh('nsenter', ['-t', String(this.leader), '-a', '--', 'env', '-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8',
      'SYSTEMD_PAGER=', 'SYSTEMD_COLORS=0', ...argv], { timeoutMs });
  }

  /** A shell command inside the container as `user`, with a user's plain environment, from its home. */
  asUser(user: string, script: string, timeoutMs = 120_000): Promise<Result> {
    return this.exec(['setpriv', `--reuid=${user}`, `--regid=${user}`, '--init-groups', '--',
      'env', '-i', `HOME=/home/${user}`, `USER=${user}`, 'PATH=/usr/bin:/bin', 'LANG=C.UTF-8',
      'sh', '-c', `cd "$HOME" && ${script}`], timeoutMs);
  }

  /** Powers the container off (nspawn turns SIGTERM into the container's poweroff signal); SIGKILL past the deadline. */
  async powerOff(timeoutMs: number): Promise<boolean> {
    const child = this.nspawn;
    if (!child || child.exitCode !== null || child.signalCode !== null) return true;
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const clean = await Promise.race([this.exited!.then(() => true), new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs); })]);
    clearTimeout(timer);
    if (!clean) {
      child.kill('SIGKILL');
      await this.exited;
    }
    return clean && child.exitCode === 0;
  }
}

/** Loop devices now: "/dev/loopN backing-file" lines. */
async function loopDevices(): Promise<Set<string>> {
  const r = await sh('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE']);
  return new Set(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
}

const missingTools = ['systemd-nspawn', 'debootstrap', 'nsenter', 'dpkg-deb'].filter((tool) =>
  !['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => statSync(join(d, tool), { throwIfNoEntry: false })));

const fileStarted = Date.now();
t.teardown(() => { t.comment(`installed.test.ts: ${Math.round((Date.now() - fileStarted) / 1000)} s`); });
t.test('the installed package under a booted systemd', { bail: false }, async (t) => {
  if (missingTools.length) {
    t.fail(`missing ${missingTools.join(', ')}: run scripts/install-deps.sh (debootstrap, systemd-container)`);
    return;
  }
  // A first debootstrap is a few minutes on a slow mirror; later runs take
  // well under the suite's per-file timeout (tap relays this to the runner).
  const cache = process.env.MOUNTGATE_NSPAWN_CACHE ?? '/var/cache/mountgate-test';
  const cached = (statSync(cache, { throwIfNoEntry: false }) ? readdirSync(cache) : []).some((n) => n.startsWith('bookworm-'));
  t.setTimeout(cached ? 20 * 60_000 : 30 * 60_000);

  const work = mkdtempSync(join(tmpdir(), 'mountgate-nspawn.'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const debs = join(work, 'debs');
  // /home and /var/lib/mountgate come from the host's file system, as on a
  // host: the container's root is an overlay (--volatile=overlay), which can
  // be neither idmapped (mount_setattr EINVAL) nor probed for it.
  const home = join(work, 'home');
  const state = join(work, 'state');
  for (const d of [debs, home, state]) mkdirSync(d);
  for (const d of [work, debs, home]) chmodSync(d, 0o755);
  chmodSync(state, 0o700);

  const started = Date.now();
  // The package is built once per run and shared with test/packaging/deb.test.ts.
  const [built, rootMade] = await Promise.all([
    builtDeb(),
    sh(join(repoRoot, 'scripts', 'nspawn-root.sh'), [cache], { timeoutMs: 20 * 60_000 }),
  ]);
  if (!t.equal(built.code, 0, `build-deb.sh exits 0${built.code ? `: ${built.stderr}` : ''}`)) return;
  if (!t.ok(built.deb, 'the package is there')) return;
  copyFileSync(built.deb!, join(debs, basename(built.deb!)));
  if (!t.equal(rootMade.code, 0, `nspawn-root.sh exits 0${rootMade.code ? `: ${rootMade.stderr}` : ''}`)) return;
  const root = rootMade.stdout.trim().split('\n').at(-1)!;
  const nodeDeb = await nodejsHostPackage(debs);
  t.comment(`package and root ready in ${Math.round((Date.now() - started) / 1000)} s (root: ${root})`);

  const loopsBefore = await loopDevices();
  const name = `mgtest-${process.pid}`;
  const ct = new Container(root, name, [`ro:${debs}:/mnt/debs`, `rw:${home}:/home`, `rw:${state}:/var/lib/mountgate`]);
  let poweredOff = false;
  t.teardown(async () => { if (!poweredOff) await ct.powerOff(30_000); });

  await t.test('the container boots its systemd', async (t) => {
    await ct.boot(60_000);
    t.ok(ct.leader > 0, `container init is host pid ${ct.leader}`);
    // Until the container's bus is up, systemctl cannot even ask.
    let state: Result = { code: 1, stdout: '', stderr: '' };
    for (const until = Date.now() + 120_000; Date.now() < until;) {
      state = await ct.exec(['timeout', '120', 'systemctl', 'is-system-running', '--wait'], 130_000);
      if (state.stdout.trim()) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const failed = (await ct.exec(['systemctl', '--failed', '--plain', '--no-legend'])).stdout.trim();
    t.comment(`system state: ${state.stdout.trim() || state.stderr.trim()}${failed ? `; failed units: ${failed.replace(/\n/g, '; ')}` : ''}`);
    t.match(state.stdout.trim(), /^(running|degraded)$/, 'systemctl is-system-running: running or degraded');
    t.notMatch(failed, /mountgate|dbus/, 'neither dbus nor mountgated failed');
  });
  if (!ct.leader) return;

  await t.test('dpkg installs node and the package', async (t) => {
    const r = await ct.exec(['dpkg', '-i', `/mnt/debs/${nodeDeb.split('/').at(-1)}`, `/mnt/debs/mountgate_${pkg.version}_${(await sh('dpkg', ['--print-architecture'])).stdout.trim()}.deb`], 300_000);
    t.equal(r.code, 0, `dpkg -i exits 0${r.code ? `: ${r.stdout}${r.stderr}` : ''}`);
    t.equal((await ct.exec(['dpkg-query', '-W', '-f=${Status}', 'mountgate'])).stdout, 'install ok installed', 'mountgate is installed');
    t.match((await ct.exec(['getent', 'passwd', 'mountgate'])).stdout, /^mountgate:/, 'postinst made the front\'s system user');
    const state = await ct.exec(['systemctl', 'show', '-p', 'ActiveState', '--value', 'mountgated', 'mountgate-front']);
    t.equal(state.stdout.trim(), 'inactive\n\ninactive', 'neither part runs before the first call');
    // The packaged policy (the built-in default) is what the rest runs under: binds and images for users with subordinate ids.
    t.match((await ct.exec(['cat', '/etc/mountgate/policy.json'])).stdout, /"MountImage"/, 'the packaged policy allows images');
  });

  const user = 'alice';
  await t.test('a user with subordinate ids', async (t) => {
    const r = await ct.exec(['sh', '-c', `useradd --create-home --uid 2000 --user-group --shell /bin/sh ${user} &&
      usermod --add-subuids 200000-265535 --add-subgids 200000-265535 ${user}`]);
    t.equal(r.code, 0, `useradd and usermod${r.code ? `: ${r.stderr}` : ''}`);
  });

  await t.test('D-Bus activation starts the broker for the first call', async (t) => {
    const r = await ct.asUser(user, 'mountgate info');
    t.equal(r.code, 0, `mountgate info exits 0${r.code ? `: ${r.stdout}${r.stderr}` : ''}`);
    t.match(r.stdout, pkg.version, 'reports the broker version');
    t.comment(r.stdout.trim().replace(/\n/g, ' | '));
    for (const unit of ['mountgate-front', 'mountgated']) {
      const show = await ct.exec(['systemctl', 'show', '-p', 'ActiveState,SubState,Result,NRestarts,MainPID', unit]);
      const props = Object.fromEntries(show.stdout.trim().split('\n').map((l) => l.split(/=(.*)/s).slice(0, 2)));
      t.equal(props.ActiveState, 'active', `${unit}: ActiveState=active`);
      t.equal(props.SubState, 'running', `${unit}: SubState=running`);
      t.equal(props.Result, 'success', `${unit}: Result=success`);
      t.equal(props.NRestarts, '0', `${unit}: no restart`);
    }
    const sock = await ct.exec(['stat', '-c', '%U:%G %a %F', '/run/mountgate-executor.sock']);
    t.equal(sock.stdout.trim(), 'root:mountgate 660 socket', "the executor's socket: root and the front's group only");
  });

  await t.test('an idmapped bind through the activated service', async (t) => {
    const r = await ct.asUser(user, 'mkdir -p data && echo hello > data/file && mountgate run --bind "$HOME/data:/mnt:owner=1000" -- ls -ln /mnt');
    t.equal(r.code, 0, `mountgate run --bind exits 0${r.code ? `: ${r.stdout}${r.stderr}` : ''}`);
    t.match(r.stdout, /^-\S+\s+\d+\s+1000\s+1000\s+6\s.*\bfile$/m, 'the user\'s file appears as 1000:1000');
  });

  await t.test('a composefs image through the activated service', async (t) => {
    const add = await ct.asUser(user, 'mkdir -p tree/srv && echo "hello from composefs" > tree/srv/hello.txt && mountgate image add tree --name t1');
    t.equal(add.code, 0, `mountgate image add exits 0${add.code ? `: ${add.stdout}${add.stderr}` : ''}`);
    const r = await ct.asUser(user, 'mountgate run --image t1:/mnt -- sh -c "cat /mnt/srv/hello.txt; touch /mnt/x 2>&1 || true"');
    t.equal(r.code, 0, `mountgate run --image exits 0${r.code ? `: ${r.stdout}${r.stderr}` : ''}`);
    t.match(r.stdout, /^hello from composefs$/m, 'the image\'s file is read through the mount');
    t.match(r.stdout, /Read-only file system/, 'and the image is read-only');
    const rm = await ct.asUser(user, 'mountgate image rm t1');
    t.equal(rm.code, 0, `mountgate image rm exits 0${rm.code ? `: ${rm.stderr}` : ''}`);
  });

  await t.test('executor as root, front as mountgate, two confined units', async (t) => {
    const mainPid = async (unit: string) => (await ct.exec(['systemctl', 'show', '-p', 'MainPID', '--value', unit])).stdout.trim();
    const execPid = await mainPid('mountgated');
    const frontPid = await mainPid('mountgate-front');
    const ps = await ct.exec(['ps', '-eo', 'pid=,ppid=,user:16=,args=']);
    const rows = ps.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)).map(([pid, ppid, u, ...args]) => ({ pid, ppid, user: u, args: args.join(' ') }));
    const exec = rows.find((r) => r.pid === execPid);
    t.equal(exec?.user, 'root', 'the executor runs as root');
    t.match(exec?.args ?? '', /broker\/main\.js --accept-front/, 'and is mountgated --accept-front');
    const front = rows.find((r) => r.pid === frontPid);
    t.equal(front?.user, 'mountgate', 'the front runs as mountgate');
    t.match(front?.args ?? '', /broker\/front\.js --connect/, 'and is the front, connected to the socket');
    t.equal(front?.ppid, '1', 'started by systemd, not by the executor');
    for (const [part, pid] of [['executor', execPid], ['front', frontPid]] as const) {
      const status = (await ct.exec(['cat', `/proc/${pid}/status`])).stdout;
      const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim();
      t.equal(field('NoNewPrivs'), '1', `${part}: NoNewPrivs`);
      t.equal(field('Seccomp'), '2', `${part}: seccomp filter`);
      t.comment(`${part}: CapEff ${field('CapEff')} CapBnd ${field('CapBnd')}`);
      if (part === 'front') {
        t.equal(field('CapEff'), '0000000000000000', 'the front has no capability');
        t.equal(field('CapBnd'), '0000000000000000', 'and cannot get one');
      }
    }
    const ns = await ct.exec(['readlink', `/proc/${execPid}/ns/mnt`, `/proc/${frontPid}/ns/mnt`, '/proc/1/ns/mnt']);
    const [execNs, frontNs, initNs] = ns.stdout.trim().split('\n');
    t.equal(execNs, initNs, "the executor is in the container's own mount namespace (it clones callers' mounts)");
    t.not(frontNs, initNs, 'the front is in a mount namespace of its own (its sandbox)');
    const owner = await ct.exec(['stat', '-c', '%U %a', '/var/lib/mountgate', '/run/mountgate']);
    t.equal(owner.stdout, 'mountgate 700\nroot 700\n', 'state dir is the front\'s, runtime dir the executor\'s');
  });

  await t.test('reload, and the journal', async (t) => {
    for (const unit of ['mountgated', 'mountgate-front']) {
      const reload = await ct.exec(['systemctl', 'reload', unit]);
      t.equal(reload.code, 0, `systemctl reload ${unit}${reload.code ? `: ${reload.stderr}` : ''}`);
    }
    const info = await ct.asUser(user, 'mountgate info');
    t.equal(info.code, 0, `still answers after the reloads${info.code ? `: ${info.stdout}${info.stderr}; ${(await ct.exec(['journalctl', '-b', '--no-pager', '-o', 'cat', '-n', '40', '-u', 'mountgated', '-u', 'mountgate-front'])).stdout}` : ''}`);
    const journal = (await ct.exec(['journalctl', '-b', '--no-pager', '-o', 'cat', '-u', 'mountgated', '-u', 'mountgate-front'])).stdout;
    t.equal(journal.split('\n').filter((l) => /"event":"policy","allowed":true/.test(l)).length, 2, 'the front took the policy again, once per reload');
    const bad = journal.split('\n').filter((l) => /SIGSYS|Bad system call|EPERM|EACCES|Operation not permitted|Permission denied|capabilit|seccomp|"event":"error"/i.test(l));
    t.strictSame(bad, [], 'no syscall-filter, permission or capability error in either unit\'s journal');
    for (const unit of ['mountgate-front', 'mountgated']) {
      const sec = await ct.exec(['systemd-analyze', 'security', '--no-pager', unit]);
      const m = /Overall exposure level for \S+: ([\d.]+)/.exec(sec.stdout);
      t.ok(m, `systemd-analyze security ${unit} reports an exposure level`);
      t.comment(`systemd-analyze security ${unit} (running unit): ${m?.[1]}`);
      if (unit === 'mountgate-front') t.ok(Number(m?.[1]) <= 2.0, `the front's exposure ${m?.[1]} <= 2.0`);
    }
  });

  await t.test('stop, and activation again', async (t) => {
    const stop = await ct.exec(['systemctl', 'stop', 'mountgated']);
    t.equal(stop.code, 0, 'systemctl stop mountgated');
    for (const unit of ['mountgated', 'mountgate-front']) {
      const show = await ct.exec(['systemctl', 'show', '-p', 'ActiveState', '-p', 'Result', unit]);
      t.strictSame(show.stdout.trim().split('\n').sort(), ['ActiveState=inactive', 'Result=success'],
        `${unit}: stopped cleanly (the front with its executor: PartOf=)`);
    }
    const again = await ct.asUser(user, 'mountgate run --bind "$HOME/data:/mnt:owner=1000" -- cat /mnt/file');
    t.equal(again.code, 0, `the next call activates both again${again.code ? `: ${again.stderr}` : ''}`);
    t.equal(again.stdout, 'hello\n', 'and they serve');
    const owner = await ct.exec(['stat', '-c', '%U', '/var/lib/mountgate', '/var/lib/mountgate/images']);
    t.equal(owner.stdout, 'mountgate\nmountgate\n', 'the state dir stayed the front\'s across the restart');
  });

  await t.test('a killed executor: the front follows it and both come back', async (t) => {
    const pid = (await ct.exec(['systemctl', 'show', '-p', 'MainPID', '--value', 'mountgated'])).stdout.trim();
    const kill = await ct.exec(['kill', '-KILL', pid]);
    t.equal(kill.code, 0, `SIGKILL to the executor (pid ${pid})`);
    let served: Result = { code: 1, stdout: '', stderr: '' };
    for (const until = Date.now() + 30_000; Date.now() < until;) {
      served = await ct.asUser(user, 'mountgate run --bind "$HOME/data:/mnt:owner=1000" -- cat /mnt/file');
      if (served.code === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    t.equal(served.code, 0, `a bind works again within 30 s${served.code ? `: ${served.stderr}` : ''}`);
    const state = await ct.exec(['systemctl', 'show', '-p', 'ActiveState', '--value', 'mountgated', 'mountgate-front']);
    t.equal(state.stdout.trim(), 'active\n\nactive', 'both units are active again');
  });

  await t.test('power-off leaves nothing behind', async (t) => {
    poweredOff = true;
    const clean = await ct.powerOff(90_000);
    t.ok(clean, `systemd-nspawn ended by the container's clean power-off${clean ? '' : `: ${ct.output()}`}`);
    const left = [...processTable().keys()].filter((pid) => pidNamespace(pid) === ct.leaderPidNs);
    t.strictSame(left, [], 'no process of the container is left');
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(root) || l.includes(name));
    t.strictSame(mounts, [], 'no mount of the container is left');
    const loops = [...await loopDevices()].filter((l) => !loopsBefore.has(l));
    t.strictSame(loops, [], 'no new loop device');
  });
});
