// The Node flags and the environment of every process of the broker, written
// once: the spawns read them here, the installed units (systemd/) and the
// .deb's wrapper carry the same (test/systemd/units.test.ts compares them),
// and the tests start the executor with them (test/helpers/broker.ts).
//
// What they are for is memory: what a process keeps resident at rest and
// gives back after a big call (bench/memory.ts measures both).
// - MALLOC_ARENA_MAX=2: glibc gives each thread that allocates its own arena,
//   up to 8 per core, and an arena's freed memory rarely goes back to the
//   system; Node runs a dozen threads (libuv's pool, V8's platform workers).
//   Two arenas hold what the threads allocate at once and no more.
// - --max-semi-space-size: V8's young generation grows to 3 x 16 MiB under a
//   burst of calls and stays that big; the broker's calls allocate little
//   that lives long, so 1 MiB semi-spaces (2 in the front, which parses every
//   bus message) cost a few more scavenges and keep tens of MiB less.
// - --max-old-space-size: a ceiling on what one process may hold, so that a
//   bug or an input past the policy's limits ends that process, not the
//   machine. The build helper's is the bound on one AddImage (policy
//   images.maxEntriesPerImage and maxManifestBytes are sized for it).
// - --expose-gc (the front only): V8 collects only when the process
//   allocates, so an idle front would keep the garbage of its last big call
//   for ever; memory-return.ts collects once the front is quiet.
//
// The front's helpers (upload, build, fd probe) run a few nice levels below
// it: their work is one caller's, the front's event loop is every caller's.
// Under a flood of AddImage calls the build helpers kept the front waiting
// for a core for 40% of the time (bench/run.sh load: front main thread
// "waiting for a CPU"), and with it another user's GetInfo.
import type { ChildProcess } from 'node:child_process';
import { getPriority, setPriority } from 'node:os';

/** Environment every broker process gets (the helpers get nothing else). */
export const brokerEnv: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** Heap of one image build (build-helper.ts): a manifest at the policy's largest and its image fit; more ends the build, not the broker. */
export const buildHeapMb = 2048;

export const nodeFlags = {
  /** The privileged executor: plans, fds and its helpers' pipes, never caller data. */
  executor: ['--max-semi-space-size=1', '--max-old-space-size=256'],
  /** The front: the bus, the policy, the store database; big manifests and images stay in the build helpers. */
  front: ['--max-semi-space-size=2', '--expose-gc'],
  /** An fd prober: one stat, statfs and readlink per request. */
  prober: ['--max-semi-space-size=1', '--max-old-space-size=32'],
  /** An upload helper: hashes and writes one call's objects (buffers outside the heap). */
  upload: ['--max-old-space-size=256'],
  /** A build helper: parses one manifest at a time and writes its image; nearly all it allocates lives until the image is written. */
  build: ['--max-semi-space-size=1', `--max-old-space-size=${buildHeapMb}`],
} as const satisfies Record<string, readonly string[]>;

/** Nice levels the front's helpers run below the front. */
export const helperNice = 5;

/** Puts a helper the front just started `helperNice` levels below the front (gone already: nothing to do). */
export function belowFront(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    setPriority(child.pid, Math.min(19, getPriority() + helperNice));
  } catch {
    // exited already: its exit is handled where it was started
  }
}
