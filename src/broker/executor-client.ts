// The front's handle on the executor: sends a plan with the caller fds it
// names over the private channel and waits for the mount fd. An executor
// failure becomes the error class the caller should see.
import { PolicyDeniedError, UnsupportedError } from '../errors.js';
import type { Plan } from '../policy/plan.js';
import type { Channel, Frame } from './channel.js';

export interface PlanExecutor {
  /** Carries out `plan` with `fds` (the caller's, by the plan's fd numbers); resolves with a detached mount fd the front owns. */
  execute(plan: Plan, fds: number[]): Promise<{ mountFd: number }>;
}

export class ExecutorClient implements PlanExecutor {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (fd: number) => void; reject: (err: Error) => void }>();

  constructor(private readonly channel: Channel) {
    channel.on('frame', (frame: Frame, fds: number[]) => {
      const w = typeof frame.id === 'number' ? this.waiting.get(frame.id) : undefined;
      if (!w) return;
      this.waiting.delete(frame.id as number);
      if (frame.ok === true && fds.length === 1) w.resolve(fds[0]!);
      else w.reject(executorError(String(frame.code ?? ''), String(frame.message ?? 'no reason given')));
    });
    channel.on('close', () => {
      for (const w of this.waiting.values()) w.reject(new Error('the executor went away'));
      this.waiting.clear();
    });
  }

  async execute(plan: Plan, fds: number[]): Promise<{ mountFd: number }> {
    const id = this.next++;
    const result = new Promise<number>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    await this.channel.send({ type: 'execute', id, plan }, fds);
    return { mountFd: await result };
  }
}

function executorError(code: string, message: string): Error {
  // The kernel refuses a non-recursive clone in the locked namespace when
  // locked mounts lie below the directory: that is the caller's to hear.
  if (code === 'Lock:EINVAL') return new PolicyDeniedError('the directory has a mount below it (the kernel refused to clone it without uncovering what that mount hides); bind a directory with no mounts below it');
  // The filesystem does not take an idmap (a FUSE server that did not opt in, for one).
  if (code === 'mount_setattr:EINVAL') return new UnsupportedError("the directory's filesystem cannot be idmapped (the kernel refused MOUNT_ATTR_IDMAP); FUSE filesystems allow it only when their server opts in");
  return new Error(`the executor failed: ${code}: ${message}`);
}
