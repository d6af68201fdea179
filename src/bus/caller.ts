// A bus connection for a program that only calls methods (the client): dbus-
// next's connection layer, patched at install (framing, fd passing, EXTERNAL
// auth; see patches/), with the little of its MessageBus a caller needs:
// Hello, serials, matching replies to calls. dbus-next's MessageBus also
// serves objects and builds introspection XML, and loading it is a third of
// the client's start; the broker, which serves, uses it (connect.ts).
import { createRequire } from 'node:module';
import { EventEmitter } from 'node:events';
import type { Message as MessageType } from 'dbus-next';

const require = createRequire(import.meta.url);
const createConnection = require('dbus-next/lib/connection.js') as (opts: { busAddress: string; negotiateUnixFd: boolean }) => Connection;
const { Message } = require('dbus-next/lib/message-type.js') as { Message: typeof MessageType };
const { MessageType: Types } = require('dbus-next/lib/constants.js') as { MessageType: { METHOD_RETURN: number; ERROR: number } };

export type Message = MessageType & { replySerial?: number; errorName?: string; takeFds(): number[]; _closeFds(): void };
export { Message as BusMessage };

interface Connection extends EventEmitter {
  stream: EventEmitter & { fd?: unknown; destroy(): void };
  message(msg: MessageType): void;
  end(): void;
}

/** An error reply, shaped like dbus-next's DBusError (type: the error name, text: its message). */
export class BusCallError extends Error {
  constructor(
    readonly type: string,
    readonly text: string,
  ) {
    super(text);
    this.name = 'BusCallError';
  }
}

const systemBusAddress = 'unix:path=/var/run/dbus/system_bus_socket';

// Fds that arrive with bus messages are made close-on-exec. The syscall
// module (koffi) loads while the first calls are on the wire; until it has,
// received fds wait in `unmarked`, and no reply carrying fds is handed out
// before they are marked, so no process this one starts can inherit one.
let syscalls: typeof import('../sys/syscalls.js') | undefined;
let syscallsLoading: Promise<unknown> | undefined;
const unmarked: number[] = [];
function markCloexec(fds: number[]): void {
  if (syscalls) fds.forEach(syscalls.setCloexec);
  else unmarked.push(...fds);
}
function loadSyscalls(): Promise<unknown> {
  syscallsLoading ??= import('../sys/syscalls.js').then((m) => {
    syscalls = m;
    // A short call may have closed its bus socket before koffi loaded: an fd
    // closed meanwhile can no longer be inherited, so EBADF here is no error.
    for (const fd of unmarked.splice(0)) {
      try {
        m.setCloexec(fd);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EBADF') throw err;
      }
    }
  });
  return syscallsLoading;
}

interface Waiting {
  resolve(reply: Message): void;
  reject(err: Error): void;
}

export class CallerBus {
  private serial = 1;
  private readonly pending = new Map<number, Waiting>();
  private closed = false;

  private constructor(private readonly connection: Connection) {
    connection.on('message', (msg: Message) => {
      const waiting = msg.type === Types.METHOD_RETURN || msg.type === Types.ERROR ? this.pending.get(msg.replySerial ?? -1) : undefined;
      if (waiting) {
        this.pending.delete(msg.replySerial!);
        if (msg.type === Types.ERROR) waiting.reject(new BusCallError(msg.errorName ?? 'org.freedesktop.DBus.Error.Failed', String(msg.body[0] ?? '')));
        else {
          msg.takeFds(); // the reply's fds are the caller's
          if (msg.fds.length > 0 && !syscalls) loadSyscalls().then(() => waiting.resolve(msg), waiting.reject);
          else waiting.resolve(msg);
        }
      }
      // The fds of anything else are closed.
      msg._closeFds();
    });
    connection.on('error', (err: Error) => this.fail(err));
    connection.on('end', () => this.fail(new Error('the bus closed the connection')));
  }

  /** Connects (to the system bus when `address` is undefined) and says Hello. */
  static async open(address: string | undefined): Promise<CallerBus> {
    void loadSyscalls();
    // The patched dbus-next throws here when usocket (fd passing) cannot load.
    const connection = createConnection({ busAddress: address ?? process.env.DBUS_SYSTEM_BUS_ADDRESS ?? systemBusAddress, negotiateUnixFd: true });
    connection.stream.on('fds', markCloexec);
    const bus = new CallerBus(connection);
    await new Promise<void>((resolve, reject) => {
      connection.once('error', reject);
      connection.once('connect', () => {
        connection.off('error', reject);
        // usocket opens the bus socket inheritable: helpers this process starts must not hold its bus connection.
        const fd = connection.stream.fd;
        if (typeof fd === 'number') markCloexec([fd]);
        resolve();
      });
    });
    await bus.call(new Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'Hello' }));
    return bus;
  }

  /** Sends a method call; resolves with the reply, rejects with BusCallError on an error reply. */
  call(msg: MessageType): Promise<Message> {
    if (this.closed) return Promise.reject(new Error('the bus connection is closed'));
    msg.serial = this.serial++;
    return new Promise<Message>((resolve, reject) => {
      this.pending.set(msg.serial!, { resolve, reject });
      try {
        this.connection.message(msg);
      } catch (err) {
        this.pending.delete(msg.serial!);
        reject(err as Error);
      }
    });
  }

  disconnect(): void {
    if (this.closed) return;
    this.closed = true;
    // Closed at once: every call has had its reply, and waiting for the bus's
    // own end of the connection would keep the process alive a round trip longer.
    this.connection.stream.destroy();
    this.fail(new Error('the bus connection is closed'));
  }

  private fail(err: Error): void {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const w of waiting) w.reject(err);
  }
}
