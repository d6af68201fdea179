// A build helper: a child process of the front (from a pool started on
// demand, build-helpers.ts) that builds images, one at a time. For each
// request frame {"type": "build", "limits"} on its channel (fd 3) with the
// caller's sealed manifest memfd, it reads the manifest by position, builds
// the image (image-builder.ts) and answers {"type": "built", "ok": true}
// with three sealed memfds: the build's facts as JSON (BuildResult, a few
// hundred bytes whatever the image), its objects' packed records
// (object-list.ts) and the image bytes; or {"ok": false, "reason",
// "message"}. The manifest and everything made
// from it live only here, so the front's memory never holds them, and a
// helper that built something big is let go: its memory returns to the
// system with it. Its heap cap (node-flags.ts) bounds one build; past it V8
// aborts the process, and the front answers LimitExceeded.
//   node build-helper.js       the channel on fd 3; exits when the front closes it
import { closeSync } from 'node:fs';
import { MountgateError } from '../errors.js';
import { sealedMemfd } from '../sys/syscalls.js';
import { Channel, type Frame } from './channel.js';
import { buildImage, readManifestFd, type BuildLimits, type BuildResult } from './image-builder.js';

/** The most of a refusal's message sent to the front (which caps its reply at 4096 characters). */
const maxMessageChars = 64 * 1024;

const channel = new Channel(3);
channel.on('close', () => process.exit(0));
channel.on('frame', (frame: Frame, fds: number[]) => {
  const [manifest, ...extra] = fds;
  for (const fd of extra) closeSync(fd);
  if (frame.type !== 'build' || manifest === undefined) process.exit(2);
  const limits = frame.limits as BuildLimits;
  let reply: Frame;
  const out: number[] = [];
  try {
    const { image, objects, ...rest } = buildImage(readManifestFd(manifest, limits.maxBytes), limits);
    const facts: BuildResult = { ...rest, objects: objects.count };
    // One by one: those made before a failure are closed (a refusal carries none).
    out.push(sealedMemfd('mountgate-built-facts', Buffer.from(JSON.stringify(facts))));
    out.push(sealedMemfd('mountgate-built-objects', objects.records));
    out.push(sealedMemfd('mountgate-built-image', image));
    reply = { type: 'built', ok: true };
  } catch (err) {
    for (const fd of out.splice(0)) closeSync(fd);
    // A refusal may echo the manifest (a 100 MB key): the channel carries frames of at most 1 MiB, and the front caps what it replies far below this.
    const message = (err as Error).message.slice(0, maxMessageChars);
    reply = err instanceof MountgateError ? { type: 'built', ok: false, reason: err.reason, message } : { type: 'built', ok: false, message };
  } finally {
    closeSync(manifest);
  }
  channel.send(reply, out).then(
    () => out.forEach((fd) => closeSync(fd)),
    () => process.exit(0),
  );
});
