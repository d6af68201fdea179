// The typed library API: `import { connect } from 'mountgate'`. It validates
// every request locally with the broker's own schemas (so a mistake is
// reported before anything crosses the bus), calls the broker, and returns
// mount fds that the program attaches in a mount namespace it owns.
import { closeSync, fstatSync, readSync } from 'node:fs';
import { BusMessage, CallerBus, type Message } from '../bus/caller.js';
import { busName, interfaceName, objectPath } from '../bus/names.js';
import { BrokerUnavailableError, errorFromBus, InternalError, InvalidRequestError, UnsupportedError } from '../errors.js';
import type { BindRequest, MountRequest, RemoveRequest } from '../schema/types.generated.js';
import { formatIssues } from '../schema/issues.js';
import { validateRequest } from '../schema/requests.js';

export interface ConnectOptions {
  /** D-Bus address of the broker's bus; default $MOUNTGATE_BUS_ADDRESS, else the system bus. */
  busAddress?: string;
}

export interface BrokerInfo {
  version: string;
  fileBackedErofs: boolean;
  idmappedMounts: boolean;
  fsVerity: boolean;
  overlayDataOnly: boolean;
  /** Your uid, as the broker sees it. */
  uid: number;
  /** The methods the policy lets you call (empty from a broker older than this field). */
  methods: string[];
}

export interface BindResult {
  /** A detached mount: attach it with move_mount in a mount namespace you own, then close it. */
  mountFd: number;
  info: { source?: string; uidMap: BindRequest['uidMap']; gidMap: BindRequest['gidMap']; flags: string[] };
}

export interface ExplainResult {
  method: string;
  allowed: boolean;
  checks: { ok: boolean; message: string }[];
  error?: { name: string; message: string };
  plan?: { steps: unknown[]; text: string[] };
}

export interface ImageListing {
  id: string;
  /** The name given last (the only one a broker from before several names lists). */
  name?: string;
  /** Every name you give the image, sorted (absent from a broker from before several names). */
  names?: string[];
  entries: number;
  objects: number;
  missing: number;
  bytes: number;
  added: string;
}

function checked<T>(kind: 'bind-request' | 'mount-request' | 'remove-request', request: unknown): T {
  const result = validateRequest(kind, request);
  if (!result.ok) throw new InvalidRequestError(`the ${kind} is invalid: ${formatIssues(result.issues).join('; ')}`);
  return result.value as T;
}

export class MountgateBroker {
  constructor(private readonly bus: CallerBus) {}

  private async call(member: string, signature: string, body: unknown[]): Promise<Message> {
    let reply: Message;
    try {
      reply = await this.bus.call(new BusMessage({ destination: busName, path: objectPath, interface: interfaceName, member, signature, body }));
    } catch (err) {
      const e = err as { type?: string; text?: string; message?: string };
      const typed = e.type ? errorFromBus(e.type, e.text ?? '') : undefined;
      if (typed) throw typed;
      if (e.type === 'org.freedesktop.DBus.Error.ServiceUnknown' || e.type === 'org.freedesktop.DBus.Error.NameHasNoOwner') {
        throw new BrokerUnavailableError(`no broker is running on the bus (${busName} has no owner); start mountgated`);
      }
      if (e.type === 'org.freedesktop.DBus.Error.UnknownMethod') throw new UnsupportedError(`the broker does not know ${member} (a mountgated older than this client)`);
      if (e.type === 'org.freedesktop.DBus.Error.AccessDenied') throw new BrokerUnavailableError(`the bus refused the call: ${e.text ?? ''}`);
      throw new InternalError(`${member} failed: ${e.text ?? e.message ?? String(err)}`);
    }
    return reply;
  }

  async getInfo(): Promise<BrokerInfo> {
    const reply = await this.call('GetInfo', '', []);
    const raw = reply.body[0] as Record<string, { value: unknown }>;
    const get = (k: string) => raw[k]?.value;
    return {
      version: String(get('version')),
      fileBackedErofs: Boolean(get('fileBackedErofs')),
      idmappedMounts: Boolean(get('idmappedMounts')),
      fsVerity: Boolean(get('fsVerity')),
      overlayDataOnly: Boolean(get('overlayDataOnly')),
      uid: Number(get('uid')),
      methods: Array.isArray(get('methods')) ? (get('methods') as unknown[]).map(String) : [],
    };
  }

  /**
   * An idmapped mount of the directory behind `directoryFd` (which you must
   * own, opened in the broker's mount namespace, i.e. the host's).
   */
  async bindIdmapped(directoryFd: number, request: BindRequest = {}): Promise<BindResult> {
    const req = checked<BindRequest>('bind-request', request);
    const reply = await this.call('BindIdmapped', 'hs', [directoryFd, JSON.stringify(req)]);
    const [mountFd, infoJson] = reply.body as [number, string];
    return { mountFd, info: JSON.parse(infoJson) as BindResult['info'] };
  }

  /**
   * Registers an image from a manifest held in `manifestFd` (a regular file
   * or memfd); returns its id and the digests you still have to upload.
   */
  async addImage(manifestFd: number): Promise<{ imageId: string; missing: string[] }> {
    const reply = await this.call('AddImage', 'h', [manifestFd]);
    const [imageId, count, listFd] = reply.body as [string, number, number];
    try {
      return { imageId, missing: readDigestList(listFd, count) };
    } finally {
      closeFd(listFd);
    }
  }

  /** Uploads objects written into the pipe whose read end is `streamFd` (see the interface XML for the record format). */
  async putObjects(streamFd: number): Promise<{ objects: number; bytes: number }> {
    const reply = await this.call('PutObjects', 'h', [streamFd]);
    const [objects, bytes] = reply.body as [bigint | number, bigint | number];
    return { objects: Number(objects), bytes: Number(bytes) };
  }

  /** Whether the broker's policy lets you call `method` now (GetInfo's methods; none from a broker older than that list). */
  async allows(method: string): Promise<boolean> {
    return (await this.getInfo()).methods.includes(method);
  }

  /**
   * Proves objects without naming them (see the interface XML): the records
   * in `streamFd` carry sizes and fds (or bytes), the broker hashes them and
   * holds them for your next AddImage. Returns their digests, in record order.
   */
  async proveObjects(streamFd: number): Promise<{ digests: string[]; objects: number; bytes: number }> {
    const reply = await this.call('ProveObjects', 'h', [streamFd]);
    const [listFd, objects, bytes] = reply.body as [number, bigint | number, bigint | number];
    try {
      return { digests: readDigestList(listFd, Number(objects)), objects: Number(objects), bytes: Number(bytes) };
    } finally {
      closeFd(listFd);
    }
  }

  /** A read-only composefs mount of one of your images, idmapped per `request`. */
  async mountImage(imageId: string, request: MountRequest = {}): Promise<{ mountFd: number; info: Record<string, unknown> }> {
    const req = checked<MountRequest>('mount-request', request);
    const reply = await this.call('MountImage', 'ss', [imageId, JSON.stringify(req)]);
    const [mountFd, infoJson] = reply.body as [number, string];
    return { mountFd, info: JSON.parse(infoJson) as Record<string, unknown> };
  }

  async listImages(): Promise<ImageListing[]> {
    const reply = await this.call('ListImages', '', []);
    return JSON.parse(reply.body[0] as string) as ImageListing[];
  }

  /** Drops your registration of the image, with every name you give it. */
  async removeImage(imageId: string): Promise<void> {
    // A bare id: what every broker, from before names too, takes.
    await this.call('RemoveImage', 's', [imageId]);
  }

  /** Drops one of your names; with the image's last name, your registration of it goes too. */
  async removeImageName(name: string): Promise<void> {
    const req = checked<RemoveRequest>('remove-request', { name });
    await this.call('RemoveImage', 's', [JSON.stringify(req)]);
  }

  /** What `method` would do with this request and fds; nothing is mounted. */
  async explain(method: string, request: unknown, fds: number[] = []): Promise<ExplainResult> {
    const reply = await this.call('Explain', 'ssah', [method, JSON.stringify(request), fds]);
    return JSON.parse(reply.body[0] as string) as ExplainResult;
  }

  close(): void {
    this.bus.disconnect();
  }
}

/** Connects to the broker's bus. The connection is the caller's identity: one per user. */
export async function connect(opts: ConnectOptions = {}): Promise<MountgateBroker> {
  const address = opts.busAddress ?? process.env.MOUNTGATE_BUS_ADDRESS;
  try {
    return new MountgateBroker(await CallerBus.open(address));
  } catch (err) {
    throw new BrokerUnavailableError(`cannot connect to the bus${address ? ` at ${address}` : ' (system bus)'}: ${(err as Error).message}`);
  }
}

/** Closes an fd the broker returned, ignoring one already closed. */
/** AddImage's list of missing objects: `count` raw 32-byte digests in a sealed memfd, as hex. */
export function readDigestList(fd: number, count: number): string[] {
  const size = fstatSync(fd).size;
  if (size !== count * 32) throw new InternalError(`the broker's list of digests is ${size} bytes, not ${count} digests of 32`);
  const bytes = Buffer.allocUnsafe(size);
  for (let at = 0; at < size; ) {
    const n = readSync(fd, bytes, at, size - at, at);
    if (n === 0) throw new InternalError(`the broker's list of digests ended after ${at} of ${size} bytes`);
    at += n;
  }
  const out = new Array<string>(count);
  for (let k = 0; k < count; k++) out[k] = bytes.toString('hex', k * 32, k * 32 + 32);
  return out;
}

export function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
