// The bus-facing part of mountgated: receives method calls, identifies the
// caller from the bus, validates, asks the pure policy for a verdict, hands a
// granted plan to the executor, replies (with fds), and audits every decision.
import { closeSync } from 'node:fs';
import { dbus, type MessageBus } from '../bus/connect.js';
import { brokerInterface, introspectionXml } from '../bus/interface.js';
import { busName, interfaceName, objectPath } from '../bus/names.js';
import { InternalError, InvalidRequestError, LimitExceededError, MountgateError, PolicyDeniedError } from '../errors.js';
import { brokerMethods, decideBind, decideExplain, type BrokerMethod, type CallerIdentity, type Verdict } from '../policy/decide.js';
import { describePlan, planBind, type Plan } from '../policy/plan.js';
import { packageVersion } from '../paths.js';
import { formatIssues, parseAndValidate } from '../schema/validate.js';
import type { KernelFeatures } from '../sys/features.js';
import type { UserNamespaceCache } from '../sys/userns.js';
import type { AuditSink } from './audit.js';
import { executePlan } from './execute.js';
import { identityOf, sourceFacts } from './facts.js';
import type { PolicyStore } from './policy-store.js';
import { UsageTracker } from './usage.js';
import type { ImageService } from './images.js';

type Message = InstanceType<typeof dbus.Message>;

/** In-argument signatures of the methods, from the interface XML (the wire contract). */
const signatures: Record<string, string> = Object.fromEntries([...brokerInterface].map(([name, spec]) => [name, spec.in]));

export interface BrokerDeps {
  bus: MessageBus;
  images: ImageService;
  policy: PolicyStore;
  userns: UserNamespaceCache;
  features: KernelFeatures;
  audit: AuditSink;
}

/** The complete types of a signature, in order: "ssah" -> ["s", "s", "ah"]. */
function splitSignature(signature: string): string[] {
  const out: string[] = [];
  let at = 0;
  const one = (): void => {
    const c = signature[at++];
    if (c === 'a') return one();
    const close = c === '(' ? ')' : c === '{' ? '}' : undefined;
    if (close) {
      while (signature[at] !== close) one();
      at++;
    }
  };
  while (at < signature.length) {
    const start = at;
    one();
    out.push(signature.slice(start, at));
  }
  return out;
}

/** Fd numbers in a call's body, at the positions its signature (from the interface XML) gives 'h' or 'ah'. */
function fdsOf(member: string, body: unknown[]): number[] {
  return splitSignature(signatures[member] ?? '').flatMap((type, k) => {
    const value = body[k];
    if (type === 'h') return typeof value === 'number' ? [value] : [];
    if (type === 'ah' && Array.isArray(value)) return value.filter((x): x is number => typeof x === 'number');
    return [];
  });
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed: nothing to release
  }
}

/** Calls of one bus connection being worked on at once; more are refused before any work. */
const maxInFlightPerConnection = 64;
/** How long the bus daemon may take to tell who a caller is. */
const identifyTimeoutMs = 10_000;

export class BrokerService {
  private readonly usage = new UsageTracker();
  private readonly inFlight = new Map<string, number>();
  constructor(private readonly deps: BrokerDeps) {}

  /** Installs the dispatcher; it must be the bus's first method handler. */
  attach(): void {
    this.deps.bus.addMethodHandler((msg: Message) => this.dispatch(msg));
  }

  private dispatch(msg: Message): boolean {
    if (msg.path !== objectPath) return false;
    if (msg.interface === 'org.freedesktop.DBus.Introspectable' && msg.member === 'Introspect') {
      this.deps.bus.send(dbus.Message.newMethodReturn(msg, 's', [introspectionXml]));
      return true;
    }
    if (msg.interface === 'org.freedesktop.DBus.Peer' && msg.member === 'Ping') {
      this.deps.bus.send(dbus.Message.newMethodReturn(msg, '', []));
      return true;
    }
    if (msg.interface !== undefined && msg.interface !== interfaceName) return false;
    const member = msg.member;
    if (!(member in signatures)) return false;
    // Take ownership of every fd the message carried (the patched dbus-next
    // closes fds nobody takes once the handler returns); they are closed when
    // the request is done, whatever happens.
    const carried = (msg as unknown as { takeFds(): number[] }).takeFds();
    if ((msg.signature ?? '') !== signatures[member]) {
      carried.forEach(closeQuietly);
      this.replyError(msg, new InvalidRequestError(`${member} takes arguments of signature "${signatures[member]}", got "${msg.signature ?? ''}"`));
      return true;
    }
    // Bounded per connection before anything else, so that a flood of calls
    // (each holding its fds until answered) costs the broker a fixed amount.
    const sender = msg.sender;
    const busy = this.inFlight.get(sender) ?? 0;
    if (busy >= maxInFlightPerConnection) {
      carried.forEach(closeQuietly);
      this.replyError(msg, new LimitExceededError(`too many calls in flight on this connection (${busy}); wait for the answers before sending more`));
      return true;
    }
    this.inFlight.set(sender, busy + 1);
    void this.handle(msg, member, fdsOf(member, msg.body ?? []), carried).finally(() => {
      const n = (this.inFlight.get(sender) ?? 1) - 1;
      if (n === 0) this.inFlight.delete(sender);
      else this.inFlight.set(sender, n);
    });
    return true;
  }

  private async handle(msg: Message, member: string, fds: number[], carried: number[]): Promise<void> {
    let caller: CallerIdentity | undefined;
    try {
      caller = await this.identify(msg.sender);
      switch (member) {
        case 'GetInfo':
          return this.getInfo(msg, caller);
        case 'BindIdmapped':
          return await this.bindIdmapped(msg, caller, fds[0]!, msg.body[1] as string);
        case 'Explain':
          return this.explain(msg, caller, msg.body[0] as string, msg.body[1] as string, fds);
        default:
          return await this.imageMethod(msg, member, caller, fds, carried);
      }
    } catch (err) {
      const error = err instanceof MountgateError ? err : new InternalError('the broker failed to carry out the request; see its log');
      if (!(err instanceof MountgateError)) this.deps.audit({ event: 'error', method: member, caller: this.auditCaller(caller, msg), message: String((err as Error)?.stack ?? err) });
      this.replyError(msg, error);
    } finally {
      carried.forEach(closeQuietly);
    }
  }

  /** Who is calling, from the bus daemon: never from the message's claims. */
  private async identify(sender: string): Promise<CallerIdentity> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new PolicyDeniedError(`the bus did not say who you are within ${identifyTimeoutMs / 1000} s, so the request is denied`)), identifyTimeoutMs);
    });
    const call = this.deps.bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'GetConnectionCredentials',
        signature: 's',
        body: [sender],
      }),
    );
    let reply;
    try {
      reply = await Promise.race([call, timeout]);
    } catch (err) {
      if (err instanceof MountgateError) throw err;
      // The caller left, or the daemon refused: either way it cannot be identified.
      throw new PolicyDeniedError(`the bus could not say who you are (${(err as { type?: string }).type ?? (err as Error).message}), so the request is denied`);
    } finally {
      clearTimeout(timer);
    }
    const creds = (reply?.body?.[0] ?? {}) as Record<string, { value: unknown }>;
    const uid = creds.UnixUserID?.value;
    const pid = creds.ProcessID?.value;
    if (typeof uid !== 'number' || typeof pid !== 'number') {
      throw new PolicyDeniedError('the bus could not tell who you are (no uid or pid for your connection), so the request is denied');
    }
    return identityOf(uid, pid);
  }

  private auditCaller(caller: CallerIdentity | undefined, msg: Message) {
    return caller ? { uid: caller.uid, pid: caller.pid, name: caller.account?.name, bus: msg.sender } : { uid: -1, pid: -1, bus: msg.sender };
  }

  private auditVerdict(msg: Message, caller: CallerIdentity, verdict: Verdict, extra: Record<string, unknown> = {}): void {
    this.deps.audit({
      event: 'decision',
      method: verdict.method,
      caller: this.auditCaller(caller, msg),
      allowed: verdict.allowed,
      ...(verdict.error ? { reason: verdict.error.reason, message: verdict.error.message } : {}),
      checks: verdict.checks.map((c) => `${c.ok ? 'ok' : 'FAIL'}: ${c.message}`),
      ...extra,
    });
  }

  private getInfo(msg: Message, caller: CallerIdentity): void {
    const V = dbus.Variant;
    const f = this.deps.features;
    this.deps.bus.send(
      dbus.Message.newMethodReturn(msg, 'a{sv}', [
        {
          version: new V('s', packageVersion),
          fileBackedErofs: new V('b', f.fileBackedErofs),
          idmappedMounts: new V('b', f.idmappedMounts),
          fsVerity: new V('b', f.fsVerity),
          overlayDataOnly: new V('b', f.overlayDataOnly),
          uid: new V('u', caller.uid),
        },
      ]),
    );
  }

  /** Validates the request text; the verdict for a malformed request is an InvalidRequest error. */
  private bindVerdict(caller: CallerIdentity, requestJson: string, fd: number | undefined) {
    const parsed = parseAndValidate('bind-request', requestJson);
    if (!parsed.ok) {
      return { verdict: undefined, invalid: `the bind request is invalid: ${formatIssues(parsed.issues).join('; ')}` };
    }
    if (fd === undefined) return { verdict: undefined, invalid: 'no directory fd was passed' };
    const verdict = decideBind({
      caller,
      request: parsed.value,
      source: sourceFacts(fd),
      policy: this.deps.policy.policy,
      usage: this.usage.snapshot(caller.uid),
    });
    return { verdict, invalid: undefined };
  }

  private async bindIdmapped(msg: Message, caller: CallerIdentity, fd: number, requestJson: string): Promise<void> {
    const { verdict, invalid } = this.bindVerdict(caller, requestJson, fd);
    if (!verdict) {
      this.deps.audit({ event: 'decision', method: 'BindIdmapped', caller: this.auditCaller(caller, msg), allowed: false, reason: 'InvalidRequest', message: invalid });
      throw new InvalidRequestError(invalid!);
    }
    if (!verdict.allowed || !verdict.grant) {
      this.auditVerdict(msg, caller, verdict);
      throw errorOf(verdict);
    }
    const done = this.usage.begin(caller.uid);
    try {
      const plan = planBind(verdict.grant);
      const { mountFd } = await executePlan(plan, [fd], this.deps.userns);
      const info = { source: sourceFacts(fd).path, uidMap: verdict.grant.uidMap, gidMap: verdict.grant.gidMap, flags: plan.steps.flatMap((s) => (s.step === 'setattr' ? s.set : [])) };
      this.auditVerdict(msg, caller, verdict, { mounted: info });
      this.replyWithFd(msg, 'hs', [mountFd, JSON.stringify(info)], mountFd);
    } finally {
      done();
    }
  }

  private explain(msg: Message, caller: CallerIdentity, method: string, requestJson: string, fds: number[]): void {
    const gate = decideExplain(caller, this.deps.policy.policy, this.usage.snapshot(caller.uid));
    if (!gate.allowed) {
      this.auditVerdict(msg, caller, gate);
      throw errorOf(gate);
    }
    if (!(brokerMethods as readonly string[]).includes(method)) {
      throw new InvalidRequestError(`unknown method "${method}"; the broker's methods are ${brokerMethods.join(', ')}`);
    }
    let result: ExplainResult;
    if (method === 'BindIdmapped') {
      const { verdict, invalid } = this.bindVerdict(caller, requestJson, fds[0]);
      result = verdict
        ? explainResult(verdict, verdict.grant && verdict.allowed ? planBind(verdict.grant) : undefined)
        : { method, allowed: false, checks: [{ ok: false, message: invalid! }], error: { name: 'org.mountgate.Error.InvalidRequest', message: invalid! } };
    } else if (method === 'MountImage') {
      result = this.explainMount(caller, requestJson);
    } else if (method === 'GetInfo') {
      result = { method, allowed: true, checks: [{ ok: true, message: 'GetInfo is open to every caller' }] };
    } else {
      result = { method, allowed: false, checks: [{ ok: false, message: `${method} is not available in this broker yet` }], error: { name: 'org.mountgate.Error.Unsupported', message: `${method} is not available in this broker yet` } };
    }
    this.deps.audit({ event: 'decision', method: 'Explain', caller: this.auditCaller(caller, msg), allowed: true, message: `explained ${method}: ${result.allowed ? 'would be allowed' : 'would be denied'}` });
    this.deps.bus.send(dbus.Message.newMethodReturn(msg, 's', [JSON.stringify(result)]));
  }

  private async imageMethod(msg: Message, member: string, caller: CallerIdentity, fds: number[], carried: number[]): Promise<void> {
    const images = this.deps.images;
    const audit = (verdict: Verdict, extra: Record<string, unknown> = {}) => this.auditVerdict(msg, caller, verdict, extra);
    const usage = this.usage.snapshot(caller.uid);
    const reply = (signature: string, body: unknown[]) => this.deps.bus.send(dbus.Message.newMethodReturn(msg, signature, body));
    switch (member) {
      case 'AddImage': {
        const done = this.usage.begin(caller.uid);
        try {
          const { imageId, missing } = await images.addImage(caller, usage, fds[0]!, audit);
          reply('sas', [imageId, missing]);
        } finally {
          done();
        }
        return;
      }
      case 'PutObjects': {
        const done = this.usage.begin(caller.uid);
        try {
          const taken = (fd: number) => carried.splice(carried.indexOf(fd), 1);
          const { objects, bytes } = await images.putObjects(caller, usage, fds[0]!, taken, audit);
          reply('tt', [objects, bytes]);
        } finally {
          done();
        }
        return;
      }
      case 'MountImage': {
        const done = this.usage.begin(caller.uid);
        try {
          const { mountFd, info } = await images.mountImage(caller, usage, msg.body[0] as string, msg.body[1] as string, audit);
          this.replyWithFd(msg, 'hs', [mountFd, JSON.stringify(info)], mountFd);
        } finally {
          done();
        }
        return;
      }
      case 'ListImages':
        reply('s', [images.listImages(caller, audit)]);
        return;
      case 'RemoveImage':
        images.removeImage(caller, msg.body[0] as string, audit);
        reply('', []);
        return;
    }
  }

  /** Explain('MountImage', '{"imageId": ID, "request": MOUNT-REQUEST}'). */
  private explainMount(caller: CallerIdentity, requestJson: string): ExplainResult {
    const invalid = (message: string): ExplainResult => ({ method: 'MountImage', allowed: false, checks: [{ ok: false, message }], error: { name: 'org.mountgate.Error.InvalidRequest', message } });
    let wrapper: { imageId?: unknown; request?: unknown };
    try {
      wrapper = JSON.parse(requestJson) as typeof wrapper;
    } catch (err) {
      return invalid(`the request is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof wrapper !== 'object' || wrapper === null || typeof wrapper.imageId !== 'string') return invalid('explain MountImage takes {"imageId": "<id>", "request": {...}}');
    const parsed = parseAndValidate('mount-request', JSON.stringify(wrapper.request ?? {}));
    if (!parsed.ok) return invalid(`the mount request is invalid: ${formatIssues(parsed.issues).join('; ')}`);
    const { verdict, plan } = this.deps.images.planMount(caller, this.usage.snapshot(caller.uid), wrapper.imageId, parsed.value);
    return explainResult(verdict, plan);
  }

  private replyError(msg: Message, err: MountgateError): void {
    // dbus-next's types declare newError(msg: string, ...); it takes the call message.
    this.deps.bus.send(dbus.Message.newError(msg as unknown as string, err.busName, busSafe(err.message)));
  }

  /** Sends a reply carrying an fd, and closes the broker's copy once the reply has left. */
  private replyWithFd(msg: Message, signature: string, body: unknown[], fd: number): void {
    // The patched dbus-next resolves send() once the message and its fds are
    // written to the socket; closing earlier could send a different file.
    const sent = this.deps.bus.send(dbus.Message.newMethodReturn(msg, signature, body));
    sent.finally(() => closeQuietly(fd)).catch(() => undefined);
  }
}

/**
 * A D-Bus string may not contain NUL: a message that echoes a caller's bytes
 * (a path with a NUL in it) would make the bus daemon drop the broker's
 * connection. Control characters are shown escaped instead.
 */
export function busSafe(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export interface ExplainResult {
  method: string;
  allowed: boolean;
  checks: { ok: boolean; message: string }[];
  error?: { name: string; message: string };
  plan?: { steps: Plan['steps']; text: string[] };
}

function explainResult(verdict: Verdict, plan: Plan | undefined): ExplainResult {
  return {
    method: verdict.method,
    allowed: verdict.allowed,
    checks: verdict.checks.map((c) => ({ ok: c.ok, message: c.message })),
    ...(verdict.error ? { error: { name: `org.mountgate.Error.${verdict.error.reason}`, message: verdict.error.message } } : {}),
    ...(plan ? { plan: { steps: plan.steps, text: describePlan(plan) } } : {}),
  };
}

function errorOf(verdict: Verdict): MountgateError {
  const e = verdict.error!;
  return new MountgateError(e.reason, e.message);
}

export { busName };
export type { BrokerMethod };
