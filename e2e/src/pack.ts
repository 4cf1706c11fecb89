/**
 * Packs this repo's packages with `npm pack` and installs the tarballs into a fresh project, exactly
 * as a user would install them from a registry.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cleanEnv } from './nx-workspace';

export const REPO = resolve(__dirname, '../..');
export const PACKAGES = ['core', 'server', 'nx', 'cli'] as const;

/**
 * Runs `npm pack` for every package into one directory (a new temp directory unless `dest` is given);
 * returns the tarball paths by package dir.
 */
export function packAll(dest: string = mkdtempSync(join(tmpdir(), 'cascache-pack-'))): Record<(typeof PACKAGES)[number], string> {
  const out = {} as Record<(typeof PACKAGES)[number], string>;
  for (const p of PACKAGES) {
    const before = new Set(readdirSync(dest));
    execFileSync('npm', ['pack', '--silent', '--pack-destination', dest], { cwd: join(REPO, 'packages', p), stdio: ['ignore', 'pipe', 'inherit'], env: cleanEnv() });
    const made = readdirSync(dest).find((f) => !before.has(f));
    if (!made) throw new Error(`npm pack produced nothing for ${p}`);
    out[p] = join(dest, made);
  }
  return out;
}

/**
 * A fresh npm project with the given tarballs installed. The project approves zstd-napi's build
 * script (and nx's, a peer of @cascache/nx), as our install docs tell users to.
 */
export function freshProject(tarballs: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-user-'));
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'user-project', version: '1.0.0', private: true, allowScripts: { 'zstd-napi': true, nx: true } }, null, 2),
  );
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'], env: cleanEnv() });
  return dir;
}
