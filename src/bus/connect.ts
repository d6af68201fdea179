// Opening a D-Bus connection with unix fd passing, through dbus-next (patched
// at install, see patches/). Fd passing is required by both ends: without it
// no mount can cross the bus, so a missing usocket is an error, not a fallback.
import { createRequire } from 'node:module';
import type { MessageBus } from 'dbus-next';
import { setCloexec } from '../sys/syscalls.js';

const require = createRequire(import.meta.url);
export const dbus = require('dbus-next') as typeof import('dbus-next');

export type { MessageBus };

/** Connects to `address`, or to the system bus when it is undefined, and waits for the Hello reply. */
export async function openBus(address: string | undefined): Promise<MessageBus> {
  const opts = { negotiateUnixFd: true, ...(address ? { busAddress: address } : {}) };
  // The patched dbus-next throws here when usocket (fd passing) cannot load.
  const bus = address ? dbus.sessionBus(opts) : dbus.systemBus(opts);
  // Fds that arrive with bus messages are made close-on-exec the moment they
  // are received (usocket's 'fds' event, in the same turn as the recvmsg),
  // before dbus-next has even parsed their message: no process started
  // meanwhile can inherit one.
  (bus as unknown as { _connection?: { stream?: { on?(event: 'fds', f: (fds: number[]) => void): void } } })._connection?.stream?.on?.('fds', (fds) => fds.forEach(setCloexec));
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    bus.once('error', onError);
    bus.once('connect', () => {
      bus.off('error', onError);
      // usocket opens the bus socket inheritable: helpers this process starts must not hold its bus connection.
      const fd = (bus as unknown as { _connection?: { stream?: { fd?: unknown } } })._connection?.stream?.fd;
      if (typeof fd === 'number') setCloexec(fd);
      resolve();
    });
  });
  return bus;
}
