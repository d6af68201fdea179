// The front's handle on the executor: sends a plan with the caller fds it
// names over the private channel and waits for the mount fd, and asks it
// about the mount an fd is on (its mount table is the host's). An executor
// failure becomes the error class the caller should see.
import { PolicyDeniedError, UnsupportedError } from '../errors.js';
import type { Plan } from '../policy/plan.js';
import type { MountFacts } from '../sys/mountinfo.js';
import type { Channel, Frame } from './channel.js';

export interface PlanExecutor {
  /** Carries out `plan` with `fds` (the caller's, by the plan's fd numbers); resolves with a detached mount fd the front owns. */
  execute(plan: Plan, fds: number[]): Promise<{ mountFd: number }>;
}

export class ExecutorClient implements PlanExecutor {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (reply: { frame: Frame; fds: number[] }) => void; reject: (err: Error) => void }>();

  constructor(private readonly channel: Channel) {
    channel.on('frame', (frame: Frame, fds: number[]) => {
      const w = typeof frame.id === 'number' ? this.waiting.get(frame.id) : undefined;
      if (!w) return;
      this.waiting.delete(frame.id as number);
      if (frame.ok === true) w.resolve({ frame, fds });
      else w.reject(executorError(String(frame.code ?? ''), String(frame.message ?? 'no reason given')));
    });
    channel.on('close', () => {
      for (const w of this.waiting.values()) w.reject(new Error('the executor went away'));
      this.waiting.clear();
    });
  }

  private async ask(frame: Frame, fds: number[] = []): Promise<{ frame: Frame; fds: number[] }> {
    const id = this.next++;
    const result = new Promise<{ frame: Frame; fds: number[] }>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    await this.channel.send({ ...frame, id }, fds);
    return result;
  }

  async execute(plan: Plan, fds: number[]): Promise<{ mountFd: number }> {
    const reply = await this.ask({ type: 'execute', plan }, fds);
    if (reply.fds.length !== 1) throw new Error(`the executor answered with ${reply.fds.length} fds, not one mount`);
    return { mountFd: reply.fds[0]! };
  }

  /** The mount with id `mountId` (and the mounts below `path` on it) in the executor's mount namespace. */
  async mountFacts(mountId: number, path: string | undefined): Promise<MountFacts> {
    const { frame } = await this.ask({ type: 'mount-facts', mountId, ...(path === undefined ? {} : { path }) });
    const f = frame.facts as MountFacts | undefined;
    if (!f || typeof f.inNamespace !== 'boolean' || !Array.isArray(f.options) || !Array.isArray(f.below)) throw new Error('the executor sent malformed mount facts');
    return f;
  }
}

function executorError(code: string, message: string): Error {
  // The kernel refuses a non-recursive clone in the locked namespace when
  // locked mounts lie below the directory: that is the caller's to hear.
  if (code === 'Lock:EINVAL') return new PolicyDeniedError('the directory has a mount below it (the kernel refused to clone it without uncovering what that mount hides); bind a directory with no mounts below it');
  // The filesystem does not take an idmap (a FUSE server that did not opt in, for one).
  if (code === 'mount_setattr:EINVAL') return new UnsupportedError("the directory's filesystem cannot be idmapped (the kernel refused MOUNT_ATTR_IDMAP); FUSE filesystems allow it only when their server opts in");
  // A plan the front granted and the executor refuses (checkPlan: what it holds to whatever the front says).
  if (code === 'BadPlan') return new PolicyDeniedError(`the executor refused the mount: ${message}`);
  return new Error(`the executor failed: ${code}: ${message}`);
}
