// The broker's methods, one declarative record each, in the shape the
// pipeline (service.ts) runs for every one of them: typed arguments (by the
// interface XML's argument names), facts, a pure decision, an optional plan,
// and the act with its reply. Nothing here identifies callers, checks
// limits, audits or sends: the pipeline does that, the same way for all.
import { InvalidRequestError, NotFoundError } from '../errors.js';
import { brokerMethods, decideBind, decideMethod, type BrokerMethod, type RuledMethod, type CallerIdentity, type SourceFacts, type UsageFacts, type Verdict } from '../policy/decide.js';
import { decideAddImage, decideMountImage, type MountGrant } from '../policy/images.js';
import { planBind, type Plan } from '../policy/plan.js';
import type { BindRequest, MountRequest, Policy, RemoveRequest } from '../schema/types.generated.js';
import { formatIssues, parseAndValidate } from '../schema/validate.js';
import type { KernelFeatures } from '../sys/features.js';
import * as sys from '../sys/syscalls.js';
import { packageVersion } from '../paths.js';
import { digestPattern } from '../store/objects.js';
import type { PlanExecutor } from './executor-client.js';
import type { FairQueue } from './fair-queue.js';
import type { FdProber } from './fd-probe.js';
import { checkManifestFd, imageLimits, type Built, type ImageService } from './images.js';
import { capText } from './reply.js';
import { dbus } from '../bus/connect.js';

/** One call, as the pipeline hands it to a method. */
export interface CallContext {
  caller: CallerIdentity;
  policy: Policy;
  /** The caller's load before this call. */
  usage: UsageFacts;
  /** Takes an fd the call carried out of the call's hands: the method owns (and closes) it from then on. */
  takeFd(fd: number): void;
}

export interface Reply {
  signature: string;
  body: unknown[];
  /** An fd in the body that the broker closes once the reply is written. */
  fd?: number;
  /** What the audit's result line records. */
  audit?: Record<string, unknown>;
}

/** Named in-arguments of a call, from the interface XML: D-Bus values, fds as fd numbers. */
export type RawArgs = Record<string, unknown>;

export interface MethodRecord<A = unknown, F = unknown, G = unknown> {
  method: BrokerMethod;
  /** Whether the policy's rule for the method and the caller's limits apply (checked before any work). */
  ruled: boolean;
  /**
   * Whether the call reads or changes the broker's store (its images,
   * objects, proofs and holds). Its answer then waits until every change
   * committed so far is on disk (BrokerDeps.durable): what it says may rest
   * on any of them, its own or another caller's (an image another call is
   * storing, an object another upload published). A call that does not
   * touch the store answers without waiting for the disk, so one user's
   * writes never hold it up.
   */
  store: boolean;
  /** The typed arguments; throws InvalidRequestError naming the argument. Reads no caller data. */
  args(raw: RawArgs): A;
  /** The same arguments from Explain's request_json and fds. */
  explainArgs(requestJson: string, fds: number[]): A;
  /** What the decision needs: registry lookups, fd probes (off the event loop), image builds (in build helpers). */
  facts(call: CallContext, args: A): Promise<F> | F;
  /** Pure. */
  decide(call: CallContext, args: A, facts: F): Verdict<G>;
  /** The mount steps, for allowed verdicts of methods that mount. */
  plan?(verdict: Verdict<G>, args: A, facts: F): Plan;
  execute(call: CallContext, args: A, facts: F, verdict: Verdict<G>, plan: Plan | undefined): Promise<Reply> | Reply;
}

export interface MethodDeps {
  images: ImageService;
  prober: FdProber;
  executor: PlanExecutor;
  /** Plans in flight to the executor, handed out round-robin between users. */
  plans: FairQueue;
  features: KernelFeatures;
}

function stringArg(raw: RawArgs, name: string): string {
  const v = raw[name];
  if (typeof v !== 'string') throw new InvalidRequestError(`argument ${name} must be a string`);
  return v;
}

function fdArg(raw: RawArgs, name: string): number {
  const v = raw[name];
  if (typeof v !== 'number') throw new InvalidRequestError(`argument ${name} must be an fd`);
  return v;
}

function jsonRequest<T>(kind: 'bind-request' | 'mount-request' | 'remove-request', name: string, text: string): T {
  const parsed = parseAndValidate(kind, text);
  if (!parsed.ok) throw new InvalidRequestError(`${name}: the ${kind.replace('-', ' ')} is invalid: ${formatIssues(parsed.issues).join('; ')}`);
  return parsed.value as T;
}

function explainObject(requestJson: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(requestJson);
  } catch (err) {
    throw new InvalidRequestError(`request_json is not valid JSON: ${capText((err as Error).message, 200)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidRequestError('request_json must be a JSON object');
  return value as Record<string, unknown>;
}

/** The attributes the plan sets on the mount, for the reply and the audit. */
const setattrFlags = (plan: Plan) => plan.steps.flatMap((s) => (s.step === 'setattr' ? s.set : []));

export function methodRecords(deps: MethodDeps): Map<BrokerMethod, MethodRecord> {
  const { images, prober, features } = deps;
  /** The executor, in the caller's turn: one user's flood of mounts waits behind its own. */
  const execute = (call: CallContext, plan: Plan, fds: number[]) => deps.plans.run(call.caller.uid, () => deps.executor.execute(plan, fds));

  const getInfo: MethodRecord<Record<string, never>, undefined> = {
    method: 'GetInfo',
    ruled: false,
    store: false,
    args: () => ({}),
    explainArgs: () => ({}),
    facts: () => undefined,
    decide: () => ({ method: 'GetInfo', allowed: true, checks: [{ ok: true, message: 'GetInfo is open to every caller' }] }),
    execute: (call) => {
      const V = dbus.Variant;
      return {
        signature: 'a{sv}',
        body: [
          {
            version: new V('s', packageVersion),
            fileBackedErofs: new V('b', features.fileBackedErofs),
            idmappedMounts: new V('b', features.idmappedMounts),
            fsVerity: new V('b', features.fsVerity),
            overlayDataOnly: new V('b', features.overlayDataOnly),
            uid: new V('u', call.caller.uid),
            methods: new V('as', brokerMethods.filter((m): m is RuledMethod => m !== 'GetInfo').filter((m) => decideMethod(m, call.caller, call.policy).allowed)),
          },
        ],
      };
    },
  };

  type BindArgs = { directory: number; request: BindRequest };
  const bindIdmapped: MethodRecord<BindArgs, SourceFacts, ReturnType<typeof decideBind>['grant']> = {
    method: 'BindIdmapped',
    ruled: true,
    store: false,
    args: (raw) => ({ directory: fdArg(raw, 'directory'), request: jsonRequest('bind-request', 'request_json', stringArg(raw, 'request_json')) }),
    explainArgs: (json, fds) => {
      if (fds[0] === undefined) throw new InvalidRequestError('explaining BindIdmapped takes the directory as fds[0]');
      return { directory: fds[0], request: jsonRequest('bind-request', 'request_json', json) };
    },
    facts: (call, args) => prober.sourceFacts(call.caller.uid, args.directory),
    decide: (call, args, source) => decideBind({ caller: call.caller, request: args.request, source, policy: call.policy, usage: call.usage }),
    plan: (verdict) => planBind(verdict.grant!),
    async execute(call, args, source, verdict, plan) {
      const { mountFd } = await execute(call, plan!, [args.directory]);
      const info = { source: source.path, uidMap: verdict.grant!.uidMap, gidMap: verdict.grant!.gidMap, flags: setattrFlags(plan!) };
      return { signature: 'hs', body: [mountFd, JSON.stringify(info)], fd: mountFd, audit: { mounted: info } };
    },
  };

  type AddArgs = { manifest: number };
  const addImage: MethodRecord<AddArgs, Built> = {
    method: 'AddImage',
    ruled: true,
    store: true,
    args: (raw) => ({ manifest: fdArg(raw, 'manifest') }),
    explainArgs: (_json, fds) => {
      if (fds[0] === undefined) throw new InvalidRequestError('explaining AddImage takes the manifest memfd as fds[0]');
      return { manifest: fds[0] };
    },
    facts(call, args) {
      checkManifestFd(args.manifest, imageLimits(call.policy).maxManifestBytes);
      return images.build(call.caller.uid, args.manifest);
    },
    decide: (call, _args, built) =>
      decideAddImage({
        caller: call.caller,
        policy: call.policy,
        usage: call.usage,
        image: images.imageFacts(built),
        // Read now, in the same turn as the registration that follows an allowed verdict.
        store: images.storeUsage(call.caller.uid, built.imageId),
        alreadyRegistered: images.registry.ownedBy(built.imageId, call.caller.uid) !== undefined,
        imageId: built.imageId,
        ...(built.keptFor ? { keptFor: images.keptFor(call.caller.uid, built.keptFor) } : {}),
      }),
    async execute(call, _args, built) {
      // Registered before anything waits, in the turn of the decision; answered once on disk.
      const { imageId, owned, durable } = images.register(call.caller.uid, built);
      const missing = await durable;
      // The list goes in a sealed memfd: no bus message is big enough for every image's.
      const listFd = sys.sealedMemfd('mountgate-missing', missing);
      const count = missing.length / 32;
      return { signature: 'suh', body: [imageId, count, listFd], fd: listFd, audit: { image: imageId, entries: owned.entries, missing: count, ...(built.keptFor ? { keptFor: built.keptFor } : {}), ...('image' in built ? {} : { built: 'remembered' }) } };
    },
  };

  type PutArgs = { stream: number; socket: boolean };
  const putObjects: MethodRecord<PutArgs, undefined> = {
    method: 'PutObjects',
    ruled: true,
    store: true,
    args(raw) {
      const stream = fdArg(raw, 'stream');
      // Every check asks the kernel about the fd itself, never a filesystem.
      const socket = sys.socketKind(stream);
      const kind = socket ? socket.domain === sys.AF_UNIX && socket.type === sys.SOCK_STREAM && !socket.listening && sys.socketConnected(stream) : sys.isPipe(stream);
      if (!kind || !sys.readableFd(stream)) throw new InvalidRequestError('the object stream must be the read end of a pipe or a connected AF_UNIX stream socket');
      return { stream, socket: socket !== undefined };
    },
    explainArgs: (_json, fds) => {
      if (fds[0] === undefined) throw new InvalidRequestError('explaining PutObjects takes the stream as fds[0]');
      return putObjects.args({ stream: fds[0] });
    },
    facts: () => undefined,
    decide: (call) => decideMethod('PutObjects', call.caller, call.policy, call.usage),
    async execute(call, args) {
      // The upload helper gets the stream; receive closes the front's copy.
      call.takeFd(args.stream);
      const { objects, bytes } = await images.receive(call.caller.uid, args.stream, args.socket);
      return { signature: 'tt', body: [objects, bytes], audit: { objects, bytes } };
    },
  };

  const proveObjects: MethodRecord<PutArgs, undefined> = {
    method: 'ProveObjects',
    ruled: true,
    store: true,
    // The same stream as PutObjects', checked the same way.
    args: (raw) => putObjects.args(raw),
    explainArgs: (_json, fds) => {
      if (fds[0] === undefined) throw new InvalidRequestError('explaining ProveObjects takes the stream as fds[0]');
      return putObjects.args({ stream: fds[0] });
    },
    facts: () => undefined,
    decide: (call) => decideMethod('ProveObjects', call.caller, call.policy, call.usage),
    async execute(call, args) {
      call.takeFd(args.stream);
      const { digests, objects, bytes } = await images.prove(call.caller.uid, args.stream, args.socket);
      // In a sealed memfd, as AddImage's missing list: a call may prove more objects than a bus message holds digests.
      const listFd = sys.sealedMemfd('mountgate-digests', digests);
      return { signature: 'htt', body: [listFd, objects, bytes], fd: listFd, audit: { objects, bytes, held: images.held.usage(call.caller.uid) } };
    },
  };

  type MountArgs = { imageId: string; request: MountRequest };
  type MountFacts = ReturnType<ImageService['mountFacts']>;
  const mountImage: MethodRecord<MountArgs, MountFacts, MountGrant> = {
    method: 'MountImage',
    ruled: true,
    store: true,
    args: (raw) => ({ imageId: stringArg(raw, 'image_id'), request: jsonRequest('mount-request', 'request_json', stringArg(raw, 'request_json')) }),
    explainArgs: (json) => {
      const w = explainObject(json);
      if (typeof w.imageId !== 'string') throw new InvalidRequestError('explain MountImage takes {"imageId": "<id>", "request": {...}}');
      return { imageId: w.imageId, request: jsonRequest('mount-request', 'request', JSON.stringify(w.request ?? {})) };
    },
    facts: (call, args) => images.mountFacts(call.caller.uid, args.imageId),
    decide: (call, args, found) =>
      decideMountImage({
        caller: call.caller,
        policy: call.policy,
        usage: call.usage,
        imageId: capText(args.imageId, 80),
        ...(found ? { image: { entries: found.owned.entries, bytes: found.owned.bytes, devices: [] } } : {}),
        missing: found?.missing ?? [],
        ...(found ? { missingCount: found.missingCount } : {}),
        request: args.request,
      }),
    plan: (verdict, args) => images.planMount(verdict.grant!, args.imageId),
    async execute(call, args, found, verdict, plan) {
      const { mountFd } = await execute(call, plan!, []);
      const info = { image: args.imageId, name: found!.owned.name, uidMap: verdict.grant!.uidMap, gidMap: verdict.grant!.gidMap, verity: features.fsVerity };
      return { signature: 'hs', body: [mountFd, JSON.stringify(info)], fd: mountFd, audit: { mounted: info } };
    },
  };

  const listImages: MethodRecord<Record<string, never>, undefined> = {
    method: 'ListImages',
    ruled: true,
    store: true,
    args: () => ({}),
    explainArgs: () => ({}),
    facts: () => undefined,
    decide: (call) => decideMethod('ListImages', call.caller, call.policy),
    execute: (call) => ({ signature: 's', body: [JSON.stringify(images.list(call.caller.uid))] }),
  };

  // A JSON request ({"imageId"} or {"name"}), or a bare id as clients from before names send (an id never starts with "{").
  const removeRequest = (text: string, argName: string): RemoveRequest => (text.startsWith('{') ? jsonRequest<RemoveRequest>('remove-request', argName, text) : { imageId: text });
  /** The image the request names, if the caller lists it. */
  type RemoveFacts = { imageId?: string };
  const removeImage: MethodRecord<RemoveRequest, RemoveFacts> = {
    method: 'RemoveImage',
    ruled: true,
    store: true,
    args: (raw) => removeRequest(stringArg(raw, 'request_json'), 'request_json'),
    explainArgs: (json) => removeRequest(json, 'request_json'),
    facts(call, args) {
      const uid = call.caller.uid;
      // A name names only a listed image; a hidden image goes with the image it is kept for, never by itself.
      const id = args.name !== undefined ? images.registry.db.named(uid, args.name) : args.imageId;
      return id !== undefined && digestPattern.test(id) && images.registry.ownedBy(id, uid)?.listed === true ? { imageId: id } : {};
    },
    decide(call, args, found) {
      const gate = decideMethod('RemoveImage', call.caller, call.policy);
      if (!gate.allowed) return gate;
      const shown = args.name !== undefined ? `named ${JSON.stringify(capText(args.name, 80))}` : capText(args.imageId ?? '', 80);
      if (found.imageId !== undefined) return { ...gate, checks: [...gate.checks, { ok: true, message: `image ${shown} is yours` }] };
      const message = `you have no image ${shown}; see ListImages (mountgate image ls)`;
      return { ...gate, allowed: false, checks: [...gate.checks, { ok: false, reason: 'NotFound', message }], error: { reason: 'NotFound', message } };
    },
    execute(call, args, found) {
      if (args.name === undefined) {
        images.remove(call.caller.uid, found.imageId!);
        return { signature: '', body: [], audit: { image: found.imageId, unregistered: true } };
      }
      const r = images.removeName(call.caller.uid, args.name);
      // Removed meanwhile by another call of the caller's: said as the decision would have.
      if (!r) throw new NotFoundError(`you have no image named ${JSON.stringify(capText(args.name, 80))}; see ListImages (mountgate image ls)`);
      return { signature: '', body: [], audit: { image: r.id, name: args.name, unregistered: r.unregistered } };
    },
  };

  const records: MethodRecord[] = [getInfo, bindIdmapped, addImage, putObjects, proveObjects, mountImage, listImages, removeImage] as MethodRecord[];
  return new Map(records.map((r) => [r.method, r]));
}
