// The bus-facing part of mountgated. Every method call goes through one
// pipeline, whatever the method:
//   identify -> bound (the policy's rule and the caller's limits, before any
//   work) -> validate (typed arguments) -> facts -> decide (pure) -> audit ->
//   execute -> reply
// Explain runs the same record of the method it explains up to decide (and
// plan). Each step's failure is a MountgateError, audited and answered the
// same way for every method; the fds a call carried are closed when it ends,
// whatever happens, unless the method took them.
import { closeSync } from 'node:fs';
import { AccountCache } from '../accounts/load.js';
import { dbus, type MessageBus } from '../bus/connect.js';
import { brokerInterface, introspectionXml } from '../bus/interface.js';
import { interfaceName, objectPath } from '../bus/names.js';
import { InternalError, InvalidRequestError, LimitExceededError, MountgateError, PolicyDeniedError } from '../errors.js';
import { brokerMethods, limitChecks, methodChecks, verdictOf, type BrokerMethod, type CallerIdentity, type Verdict } from '../policy/decide.js';
import { describePlan, type Plan } from '../policy/plan.js';
import type { AuditRecord, AuditSink } from './audit.js';
import { identityOf } from './facts.js';
import type { MethodRecord, RawArgs, Reply, CallContext } from './methods.js';
import type { PolicyStore } from './policy-store.js';
import { busSafe, capText, maxReplyBytes, replySize } from './reply.js';
import * as sys from '../sys/syscalls.js';
import { UsageTracker } from './usage.js';

type Message = InstanceType<typeof dbus.Message>;

export interface BrokerDeps {
  bus: MessageBus;
  policy: PolicyStore;
  methods: Map<BrokerMethod, MethodRecord>;
  audit: AuditSink;
  /** The account files, as they are at each call (default: the system's). */
  accounts?: AccountCache;
  /**
   * Resolves once every change to the broker's state committed so far is on
   * disk (the store's durable()): the reply of every call that touches the
   * store (MethodRecord.store) waits for it, so that nothing a caller was
   * told is lost in a crash. Default: nothing to wait for.
   */
  durable?: () => Promise<void>;
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
/** The first wait for the daemon's answer before it is asked again, doubled each time up to the second. */
const firstIdentifyWaitMs = 250;
const maxIdentifyWaitMs = 2000;
/** Connections whose credentials are remembered (names are never reused, so an old entry is only memory). */
const maxCachedConnections = 4096;

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

function refusal(verdict: Verdict): MountgateError {
  return new MountgateError(verdict.error!.reason, verdict.error!.message);
}

export class BrokerService {
  private readonly usage = new UsageTracker();
  private readonly inFlight = new Map<string, number>();
  /** The bus daemon's answer per unique connection name, oldest first. */
  private readonly credentials = new Map<string, Promise<{ uid: number; pid: number }>>();
  private readonly accounts: AccountCache;
  constructor(private readonly deps: BrokerDeps) {
    this.accounts = deps.accounts ?? new AccountCache();
  }

  /** Installs the dispatcher; it must be the bus's first method handler. */
  attach(): void {
    this.deps.bus.addMethodHandler((msg: Message) => this.dispatch(msg));
  }

  private dispatch(msg: Message): boolean {
    if (msg.path !== objectPath) return false;
    if (msg.interface === 'org.freedesktop.DBus.Introspectable' && msg.member === 'Introspect') {
      this.send(msg, dbus.Message.newMethodReturn(msg, 's', [introspectionXml]));
      return true;
    }
    if (msg.interface === 'org.freedesktop.DBus.Peer' && msg.member === 'Ping') {
      this.send(msg, dbus.Message.newMethodReturn(msg, '', []));
      return true;
    }
    if (msg.interface !== undefined && msg.interface !== interfaceName) return false;
    const member = msg.member;
    const spec = member === undefined ? undefined : brokerInterface.get(member);
    if (!spec) return false;
    // Take ownership of every fd the message carried (the patched dbus-next
    // closes fds nobody takes once the handler returns); they are closed when
    // the call is done, whatever happens, unless a method took one.
    const carried = (msg as unknown as { takeFds(): number[] }).takeFds();
    // No helper this process starts (a prober, a build or upload helper) may inherit a caller's fd.
    carried.forEach(sys.setCloexec);
    if ((msg.signature ?? '') !== spec.in) {
      carried.forEach(closeQuietly);
      this.replyError(msg, new InvalidRequestError(`${member} takes arguments of signature "${spec.in}", got "${capText(msg.signature ?? '', 64)}"`));
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
    const raw: RawArgs = Object.fromEntries(spec.inArgs.map((a, k) => [a.name, (msg.body ?? [])[k]]));
    void this.run(msg, member as BrokerMethod, raw, carried).finally(() => {
      const n = (this.inFlight.get(sender) ?? 1) - 1;
      if (n === 0) this.inFlight.delete(sender);
      else this.inFlight.set(sender, n);
    });
    return true;
  }

  /** The pipeline. */
  private async run(msg: Message, method: BrokerMethod, raw: RawArgs, carried: number[]): Promise<void> {
    let caller: CallerIdentity | undefined;
    let done: (() => void) | undefined;
    const audit = (record: AuditRecord) => this.deps.audit({ ...record, caller: this.auditCaller(caller, msg) });
    const record = this.deps.methods.get(method);
    /** Its answer, a refusal after work too, waits for the disk (MethodRecord.store; Explain and unknown calls do). */
    const waitsForDisk = record?.store !== false;
    try {
      caller = await this.identify(msg.sender);
      const policy = this.deps.policy.policy;
      const usage = this.usage.snapshot(caller.uid);
      const ruled = method === 'Explain' || record?.ruled === true;
      if (ruled) {
        // Bound: may this caller call this method at all, and now? Before any work.
        const gate = verdictOf(method, [...methodChecks(method as Exclude<BrokerMethod, 'GetInfo'>, caller, policy), ...limitChecks(policy, usage)]);
        if (!gate.allowed) throw refusal(gate);
        done = this.usage.begin(caller.uid);
      }
      const call: CallContext = {
        caller,
        policy,
        usage,
        takeFd: (fd) => {
          const at = carried.indexOf(fd);
          if (at >= 0) carried.splice(at, 1);
        },
      };
      if (method === 'Explain') {
        const result = await this.explain(call, raw);
        audit({ event: 'decision', method: 'Explain', allowed: true, message: `explained ${result.method}: ${result.allowed ? 'would be allowed' : 'would be denied'}` });
        this.reply(msg, { signature: 's', body: [JSON.stringify(result)] });
        return;
      }
      const r = record!;
      const args = r.args(raw);
      const facts = await r.facts(call, args);
      const verdict = r.decide(call, args, facts);
      const plan = verdict.allowed && r.plan ? r.plan(verdict, args, facts) : undefined;
      if (r.ruled || !verdict.allowed) audit({
        event: 'decision',
        method,
        allowed: verdict.allowed,
        ...(verdict.error ? { reason: verdict.error.reason, message: verdict.error.message } : {}),
        checks: verdict.checks.map((c) => `${c.ok ? 'ok' : 'FAIL'}: ${c.message}`),
        ...(plan ? { plan: describePlan(plan) } : {}),
      });
      if (!verdict.allowed) {
        this.replyError(msg, refusal(verdict));
        return;
      }
      const reply = await r.execute(call, args, facts, verdict, plan);
      try {
        if (waitsForDisk) await this.durable();
      } catch (err) {
        if (reply.fd !== undefined) closeQuietly(reply.fd);
        throw err;
      }
      if (reply.audit) audit({ event: 'result', method, allowed: true, ...reply.audit });
      this.reply(msg, reply);
    } catch (err) {
      const error = err instanceof MountgateError ? err : new InternalError('the broker failed to carry out the request; see its log');
      if (err instanceof MountgateError) audit({ event: 'decision', method, allowed: false, reason: err.reason, message: err.message });
      else audit({ event: 'error', method, message: String((err as Error)?.stack ?? err) });
      // A refusal may follow work already committed (a PutObjects cut off mid-way keeps what it proved): on disk first too.
      if (waitsForDisk) await this.durable().catch((e: Error) => audit({ event: 'error', method, message: `the broker's state could not be made durable: ${e.message}` }));
      this.replyError(msg, error);
    } finally {
      done?.();
      carried.forEach(closeQuietly);
    }
  }

  /** Explain(method, request_json, fds): the method's own record, up to its decision and plan. */
  private async explain(call: CallContext, raw: RawArgs): Promise<ExplainResult> {
    const method = raw.method as string;
    const record = (brokerMethods as readonly string[]).includes(method) ? this.deps.methods.get(method as BrokerMethod) : undefined;
    if (!record) throw new InvalidRequestError(`unknown method "${capText(method, 64)}"; the broker's methods are ${brokerMethods.join(', ')}`);
    let args: unknown;
    try {
      args = record.explainArgs(raw.request_json as string, (raw.fds as number[] | undefined) ?? []);
    } catch (err) {
      if (!(err instanceof InvalidRequestError)) throw err;
      return { method, allowed: false, checks: [{ ok: false, message: err.message }], error: { name: err.busName, message: err.message } };
    }
    const facts = await record.facts(call, args);
    const verdict = record.decide(call, args, facts);
    return explainResult(verdict, verdict.allowed && record.plan ? record.plan(verdict, args, facts) : undefined);
  }

  /**
   * Who is calling, from the bus daemon: never from the message's claims. A
   * connection's uid and pid are fixed when it connects and its unique name
   * is never reused on the bus, so the daemon is asked once per connection;
   * the account (groups, subordinate ids) is as the files are at this call.
   */
  private async identify(sender: string): Promise<CallerIdentity> {
    let creds = this.credentials.get(sender);
    if (!creds) {
      creds = this.askCredentials(sender);
      this.credentials.set(sender, creds);
      creds.catch(() => this.credentials.delete(sender));
      if (this.credentials.size > maxCachedConnections) this.credentials.delete(this.credentials.keys().next().value!);
    }
    const { uid, pid } = await creds;
    return identityOf(uid, pid, this.accounts);
  }

  /**
   * GetConnectionCredentials, asked again while no answer comes: the daemon
   * silently drops a reply of its own to the broker while the broker's queue
   * at the daemon is full (its security check for every message it sends,
   * the "destination has a full message queue" one, covers its own replies
   * too), which one user's burst of calls carrying fds does. Asked once, such
   * a caller was denied after the whole deadline, and so would be any other
   * user who connected during the burst.
   */
  private async askCredentials(sender: string): Promise<{ uid: number; pid: number }> {
    const deadline = Date.now() + identifyTimeoutMs;
    const asked: number[] = [];
    const handlers = (this.deps.bus as unknown as { _methodReturnHandlers?: Record<number, unknown> })._methodReturnHandlers;
    let reply;
    try {
      const answers: Promise<Message | null>[] = [];
      for (let wait = firstIdentifyWaitMs; ; wait = Math.min(wait * 2, maxIdentifyWaitMs)) {
        const msg = new dbus.Message({
          destination: 'org.freedesktop.DBus',
          path: '/org/freedesktop/DBus',
          interface: 'org.freedesktop.DBus',
          member: 'GetConnectionCredentials',
          signature: 's',
          body: [sender],
        });
        const answer = this.deps.bus.call(msg);
        // An answer that fails after another came is nobody's concern.
        answer.catch(() => undefined);
        answers.push(answer);
        asked.push(msg.serial!);
        const left = deadline - Date.now();
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), Math.max(0, Math.min(wait, left)))));
        try {
          // Whichever answer comes first: an earlier one may have been only slow.
          reply = await Promise.race([...answers, timeout]);
        } catch (err) {
          // The caller left, or the daemon refused: either way it cannot be identified.
          throw new PolicyDeniedError(`the bus could not say who you are (${capText(String((err as { type?: string }).type ?? (err as Error).message), 200)}), so the request is denied`);
        } finally {
          clearTimeout(timer);
        }
        if (reply) break;
        if (Date.now() >= deadline) throw new PolicyDeniedError(`the bus did not say who you are within ${identifyTimeoutMs / 1000} s, so the request is denied`);
      }
    } finally {
      // The calls still unanswered (their replies were dropped, or come too late): their handlers go.
      if (handlers) for (const serial of asked) delete handlers[serial];
    }
    const creds = (reply?.body?.[0] ?? {}) as Record<string, { value: unknown }>;
    const uid = creds.UnixUserID?.value;
    const pid = creds.ProcessID?.value;
    if (typeof uid !== 'number' || typeof pid !== 'number') {
      throw new PolicyDeniedError('the bus could not tell who you are (no uid or pid for your connection), so the request is denied');
    }
    return { uid, pid };
  }

  private auditCaller(caller: CallerIdentity | undefined, msg: Message) {
    return caller ? { uid: caller.uid, pid: caller.pid, name: caller.account?.name, bus: msg.sender } : { uid: -1, pid: -1, bus: msg.sender };
  }

  private durable(): Promise<void> {
    return this.deps.durable?.() ?? Promise.resolve();
  }

  /** Sends a reply; one carrying an fd closes the broker's copy once the reply has left. */
  private reply(msg: Message, reply: Reply): void {
    const size = replySize(reply.body);
    if (size > maxReplyBytes) {
      if (reply.fd !== undefined) closeQuietly(reply.fd);
      this.deps.audit({ event: 'error', method: msg.member, caller: { uid: -1, pid: -1, bus: msg.sender }, message: `a reply of about ${size} bytes was not sent` });
      this.replyError(msg, new InternalError(`the reply would be about ${size} bytes, more than the broker sends (${maxReplyBytes}); narrow the request`));
      return;
    }
    // The patched dbus-next resolves send() once the message and its fds are
    // written to the socket; closing earlier could send a different file.
    const sent = this.send(msg, dbus.Message.newMethodReturn(msg, reply.signature, reply.body));
    if (reply.fd !== undefined) {
      const fd = reply.fd;
      void sent.finally(() => closeQuietly(fd));
    }
  }

  private replyError(msg: Message, err: MountgateError): void {
    // dbus-next's types declare newError(msg: string, ...); it takes the call message.
    void this.send(msg, dbus.Message.newError(msg as unknown as string, err.busName, capText(busSafe(err.message))));
  }

  /** No failure to send one reply may reach the connection or the process. */
  private send(call: Message, reply: Message): Promise<void> {
    try {
      return Promise.resolve(this.deps.bus.send(reply) as unknown as Promise<void>).catch((err: Error) => {
        this.deps.audit({ event: 'error', method: call.member, message: `a reply could not be sent: ${capText(err.message, 500)}` });
      });
    } catch (err) {
      this.deps.audit({ event: 'error', method: call.member, message: `a reply could not be sent: ${capText((err as Error).message, 500)}` });
      return Promise.resolve();
    }
  }
}

export { busSafe };
