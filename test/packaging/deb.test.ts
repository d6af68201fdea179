// packaging/build-deb.sh builds a complete Debian package: the files, their
// modes and owners, the control data, and a program that runs from the
// package's own production node_modules. Takes about 25 s (npm ci --omit=dev
// into the stage, native addons rebuilt). Uses the dist/ already built
// (test/run.sh builds first), so the script runs with --no-build.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { writeDumpImage } from '../../src/composefs/convert.js';
import { validate } from '../../src/schema/validate.js';
import { brokerEnv, nodeFlags } from '../../src/broker/node-flags.js';
import { builtDeb } from '../helpers/deb.js';
import { defaultImageLimits, defaultPolicy } from '../../src/policy/default.js';

const run = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  version: string; dependencies: Record<string, string>; devDependencies: Record<string, string>;
};

const work = mkdtempSync(join(tmpdir(), 'mountgate-deb-test.'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

let built: { code?: number; stdout: string; stderr: string };
let arch = '';
let deb = '';
/** path in the package ("/usr/bin/mountgate") -> mode, owner and a symlink's target, from `dpkg-deb -c`. */
const entries = new Map<string, { mode: string; owner: string; target?: string }>();

// The build compiles native addons (minutes on 2 cores, shared with installed.test.ts).
t.setTimeout(25 * 60_000);
t.before(async () => {
  const shared = await builtDeb();
  built = { code: shared.code, stdout: shared.stdout, stderr: shared.stderr };
  arch = (await run('dpkg', ['--print-architecture'])).stdout.trim();
  deb = join(shared.dir, `mountgate_${pkg.version}_${arch}.deb`);
  if (!statSync(deb, { throwIfNoEntry: false })) return;
  // "-rwxr-xr-x root/root 74 2025-01-01 00:00 ./usr/bin/mountgate"
  const listing = (await run('dpkg-deb', ['-c', deb], { maxBuffer: 64 << 20 })).stdout.trim().split('\n');
  for (const line of listing) {
    const m = /^(\S+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s+\.(\/.*?)(?: -> (.*))?$/.exec(line);
    if (!m) throw new Error(`unparsable dpkg-deb -c line: ${line}`);
    entries.set(m[3]!.replace(/\/$/, '') || '/', { mode: m[1]!, owner: m[2]!, ...(m[4] ? { target: m[4] } : {}) });
  }
});

const fileText = async (path: string): Promise<string> =>
  (await run('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -xOf - ".$2"', 'sh', deb, path], { maxBuffer: 64 << 20 })).stdout;
const field = async (name: string): Promise<string> =>
  (await run('dpkg-deb', ['-f', deb, name])).stdout.trim();

t.test('the script builds the package', async (t) => {
  t.equal(built.code ?? 0, 0, `build-deb.sh exits 0${built.code ? `: ${built.stderr}` : ''}`);
  t.equal(String(built.stdout).trim().split('\n').at(-1), deb, 'prints the path of the .deb');
  t.ok(statSync(deb, { throwIfNoEntry: false })?.isFile(), 'the .deb exists');
});

t.test('files and modes', async (t) => {
  const expected: Array<[string, string]> = [
    ['/usr/bin/mountgate', 'lrwxrwxrwx'],
    ['/usr/lib/mountgate/bin/mountgate', '-rwxr-xr-x'],
    ['/usr/bin/mountgated', '-rwxr-xr-x'],
    ['/usr/lib/mountgate/package.json', '-rw-r--r--'],
    ['/usr/lib/mountgate/dist/src/cli/main.js', '-rw-r--r--'],
    ['/usr/lib/mountgate/dist/src/broker/main.js', '-rw-r--r--'],
    ['/usr/lib/mountgate/schemas/policy.schema.json', '-rw-r--r--'],
    ['/usr/lib/mountgate/node_modules/dbus-next/package.json', '-rw-r--r--'],
    ['/usr/lib/systemd/system/mountgated.service', '-rw-r--r--'],
    ['/usr/lib/systemd/system/mountgated.socket', '-rw-r--r--'],
    ['/usr/lib/systemd/system/mountgate-front.service', '-rw-r--r--'],
    ['/usr/share/dbus-1/system.d/org.mountgate.Broker1.conf', '-rw-r--r--'],
    ['/usr/share/dbus-1/system-services/org.mountgate.Broker1.service', '-rw-r--r--'],
    ['/etc/mountgate/policy.json', '-rw-r--r--'],
    ['/usr/share/doc/mountgate/copyright', '-rw-r--r--'],
    ['/usr/lib/mountgate', 'drwxr-xr-x'],
    ['/etc/mountgate', 'drwxr-xr-x'],
  ];
  for (const [path, mode] of expected) {
    t.equal(entries.get(path)?.mode, mode, `${path} ${mode}`);
  }
  const notRoot = [...entries].filter(([, e]) => e.owner !== 'root/root').map(([p]) => p);
  t.strictSame(notRoot, [], 'everything is owned by root/root');
  const writable = [...entries].filter(([, e]) => !e.mode.startsWith('l') && /^.{5}w|^.{8}w/.test(e.mode)).map(([p]) => p);
  t.strictSame(writable, [], 'nothing is group- or world-writable');
  const setid = [...entries].filter(([, e]) => /[sS]/.test(e.mode)).map(([p]) => p);
  t.strictSame(setid, [], 'no setuid/setgid file');
  const dist = [...entries.keys()].filter((p) => p.startsWith('/usr/lib/mountgate/dist/'));
  t.strictSame(dist.filter((p) => /\.(map|d\.ts)$/.test(p)), [], 'dist: JavaScript only, no maps or declarations');
  t.ok([...entries.keys()].some((p) => /^\/usr\/lib\/mountgate\/node_modules\/usocket\/build\/Release\/.+\.node$/.test(p)),
    'native addon usocket is built');
  for (const dev of Object.keys(pkg.devDependencies)) {
    t.notOk(entries.has(`/usr/lib/mountgate/node_modules/${dev}`), `no devDependency ${dev}`);
  }
  for (const dep of Object.keys(pkg.dependencies)) {
    t.ok(entries.has(`/usr/lib/mountgate/node_modules/${dep}`), `dependency ${dep}`);
  }
  t.notOk([...entries.keys()].some((p) => p.startsWith('/usr/lib/mountgate/src/') || p.startsWith('/usr/lib/mountgate/test/')),
    'no TypeScript sources or tests');
});

t.test('installed files are the tree\'s files', async (t) => {
  for (const [installed, source] of [
    ['/usr/lib/systemd/system/mountgated.service', 'systemd/mountgated.service'],
    ['/usr/lib/systemd/system/mountgated.socket', 'systemd/mountgated.socket'],
    ['/usr/lib/systemd/system/mountgate-front.service', 'systemd/mountgate-front.service'],
    ['/usr/share/dbus-1/system.d/org.mountgate.Broker1.conf', 'systemd/org.mountgate.Broker1.conf'],
    ['/usr/share/dbus-1/system-services/org.mountgate.Broker1.service', 'systemd/org.mountgate.Broker1.service'],
    ['/usr/lib/mountgate/package.json', 'package.json'],
  ]) {
    t.equal(await fileText(installed!), readFileSync(join(repoRoot, source!), 'utf8'), `${installed} = ${source}`);
  }
  // The installed command is the tree's entry: the same file, only run by the package's node.
  t.equal(entries.get('/usr/bin/mountgate')?.target, '../lib/mountgate/bin/mountgate', '/usr/bin/mountgate is a symlink to the library\'s bin/mountgate');
  const entry = readFileSync(join(repoRoot, 'bin/mountgate'), 'utf8');
  t.match(entry, /^#!\/usr\/bin\/env -S node --max-semi-space-size=1\n/, "bin/mountgate's #! line (node's flags)");
  t.equal(await fileText('/usr/lib/mountgate/bin/mountgate'), entry.replace(/^#!\/usr\/bin\/env -S node /, '#!/usr/bin/env -S /usr/bin/node '),
    'the library\'s bin/mountgate is bin/mountgate, with /usr/bin/node for node');
  const exports = Object.entries(brokerEnv).map(([k, v]) => `export ${k}=${v}\n`).join('');
  t.equal(await fileText('/usr/bin/mountgated'),
    `#!/bin/sh\n${exports}exec /usr/bin/node ${nodeFlags.executor.join(' ')} /usr/lib/mountgate/dist/src/broker/main.js "$@"\n`,
    'broker wrapper: the executor\'s environment and Node flags (src/broker/node-flags.ts)');
});

t.test('the packaged policy is valid, and is the built-in default', async (t) => {
  const text = await fileText('/etc/mountgate/policy.json');
  const r = validate('policy', JSON.parse(text));
  t.ok(r.ok, `validates against schemas/policy.schema.json${r.ok ? '' : `: ${JSON.stringify(r.issues)}`}`);
  t.strictSame(JSON.parse(text), { ...defaultPolicy, images: { ...defaultImageLimits } },
    'the default the broker enforces without the file, with its image quotas spelled out');
  t.ok(Object.keys(JSON.parse(text).methods).includes('MountImage'), 'image methods are in it');
});

t.test('control data', async (t) => {
  t.equal(await field('Package'), 'mountgate');
  t.equal(await field('Version'), pkg.version, 'version from package.json');
  t.equal(await field('Architecture'), arch, 'architecture of the build machine (native addons)');
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  t.equal(await field('Depends'),
    `nodejs (>= ${nodeMajor}~), nodejs (<< ${nodeMajor + 1}~), default-dbus-system-bus | dbus-system-bus, passwd, util-linux`,
    'Depends: nodejs of the build major (nan addon ABI), a system bus, useradd (the front\'s user), unshare (the lock helper)');
  t.match(await field('Recommends'), /\buidmap\b/);
  const ctl = join(work, 'control');
  await run('dpkg-deb', ['-e', deb, ctl]);
  t.equal(readFileSync(join(ctl, 'conffiles'), 'utf8'), '/etc/mountgate/policy.json\n', 'policy.json is a conffile');
  for (const script of ['postinst', 'prerm', 'postrm']) {
    t.equal(statSync(join(ctl, script)).mode & 0o777, 0o755, `${script} is 0755`);
    const syntax = await run('sh', ['-n', join(ctl, script)]).catch((e) => e);
    t.equal(syntax.code ?? 0, 0, `${script} is valid sh`);
  }
  t.match(readFileSync(join(ctl, 'postinst'), 'utf8'), /systemctl daemon-reload/, 'postinst reloads systemd');
  t.match(readFileSync(join(ctl, 'postinst'), 'utf8'), /useradd --system .* mountgate/, "postinst creates the front's system user");
  t.match(readFileSync(join(ctl, 'postinst'), 'utf8'), /ReloadConfig|reload dbus/, 'postinst reloads the bus');
});

t.test('the packaged program runs from its own node_modules', async (t) => {
  // Unpacked elsewhere, so the wrappers' absolute paths do not apply; run
  // what they exec. Proves no runtime import needs a devDependency and the
  // native addons load (the broker imports koffi at start).
  const tree = join(work, 'tree');
  await run('dpkg-deb', ['-x', deb, tree]);
  const lib = join(tree, 'usr/lib/mountgate');
  for (const [entry, file] of [['cli', 'bin/mountgate'], ['broker', 'dist/src/broker/main.js']] as const) {
    const r = await run(process.execPath, [join(lib, file), '--version']).catch((e) => e);
    t.equal(r.code ?? 0, 0, `${entry} --version exits 0${r.code ? `: ${r.stderr}` : ''}`);
    t.equal(String(r.stdout).trim(), pkg.version, `${entry} --version prints ${pkg.version}`);
  }
  // The short `image build` path, from the package's bin/mountgate: the image of a small dump.
  const dump = join(work, 'small.dump');
  writeFileSync(dump, '/ 4096 40755 2 0 0 0 0.0 - - -\n/hello 5 100644 1 0 0 0 0.0 - hello -\n');
  const built = await run(process.execPath, [join(lib, 'bin/mountgate'), 'image', 'build', '--from-dump', dump, '-o', join(work, 'small.cfs')]).catch((e) => e);
  t.equal(built.code ?? 0, 0, `image build --from-dump exits 0${built.code ? `: ${built.stderr}` : ''}`);
  t.ok(readFileSync(join(work, 'small.cfs')).equals(writeDumpImage(readFileSync(dump))), 'and writes the image the tree writes');
  const r = await run(process.execPath, ['-e', `require(${JSON.stringify(join(lib, 'node_modules/usocket'))})`]).catch((e) => e);
  t.equal(r.code ?? 0, 0, 'usocket (native, nan) loads');
});
