// Preloaded with `node --require` by test/dbus: makes require('usocket') fail,
// as it does when its native module did not build or load.
const Module = require('node:module');
const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === 'usocket') throw new Error("Cannot find module 'usocket' (made unloadable by the test)");
  return load.call(this, request, ...rest);
};
