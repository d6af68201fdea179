// Paths test code needs. Code that runs as an unprivileged test user must use
// `pkgRoot`: test/run.sh binds the tree at a world-traversable path
// (MOUNTGATE_TEST_PKG), since a clone may sit below a 0700 directory.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const pkgRoot = process.env.MOUNTGATE_TEST_PKG ?? repoRoot;
export const cliPath = join(pkgRoot, 'bin', 'mountgate');
// The broker starts its front as an unprivileged user, who must be able to read the code.
export const brokerPath = join(pkgRoot, 'bin', 'mountgated');
