// The composefs conformance assets (tests/assets of the composefs project,
// with the sha256 of the image mkcomposefs 1.0.8 writes for each), found at
// <repo>/../shared/conformance/composefs-assets.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const assetsDir = resolve(repoRoot, '../shared/conformance/composefs-assets');

/** Parsed leniently, as the conformance README says; all others strictly. */
export const lenientAssets = new Set(['no-newline.dump', 'longlink.dump', 'honggfuzz-longlink-unterminated.dump']);

export interface Asset {
  /** The dump name, without .gz. */
  name: string;
  dump: Buffer;
  sha256?: string;
  version?: number;
  shouldFail: boolean;
}

export function loadAssets(): Asset[] {
  const files = readdirSync(assetsDir).filter((f) => /\.dump(\.gz)?$/.test(f)).sort();
  return files.map((file) => {
    const raw = readFileSync(join(assetsDir, file));
    const name = file.replace(/\.gz$/, '');
    const shaFile = join(assetsDir, `${file}.sha256`);
    const versionFile = join(assetsDir, `${name}.version`);
    return {
      name,
      dump: file.endsWith('.gz') ? gunzipSync(raw) : raw,
      ...(existsSync(shaFile) ? { sha256: readFileSync(shaFile, 'utf8').trim().split(/\s+/)[0]! } : {}),
      ...(existsSync(versionFile) ? { version: Number(readFileSync(versionFile, 'utf8').trim()) } : {}),
      shouldFail: name.startsWith('should-fail-'),
    };
  });
}
