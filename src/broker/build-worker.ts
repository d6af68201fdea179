// Worker thread entry of ImageBuilder: reads the manifest from its sealed
// memfd, builds one image and posts it back
// (the image bytes are transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads';
import { MountgateError } from '../errors.js';
import { buildImage, readManifestFd, type BuildLimits } from './image-builder.js';

try {
  const { fd, limits } = workerData as { fd: number; limits: BuildLimits };
  const built = buildImage(readManifestFd(fd, limits.maxBytes), limits);
  // Transfer only a buffer the image owns whole (a small Buffer may sit in a shared pool).
  const whole = built.image.byteOffset === 0 && built.image.byteLength === built.image.buffer.byteLength;
  const image = whole ? built.image : new Uint8Array(built.image);
  parentPort!.postMessage({ ok: true, built: { ...built, image } }, [image.buffer as ArrayBuffer]);
} catch (err) {
  const e = err as Error;
  parentPort!.postMessage(err instanceof MountgateError ? { ok: false, reason: err.reason, message: e.message } : { ok: false, message: e.message });
}
