// Opening a D-Bus connection with unix fd passing, through dbus-next (patched
// at install, see patches/). Fd passing is required by both ends: without it
// no mount can cross the bus, so a missing usocket is an error, not a fallback.
import { createRequire } from 'node:module';
import type { MessageBus } from 'dbus-next';

const require = createRequire(import.meta.url);
export const dbus = require('dbus-next') as typeof import('dbus-next');

export type { MessageBus };

/** Connects to `address`, or to the system bus when it is undefined, and waits for the Hello reply. */
export async function openBus(address: string | undefined): Promise<MessageBus> {
  const opts = { negotiateUnixFd: true, ...(address ? { busAddress: address } : {}) };
  // The patched dbus-next throws here when usocket (fd passing) cannot load.
  const bus = address ? dbus.sessionBus(opts) : dbus.systemBus(opts);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    bus.once('error', onError);
    bus.once('connect', () => {
      bus.off('error', onError);
      resolve();
    });
  });
  return bus;
}
