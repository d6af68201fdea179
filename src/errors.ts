// One error class per failure class. Each maps to one D-Bus error name
// (org.mountgate.Error.<Reason>) and one CLI exit code, so a refusal reads the
// same in the broker's audit line, on the bus and in the user's terminal.

export const reasons = [
  'InvalidRequest',
  'PolicyDenied',
  'NotOwner',
  'LimitExceeded',
  'NotFound',
  'Unsupported',
  'Timeout',
  'Internal',
] as const;
export type Reason = (typeof reasons)[number];

export const busErrorPrefix = 'org.mountgate.Error.';

/** CLI exit codes, documented in `mountgate --help`. */
export const exitCodes = {
  ok: 0,
  Internal: 1,
  Usage: 2,
  InvalidRequest: 3,
  PolicyDenied: 4,
  NotOwner: 5,
  LimitExceeded: 6,
  NotFound: 7,
  BrokerUnavailable: 8,
  Unsupported: 9,
  Timeout: 10,
} as const;

export class MountgateError extends Error {
  readonly reason: Reason;
  constructor(reason: Reason, message: string) {
    super(message);
    this.reason = reason;
    this.name = `${reason}Error`;
  }
  get busName(): string {
    return busErrorPrefix + this.reason;
  }
  get exitCode(): number {
    return exitCodes[this.reason];
  }
}

export class InvalidRequestError extends MountgateError {
  constructor(message: string) { super('InvalidRequest', message); }
}
export class PolicyDeniedError extends MountgateError {
  constructor(message: string) { super('PolicyDenied', message); }
}
export class NotOwnerError extends MountgateError {
  constructor(message: string) { super('NotOwner', message); }
}
export class LimitExceededError extends MountgateError {
  constructor(message: string) { super('LimitExceeded', message); }
}
export class NotFoundError extends MountgateError {
  constructor(message: string) { super('NotFound', message); }
}
export class UnsupportedError extends MountgateError {
  constructor(message: string) { super('Unsupported', message); }
}
/** A caller's fd or stream did not answer in time (e.g. a stopped FUSE server). */
export class TimeoutError extends MountgateError {
  constructor(message: string) { super('Timeout', message); }
}
export class InternalError extends MountgateError {
  constructor(message: string) { super('Internal', message); }
}

/** The client could not reach the broker at all (no bus, no owner of the name). */
export class BrokerUnavailableError extends Error {
  readonly exitCode = exitCodes.BrokerUnavailable;
  constructor(message: string) {
    super(message);
    this.name = 'BrokerUnavailableError';
  }
}

const classes: Record<Reason, new (message: string) => MountgateError> = {
  InvalidRequest: InvalidRequestError,
  PolicyDenied: PolicyDeniedError,
  NotOwner: NotOwnerError,
  LimitExceeded: LimitExceededError,
  NotFound: NotFoundError,
  Unsupported: UnsupportedError,
  Timeout: TimeoutError,
  Internal: InternalError,
};

/** Rebuilds the typed error from a bus error name, for the client. */
export function errorFromBus(name: string, message: string): MountgateError | undefined {
  if (!name.startsWith(busErrorPrefix)) return undefined;
  const reason = name.slice(busErrorPrefix.length) as Reason;
  const cls = classes[reason];
  return cls ? new cls(message) : undefined;
}
