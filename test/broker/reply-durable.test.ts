// When a reply waits for the disk: the answer of a call that touches the
// store (MethodRecord.store) waits until every change committed so far is on
// disk (BrokerDeps.durable), its refusals after work too; a call that does
// not touch the store (GetInfo, BindIdmapped) answers without waiting, so
// that another user's stream of commits (each waiting for its fsync) never
// holds it up. The real service on a real dbus-daemon, with records whose
// work is trivial and a durable() the test holds and releases.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPrivateBus } from '../helpers/bus-config.js';
import { dbus, openBus } from '../../src/bus/connect.js';
import { busName, interfaceName, objectPath } from '../../src/bus/names.js';
import { BrokerService } from '../../src/broker/service.js';
import { PolicyStore } from '../../src/broker/policy-store.js';
import { methodRecords, type MethodRecord } from '../../src/broker/methods.js';
import { InternalError } from '../../src/errors.js';
import { AccountCache } from '../../src/accounts/load.js';
import type { BrokerMethod } from '../../src/policy/decide.js';

/** A record whose facts, decision and work are trivial; `fail` throws in its work (after which a store call still waits). */
function record(method: BrokerMethod, store: boolean, signature: string, body: unknown[], fail = false): MethodRecord {
  return {
    method,
    ruled: method !== 'GetInfo',
    store,
    args: () => ({}),
    explainArgs: () => ({}),
    facts: () => undefined,
    decide: () => ({ method, allowed: true, checks: [{ ok: true, message: 'allowed for the test' }] }),
    execute: () => {
      if (fail) throw new InternalError('failed for the test');
      return { signature, body };
    },
  };
}

t.test('a reply waits for the disk exactly when its call touches the store', async (tt) => {
  // The store's records must say they touch it; those that do not are the ones that never read it.
  const real = methodRecords({} as Parameters<typeof methodRecords>[0]);
  tt.same(
    [...real.values()].filter((r) => !r.store).map((r) => r.method).sort(),
    ['BindIdmapped', 'GetInfo'],
    'only GetInfo and BindIdmapped answer without waiting for the disk',
  );

  const dir = mkdtempSync(join(tmpdir(), 'mountgate-reply-durable.'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // This test's own bus policy: the test process (root) owns the name and calls it.
  const policyPath = join(dir, 'policy.conf');
  writeFileSync(policyPath, `<busconfig><policy context="default"><allow own="${busName}"/><allow send_destination="${busName}"/></policy></busconfig>\n`);
  const bus = await startPrivateBus({ policyPath });
  tt.teardown(() => bus.stop());

  let pending: (() => void)[] = [];
  let waits = 0;
  const durable = () => {
    waits++;
    return new Promise<void>((resolve) => pending.push(resolve));
  };
  const release = () => {
    const p = pending;
    pending = [];
    p.forEach((r) => r());
  };
  const methods = new Map<BrokerMethod, MethodRecord>([
    ['GetInfo', record('GetInfo', false, 'a{sv}', [{ version: new dbus.Variant('s', 'test') }])],
    ['ListImages', record('ListImages', true, 's', ['[]'])],
    ['RemoveImage', record('RemoveImage', true, 's', [''], true)],
  ]);
  const all = { users: ['*'] };
  const policy = new PolicyStore(join(dir, 'policy.json'), { policy: { version: 1, methods: { ListImages: all, RemoveImage: all } }, source: 'test' });
  // The caller (this process, root) as an account with subordinate ids, which the store's methods ask for.
  const files = { passwd: join(dir, 'passwd'), group: join(dir, 'group'), subuid: join(dir, 'subuid'), subgid: join(dir, 'subgid') };
  writeFileSync(files.passwd, 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(files.group, 'root:x:0:\n');
  writeFileSync(files.subuid, 'root:100000:65536\n');
  writeFileSync(files.subgid, 'root:100000:65536\n');
  const server = await openBus(bus.address);
  tt.teardown(() => server.disconnect());
  new BrokerService({ bus: server, policy, methods, audit: () => undefined, durable, accounts: new AccountCache(files) }).attach();
  await server.requestName(busName, dbus.NameFlag.DO_NOT_QUEUE);
  const client = await openBus(bus.address);
  tt.teardown(() => client.disconnect());
  const call = (member: string, signature = '', body: unknown[] = []) =>
    client.call(new dbus.Message({ destination: busName, path: objectPath, interface: interfaceName, member, signature, body }));
  /** Whether the call is answered (either way) within `ms`. */
  const answeredWithin = async (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

  tt.equal(await answeredWithin(call('GetInfo'), 5000), true, 'GetInfo is answered while durable() is held');
  tt.equal(waits, 0, 'and never asked the disk');

  const list = call('ListImages');
  tt.equal(await answeredWithin(list, 300), false, 'ListImages (touches the store) waits while durable() is held');
  tt.equal(waits, 1, 'it asked once');
  tt.equal(await answeredWithin(call('GetInfo'), 5000), true, 'GetInfo is answered meanwhile');
  release();
  tt.equal((await list)?.body?.[0], '[]', 'ListImages is answered once its changes are on disk');

  const removal = call('RemoveImage', 's', ['{}']);
  tt.equal(await answeredWithin(removal, 300), false, 'a store call that failed after its work also waits for the disk');
  release();
  await tt.rejects(removal, { type: 'org.mountgate.Error.Internal' }, 'then its failure is answered');
});
