// The mountgate demo: a private bus with the production bus policy, the
// broker with its built-in default policy, and a fresh unprivileged user who
// mounts a directory it owns, idmapped, inside its own user namespace.
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createWorld } from '../test/helpers/world.js';
import { runAs } from '../test/helpers/run-as.js';
import { cliPath } from '../test/helpers/paths.js';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (s: string) => console.log(`\n${bold(`== ${s}`)}`);
const indent = (s: string) => s.trimEnd().split('\n').map((l) => `   ${l}`).join('\n');

const world = await createWorld({ users: { demo: {} } });
try {
  const user = world.users.demo!;
  const project = world.dirs.demo!;
  const target = join(world.scratch, 'container-view');
  mkdirSync(target);
  chownSync(target, user.uid, user.gid);
  writeFileSync(join(project, 'README'), 'my project\n');
  chownSync(join(project, 'README'), user.uid, user.gid);
  const mg = (args: string[]) => runAs(user, [process.execPath, cliPath, ...args], { busAddress: world.bus.address });

  step('Setup');
  console.log(`   private bus: ${world.bus.address} (production bus policy included)`);
  console.log(`   broker pid ${world.broker.pid}, built-in default policy`);
  console.log(`   user ${user.name}: uid ${user.uid}, subuids ${user.subuid.start}..${user.subuid.start + user.subuid.count - 1}`);
  console.log(`   directory it owns: ${project}`);

  step(`${user.name}$ mountgate info`);
  console.log(indent((await mg(['info'])).stdout));

  step(`${user.name}$ mountgate explain - --source ${project}   (the verdict, nothing mounted)`);
  console.log(indent((await runAs(user, [process.execPath, cliPath, 'explain', '-', '--source', project], { busAddress: world.bus.address, input: '{}' })).stdout));

  const inside = `id; ls -ln ${target}; setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'echo written by uid 1000 inside > ${target}/from-container.txt'; grep ' ${target} ' /proc/self/mountinfo`;
  step(`${user.name}$ mountgate run --bind ${project}:${target}:owner=1000 -- sh -c '...'`);
  const run = await mg(['run', '--bind', `${project}:${target}:owner=1000`, '--', 'sh', '-c', inside]);
  console.log(indent(run.stdout + run.stderr));
  console.log('   -> inside its namespace the user is root; its files appear owned by uid 1000 (shifted),');
  console.log('      and the mount is idmapped, nosuid, nodev.');

  step('On the host, the file written by uid 1000 inside belongs to the user:');
  console.log(indent(execFileSync('ls', ['-ln', project], { encoding: 'utf8' })));
  console.log(indent(readFileSync(join(project, 'from-container.txt'), 'utf8')));

  step(`${user.name}$ mountgate run --bind /etc:${target} -- true   (a directory it does not own)`);
  const denied = await mg(['run', '--bind', `/etc:${target}`, '--', 'true']);
  console.log(indent(`${denied.stderr}exit status ${denied.code}`));

  // A composefs image: the broker writes the EROFS metadata image itself,
  // keeps the file contents in its content-addressed store, and mounts it.
  const app = join(world.scratch, 'app');
  for (const [path, content] of [['etc/os-release', 'NAME="mountgate demo"\n'], ['srv/hello.txt', 'hello from a composefs image\n'], ['srv/big.bin', 'x'.repeat(200_000)]] as const) {
    mkdirSync(join(app, path, '..'), { recursive: true });
    writeFileSync(join(app, path), content);
  }
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, app]);
  step(`${user.name}$ mountgate image add ${app} --name demo-app`);
  const added = await mg(['image', 'add', app, '--name', 'demo-app']);
  console.log(indent(added.stdout + added.stderr));
  step(`${user.name}$ mountgate image ls`);
  console.log(indent((await mg(['image', 'ls'])).stdout));
  const view = join(world.scratch, 'image-view');
  mkdirSync(view);
  chownSync(view, user.uid, user.gid);
  step(`${user.name}$ mountgate run --image demo-app:${view} -- sh -c '...'`);
  const imageRun = await mg(['run', '--image', `demo-app:${view}`, '--', 'sh', '-c', `cat ${view}/srv/hello.txt; ls -ln ${view}/srv; grep ' ${view} ' /proc/self/mountinfo | cut -d' ' -f5,6,9,10; touch ${view}/x 2>&1 | sed 's/^/   /'`]);
  console.log(indent(imageRun.stdout + imageRun.stderr));
  console.log('   -> a read-only composefs mount (EROFS, idmapped, under an overlay whose data layer is the store).');
  await mg(['image', 'rm', 'demo-app']);

  step('Broker audit log (one line per decision):');
  for (const line of world.broker.audit.filter((l) => l.event === 'decision')) {
    console.log(indent(`${line.method} uid=${(line.caller as { uid: number }).uid} allowed=${line.allowed}${line.reason ? ` ${line.reason}: ${line.message}` : ''}`));
  }
  if (run.code !== 0 || denied.code !== 5 || added.code !== 0 || imageRun.code !== 0) {
    console.error('\ndemo: unexpected result');
    process.exitCode = 1;
  } else console.log(`\n${bold('Demo complete.')} Tearing down the broker, the bus and the user.`);
} finally {
  await world.teardown();
}
