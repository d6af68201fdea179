// A mistake in how a command was called (exit code 2), as opposed to a
// refusal or a failure: every command module throws this one class, and
// main.ts reports it.
export class UsageError extends Error {}
