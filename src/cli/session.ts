// What every command module shares: a line on standard output, and one
// broker connection for the length of a piece of work (the bus address from
// the program's --bus-address or $MOUNTGATE_BUS_ADDRESS), closed however the
// work ends. The bus client is loaded only when a command needs it.
import type { Command } from 'commander';
import type { MountgateBroker } from '../client/broker.js';

export function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

export async function withBroker<T>(program: Command, fn: (b: MountgateBroker) => Promise<T>): Promise<T> {
  const { connect } = await import('../client/broker.js');
  const busAddress = program.opts<{ busAddress?: string }>().busAddress;
  const broker = await connect(busAddress ? { busAddress } : {});
  try {
    return await fn(broker);
  } finally {
    broker.close();
  }
}
