// `mountgate toolbox create|enter|list|rm`: named development containers
// (src/client/toolbox.ts) on one of your images, entered as yourself.
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { lookupAccount } from '../accounts/load.js';
import { namespaceMap, toolboxIdMap } from '../client/idmaps.js';
import { resolveImageRef } from '../client/image-ref.js';
import { MountgateError } from '../errors.js';
import { controlledIds, identityMap } from '../policy/idmap.js';
import { UsageError } from './usage.js';
import { say, withBroker } from './session.js';



/** The caller's account with subordinate ranges, or a refusal that says what is missing. */
function myAccount() {
  const uid = process.getuid!();
  const account = lookupAccount(uid);
  if (!account) throw new UsageError(`uid ${uid} has no entry in /etc/passwd`);
  if (account.subuids.length === 0 || account.subgids.length === 0) {
    throw new MountgateError('PolicyDenied', `user ${account.name} has no range in /etc/subuid or /etc/subgid; ask the administrator for one`);
  }
  return account;
}

export function register(program: Command): void {
  const toolbox = program
    .command('toolbox')
    .description('named development containers on your images, entered as yourself')
    .addHelpText('after', `
A toolbox is one of your images with a writable layer of its own, kept in
~/.local/share/mountgate/toolbox/NAME. Inside you are yourself (your uid,
your passwd and group entries, your home at the same path, your shell);
\`enter --root\` gives the container's root, for installing packages into its
layer (no sudo needed). It has its own PIDs, /proc, a minimal /dev (with
its own /dev/pts: \`tty\` names the terminal), a read-only /sys, the hostname
NAME, the host's /etc/resolv.conf and an /etc/hosts that names NAME. It runs while a shell is in it: a
second \`enter\` joins it, and when the last shell leaves, it stops.

Examples:
  mountgate toolbox create dev --image debian
  mountgate toolbox enter dev
  mountgate toolbox enter dev --root -- dpkg -i /home/me/tool.deb
  mountgate toolbox list
  mountgate toolbox rm dev`);

  toolbox
    .command('create')
    .description('make a toolbox from one of your images')
    .argument('<name>', 'its name (and hostname): letters, digits, hyphens')
    .requiredOption('--image <ref>', 'an image of yours: id, id prefix or name')
    .action(async (name: string, opts: { image: string }) => {
      const { checkToolboxName, createToolbox } = await import('../client/toolbox.js');
      checkToolboxName(name);
      myAccount();
      const { id } = await withBroker(program, async (b) => resolveImageRef(await b.listImages(), opts.image));
      createToolbox(name, { id, ref: opts.image });
      say(`toolbox ${name} created from ${opts.image}; enter it with: mountgate toolbox enter ${name}`);
    });

  toolbox
    .command('enter')
    .description('a shell (or COMMAND) in the toolbox, starting it when it is not running')
    .argument('<name>', 'the toolbox')
    .argument('[command...]', 'what to run instead of your shell (after --)')
    .option('--root', "as the container's root rather than as yourself")
    .action(async (name: string, command: string[], opts: { root?: boolean }) => {
      const { enterToolbox, groupName } = await import('../client/toolbox.js');
      const { writeMaps } = await import('../client/namespace.js');
      const account = myAccount();
      const info = userInfo();
      const me = {
        uid: account.uid,
        gid: account.gid,
        name: account.name,
        group: groupName(account.gid),
        home: account.home,
        shell: info.shell || '/bin/sh',
        uidMap: toolboxIdMap(account.uid, account.subuids),
        gidMap: toolboxIdMap(account.gid, account.subgids),
      };
      process.exitCode = await enterToolbox({
        name,
        me,
        asRoot: Boolean(opts.root),
        command,
        tty: Boolean(process.stdin.isTTY && process.stdout.isTTY),
        writeMaps,
        mounts: (box) =>
          withBroker(program, async (b) => {
            // Image id N is the host id that shows as N inside.
            const { mountFd: imageFd } = await b.mountImage(box.image, { uidMap: me.uidMap, gidMap: me.gidMap });
            let home: number;
            try {
              home = openSync(me.home, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
            } catch (err) {
              closeSync(imageFd);
              throw new UsageError(`cannot open your home ${me.home}: ${(err as Error).message}`);
            }
            try {
              // In the keep-id layout every id shows as itself: the identity map.
              const { mountFd: homeFd } = await b.bindIdmapped(home, {
                uidMap: identityMap(controlledIds(account.uid, account.subuids)),
                gidMap: identityMap(controlledIds(account.gid, account.subgids)),
              });
              return { imageFd, homeFd };
            } catch (err) {
              closeSync(imageFd);
              throw err;
            } finally {
              closeSync(home);
            }
          }),
      });
    });

  toolbox
    .command('list')
    .description('your toolboxes and whether they run')
    .option('--json', 'print [{name, image, imageRef, created, holder?}]')
    .action(async (opts: { json?: boolean }) => {
      const { listToolboxes } = await import('../client/toolbox.js');
      const boxes = listToolboxes();
      if (opts.json) {
        say(JSON.stringify(boxes));
        return;
      }
      if (boxes.length === 0) {
        say('no toolboxes (mountgate toolbox create NAME --image IMAGE makes one)');
        return;
      }
      say('NAME\tIMAGE\tSTATUS\tCREATED');
      for (const b of boxes) say(`${b.name}\t${b.imageRef}\t${b.holder ? `running (holder ${b.holder})` : 'stopped'}\t${b.created}`);
    });

  toolbox
    .command('rm')
    .description('remove a toolbox and its layer')
    .argument('<name>', 'the toolbox')
    .option('--force', 'stop it first when it runs (its shells are killed)')
    .action(async (name: string, opts: { force?: boolean }) => {
      const { removeToolbox } = await import('../client/toolbox.js');
      const { runInNamespace } = await import('../client/namespace.js');
      const account = myAccount();
      await removeToolbox(name, Boolean(opts.force), async (dir) => {
        const code = await runInNamespace({
          uidMap: namespaceMap(account.uid, account.subuids),
          gidMap: namespaceMap(account.gid, account.subgids),
          mounts: [],
          command: ['rm', '-rf', '--', dir],
          interactive: false,
        });
        if (code !== 0) throw new MountgateError('Internal', `could not remove ${dir} (rm exited ${code})`);
      });
      say(`toolbox ${name} removed`);
    });
}
