// The interface XML is the contract: the broker dispatches exactly its
// methods with exactly its signatures, and every method the policy knows is in it.
import t from 'tap';
import { brokerInterface, methodsOf, introspectionXml } from '../../src/bus/interface.js';
import { brokerMethods } from '../../src/policy/decide.js';

t.test('the broker interface lists every broker method with its signatures', async (tt) => {
  tt.same([...brokerInterface.keys()].sort(), [...brokerMethods].sort());
  tt.same(brokerInterface.get('BindIdmapped'), { in: 'hs', out: 'hs', inArgs: [{ name: 'directory', type: 'h' }, { name: 'request_json', type: 's' }] });
  tt.same(brokerInterface.get('Explain'), { in: 'ssah', out: 's', inArgs: [{ name: 'method', type: 's' }, { name: 'request_json', type: 's' }, { name: 'fds', type: 'ah' }] });
  tt.same(brokerInterface.get('AddImage'), { in: 'h', out: 'suh', inArgs: [{ name: 'manifest', type: 'h' }] });
  tt.same(brokerInterface.get('PutObjects'), { in: 'h', out: 'tt', inArgs: [{ name: 'stream', type: 'h' }] });
  tt.same(brokerInterface.get('GetInfo'), { in: '', out: 'a{sv}', inArgs: [] });
  tt.same(brokerInterface.get('MountImage')?.inArgs.map((a) => a.name), ['image_id', 'request_json'], 'the pipeline reads arguments by these names');
});

t.test('the reader ignores comments and other interfaces', async (tt) => {
  tt.same([...methodsOf(introspectionXml, 'org.freedesktop.DBus.Peer').keys()], ['Ping']);
  tt.throws(() => methodsOf('<node/>', 'x.y'), /not in the introspection XML/);
});
