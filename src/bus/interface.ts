// The broker's D-Bus interface, read from its introspection XML: the wire
// contract, written once (schemas/org.mountgate.Broker1.xml). Both the
// broker's dispatcher and Introspect replies come from this file.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { schemasDir } from '../paths.js';
import { interfaceName } from './names.js';

export const introspectionXml = readFileSync(join(schemasDir, 'org.mountgate.Broker1.xml'), 'utf8');

export interface MethodSpec {
  /** Concatenated signature of the in arguments. */
  in: string;
  out: string;
  /** The in arguments, in order: name and complete type. */
  inArgs: { name: string; type: string }[];
}

/** Methods of one interface in an introspection document (our own file: a small, strict reader). */
export function methodsOf(xml: string, iface: string): Map<string, MethodSpec> {
  const withoutComments = xml.replace(/<!--[^]*?-->/g, '');
  const block = new RegExp(`<interface name="${iface.replace(/\./g, '\\.')}">([^]*?)</interface>`).exec(withoutComments);
  if (!block) throw new Error(`interface ${iface} is not in the introspection XML`);
  const methods = new Map<string, MethodSpec>();
  for (const m of block[1]!.matchAll(/<method name="(\w+)"\s*(?:\/>|>([^]*?)<\/method>)/g)) {
    const spec: MethodSpec = { in: '', out: '', inArgs: [] };
    for (const a of (m[2] ?? '').matchAll(/<arg\b[^>]*\bname="(\w+)"[^>]*\btype="([^"]+)"[^>]*\bdirection="(in|out)"/g)) {
      spec[a[3] as 'in' | 'out'] += a[2];
      if (a[3] === 'in') spec.inArgs.push({ name: a[1]!, type: a[2]! });
    }
    methods.set(m[1]!, spec);
  }
  return methods;
}

export const brokerInterface = methodsOf(introspectionXml, interfaceName);
