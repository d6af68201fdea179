// Upload helpers started ahead of need: a Node process takes a few hundred
// milliseconds to start and load its modules, so when an AddImage answers
// that objects are missing (a PutObjects is about to come) the front starts a
// spare helper, and PutObjects takes it already waiting. Each helper still
// serves exactly one call and exits. The call's stream fd travels to it over a private socketpair
// (SCM_RIGHTS, the channel the executor uses too): sending it touches
// nothing of the caller's file, and the front reads none of it. A spare
// nobody took within `spareIdleMs` is let go, so a broker at rest holds none.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';
import { socketpair } from '../sys/syscalls.js';
import { Channel } from './channel.js';
import { brokerEnv, nodeFlags, belowFront } from './node-flags.js';

const helperPath = new URL('./upload-helper.js', import.meta.url).pathname;

/** How long a spare waits for a call before it is let go (a client sends PutObjects right after AddImage's answer). */
export const spareIdleMs = 3000;

export interface UploadHelper {
  child: ChildProcess;
  /** Hands the helper its call: the stream fd (the front closes its copy once this resolves) and how to read it. */
  start(streamFd: number, call: { prefix: string; socket: boolean }): Promise<void>;
}

export class UploadHelpers {
  private spare: { helper: UploadHelper; timer: NodeJS.Timeout } | undefined;
  private closed = false;

  /** `args`: the helper's fixed arguments (store tmp dir, idle deadline, --verity). */
  constructor(private readonly args: string[]) {}

  /** A helper for one call: the spare if there is one, else one started now. */
  take(): UploadHelper {
    const spare = this.spare;
    this.spare = undefined;
    if (spare) clearTimeout(spare.timer);
    const helper = spare && spare.helper.child.exitCode === null && spare.helper.child.signalCode === null ? spare.helper : this.startHelper();
    if (spare && helper !== spare.helper) spare.helper.child.kill('SIGKILL');
    return helper;
  }

  /** Has a spare ready for the next `spareIdleMs` (a PutObjects is expected). */
  prepare(): void {
    if (this.closed) return;
    const expire = (helper: UploadHelper) =>
      setTimeout(() => {
        if (this.spare?.helper !== helper) return;
        this.spare = undefined;
        helper.child.kill('SIGKILL');
      }, spareIdleMs).unref();
    if (this.spare) {
      clearTimeout(this.spare.timer);
      this.spare.timer = expire(this.spare.helper);
      return;
    }
    const helper = this.startHelper();
    this.spare = { helper, timer: expire(helper) };
    helper.child.once('exit', () => {
      if (this.spare?.helper === helper) {
        clearTimeout(this.spare.timer);
        this.spare = undefined;
      }
    });
  }

  private startHelper(): UploadHelper {
    const [ours, theirs] = socketpair();
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...nodeFlags.upload, helperPath, ...this.args], { stdio: ['pipe', 'pipe', 'inherit', theirs], env: { ...brokerEnv } });
      belowFront(child);
    } catch (err) {
      closeSync(ours);
      throw err;
    } finally {
      closeSync(theirs);
    }
    const channel = new Channel(ours);
    channel.on('error', () => undefined);
    child.once('exit', () => channel.close());
    child.stdin!.on('error', () => undefined);
    return {
      child,
      start: (streamFd, call) => channel.send({ type: 'call', prefix: call.prefix, kind: call.socket ? 'socket' : 'pipe' }, [streamFd]),
    };
  }

  /** Lets the spare go (the front is stopping). */
  close(): void {
    this.closed = true;
    if (this.spare) {
      clearTimeout(this.spare.timer);
      this.spare.helper.child.kill('SIGKILL');
      this.spare = undefined;
    }
  }
}
