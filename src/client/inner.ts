// The helper that runs inside the caller's new user+mount namespace, with
// full capabilities there: attaches each mount fd at its target, then becomes
// the command (execvp), or, with a terminal requested, runs it on a
// pseudo-terminal (node-pty) and relays the user's terminal to it.
import { closeSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { moveMount, execvp } from '../sys/syscalls.js';
import type { InnerSpec } from './namespace.js';

const require = createRequire(import.meta.url);

function die(message: string, code = 1): never {
  process.stderr.write(`mountgate: ${message}\n`);
  process.exit(code);
}

function attachAll(spec: InnerSpec): void {
  for (const m of spec.mounts) {
    try {
      mkdirSync(m.target, { recursive: true });
    } catch (err) {
      die(`cannot create the mount point ${m.target}: ${(err as Error).message}`);
    }
    try {
      moveMount(m.fd, m.target);
    } catch (err) {
      die(`cannot attach the mount at ${m.target}: ${(err as Error).message}`);
    }
    closeSync(m.fd);
  }
}

function runOnTerminal(spec: InnerSpec): void {
  const pty = require('node-pty') as typeof import('node-pty');
  const [file, ...args] = spec.command;
  const term = pty.spawn(file!, args, {
    name: process.env.TERM ?? 'xterm-256color',
    cols: process.stdout.columns || 80,
    rows: process.stdout.rows || 24,
    cwd: spec.cwd ?? process.cwd(),
    env: process.env as Record<string, string>,
  });
  if (process.stdin.isTTY) process.stdin.setRawMode(true);
  process.stdin.on('data', (d: Buffer) => term.write(d.toString('binary')));
  term.onData((d) => process.stdout.write(d));
  process.stdout.on('resize', () => term.resize(process.stdout.columns, process.stdout.rows));
  term.onExit(({ exitCode, signal }) => {
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.exit(signal ? 128 + signal : exitCode);
  });
}

const spec = JSON.parse(process.argv[2] ?? '{}') as InnerSpec;
attachAll(spec);
if (spec.command.length === 0) die('no command to run', 2);
if (spec.cwd) process.chdir(spec.cwd);
if (spec.interactive) runOnTerminal(spec);
else {
  try {
    execvp(spec.command[0]!, spec.command);
  } catch (err) {
    die(`cannot run ${spec.command[0]}: ${(err as Error).message}`, 127);
  }
}
