// Regression: an error message that echoed a manifest path with a NUL byte
// made the bus daemon drop the broker's connection (D-Bus strings may not
// contain NUL). Messages are escaped before they go on the bus.
import t from 'tap';
import { busSafe } from '../../src/broker/service.js';

t.test('busSafe escapes NUL and control characters, keeps text and newlines', async (tt) => {
  tt.equal(busSafe('path "/a\u0000b" contains a NUL'), 'path "/a\\x00b" contains a NUL');
  tt.equal(busSafe('bell\u0007 esc\u001b del\u007f'), 'bell\\x07 esc\\x1b del\\x7f');
  tt.equal(busSafe('line one\nline two\ttab, ünïcödé'), 'line one\nline two\ttab, ünïcödé');
});
