// `run -it`: the command runs on a new pseudo-terminal (opened with
// node-pty), and this process, outside the namespace, relays the user's
// terminal to it: keystrokes in (the user's terminal in raw mode), screen
// out, window size changes passed on. The attach helper makes the terminal
// the command's controlling one (its `tty` step).
import { closeSync, constants as fsConstants, openSync, write } from 'node:fs';
import { createRequire } from 'node:module';
import { ReadStream } from 'node:tty';
import { ptyPeer, setCloexec } from '../sys/syscalls.js';

const require = createRequire(import.meta.url);

/** node-pty's native half: a pty pair, and the window size of its master. */
interface PtyNative {
  open(cols: number, rows: number): { master: number; slave: number; pty: string };
  resize(fd: number, cols: number, rows: number): void;
}

export interface Terminal {
  /** The command's end, given to it as fds 0-2. */
  slave: number;
  /** Closes this process's copy of the slave once the command holds it. */
  closeSlave(): void;
  /** Relays until the command has exited and its last output is shown; resolves with its status. */
  relay(exited: Promise<number>): Promise<number>;
  close(): void;
}

/** A pty of the devpts instance whose ptmx is `ptmx`: the master opened non-blocking (as node-pty opens its own), the slave from it. */
function openPtyOf(ptmx: string): { master: number; slave: number } {
  const master = openSync(ptmx, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK);
  try {
    return { master, slave: ptyPeer(master) };
  } catch (err) {
    closeSync(master);
    throw err;
  }
}

/** How long the last output may take to arrive after the command exited (a background job may hold the terminal open). */
const drainMs = 200;

/**
 * A new pty, relayed to this process's terminal. With `ptmx` (a devpts
 * instance's ptmx, e.g. a container's /proc/PID/root/dev/pts/ptmx) the pty is
 * one of that instance, so that inside the container the terminal has a name
 * (\`tty\` prints /dev/pts/N); without, one of the host's (node-pty).
 */
export function openTerminal(ptmx?: string): Terminal {
  const pty = (require('node-pty') as { native: PtyNative }).native;
  const size = () => ({ cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 });
  const { master, slave } = ptmx === undefined ? pty.open(size().cols, size().rows) : openPtyOf(ptmx);
  if (ptmx !== undefined) pty.resize(master, size().cols, size().rows);
  setCloexec(master); // only this process reads the screen
  let slaveOpen = true;
  let screen: ReadStream | undefined;
  const input = process.stdin;
  const pending: Buffer[] = [];
  let writing = false;
  // The master is non-blocking: a write the terminal cannot take yet is retried.
  const flush = (): void => {
    const chunk = pending.shift();
    if (!chunk) {
      writing = false;
      return;
    }
    writing = true;
    write(master, chunk, (err, n) => {
      if (err && (err as NodeJS.ErrnoException).code === 'EAGAIN') {
        pending.unshift(chunk);
        setTimeout(flush, 5);
        return;
      }
      if (!err && n < chunk.length) pending.unshift(chunk.subarray(n));
      flush();
    });
  };
  const onInput = (data: Buffer) => {
    pending.push(data);
    if (!writing) flush();
  };
  const onResize = () => pty.resize(master, size().cols, size().rows);
  let closed = false;
  return {
    slave,
    closeSlave() {
      if (slaveOpen) closeSync(slave);
      slaveOpen = false;
    },
    async relay(exited) {
      const out = new ReadStream(master);
      screen = out;
      // The screen ends when every holder of the slave has closed it (EIO on Linux).
      const drained = new Promise<void>((resolve) => {
        out.once('close', resolve).once('end', resolve).on('error', () => resolve());
      });
      out.on('data', (d: Buffer) => process.stdout.write(d));
      if (input.isTTY) input.setRawMode(true);
      input.on('data', onInput);
      process.stdout.on('resize', onResize);
      const code = await exited;
      await Promise.race([drained, new Promise((resolve) => setTimeout(resolve, drainMs).unref())]);
      return code;
    },
    close() {
      if (closed) return;
      closed = true;
      this.closeSlave();
      process.stdout.off('resize', onResize);
      input.off('data', onInput);
      if (input.isTTY) input.setRawMode(false);
      input.pause();
      if (screen) screen.destroy();
      else closeSync(master);
    },
  };
}
