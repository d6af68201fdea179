// The worker of check-ahead.ts: checks a manifest's entries in order with
// the streaming path's checks (checkStreamedEntry), and publishes how far it got and each entry's directory.
// It stops at the first entry it is not sure of, as that path gives up there.
import { parentPort } from 'node:worker_threads';
import { EntryChecker } from '../manifest/check.js';
import { checkStreamedEntry } from '../manifest/load.js';
import { UTF8_TEXT } from '../manifest/text.js';
import { CHECKED, GAVE_UP, PUBLISH_EVERY, type CheckAheadData } from './check-ahead.js';

function checkEntries(data: CheckAheadData): boolean {
  const text = Buffer.from(data.text);
  const starts = new Uint32Array(data.starts);
  const ends = new Uint32Array(data.ends);
  const parents = new Int32Array(data.parents);
  const control = new Int32Array(data.control);
  const checker = new EntryChecker(UTF8_TEXT);
  for (let i = 0; i < data.count; i++) {
    const parent = checkStreamedEntry(checker, JSON.parse(text.toString('latin1', starts[i]!, ends[i]!)), i);
    if (parent === undefined) return false;
    parents[i] = parent;
    if (i % PUBLISH_EVERY === PUBLISH_EVERY - 1) {
      Atomics.store(control, CHECKED, i + 1);
      Atomics.notify(control, CHECKED);
    }
  }
  Atomics.store(control, CHECKED, data.count);
  Atomics.notify(control, CHECKED);
  return true;
}

parentPort!.once('message', (data: CheckAheadData) => {
  let sound = false;
  try {
    sound = checkEntries(data);
  } catch {
    // Not JSON, or a check that threw: the whole-manifest path words it.
  }
  if (!sound) {
    const control = new Int32Array(data.control);
    Atomics.store(control, GAVE_UP, 1);
    Atomics.notify(control, CHECKED);
  }
  parentPort!.close();
});
