// @ts-check
/** What the benchmarks share: workspace copies, the naive server and turborepo-remote-cache processes, small statistics. */
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';

const { openWorkspace, tempWorkspaceDir, writeWorkspace } = e2eWorkspace;

/** `--name value` from argv, or the fallback. @param {string} name @param {string | undefined} fallback */
export const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);

/**
 * With `--zstd-napi` on the command line: the npm spec of @cascache/core's optional faster zstd, to
 * install beside our tarballs (as `npm run add-to` does); else none (what `nx add` installs).
 * @returns {string[]}
 */
export function zstdNapiSpecs(always = false) {
  if (!always && !process.argv.includes('--zstd-napi')) return [];
  const core = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'packages', 'core', 'package.json'), 'utf8'));
  return [`zstd-napi@${core.peerDependencies['zstd-napi']}`];
}

/** @param {number[]} xs */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Bytes of every file under a directory. @param {string} dir @returns {number} */
export function du(dir) {
  if (!existsSync(dir)) return 0;
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += du(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}

/**
 * A copy of an installed workspace sharing its node_modules, with the plugin options given (or none).
 * @param {string} base @param {string} name @param {Record<string, unknown> | null} plugin
 * @param {import('../e2e/dist/nx-workspace.js').WorkspaceShape} [shape]
 */
export function variant(base, name, plugin, shape = 'small') {
  const dir = tempWorkspaceDir(`cascache-bench-${name}-`);
  cpSync(base, dir, { recursive: true, filter: (src) => !src.endsWith('/node_modules') });
  symlinkSync(join(base, 'node_modules'), join(dir, 'node_modules'), 'dir');
  writeWorkspace(dir, plugin, shape);
  return openWorkspace(dir);
}

/**
 * Starts bench/naive-server.mjs as its own process (nx runs through spawnSync, which blocks this
 * event loop); with `s3`, bodies go to that bucket. @param {string} storeDir @returns {Promise<{ url: string, proc: import('node:child_process').ChildProcess }>}
 */
export async function startNaive(storeDir, /** @type {{ endpoint: string, bucket: string } | null} */ s3 = null) {
  const here = import.meta.dirname ?? new URL('.', import.meta.url).pathname;
  const args = [join(here, 'naive-server.mjs'), storeDir, ...(s3 ? ['--s3', s3.endpoint, s3.bucket] : [])];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const { url } = await new Promise((resolve, reject) => {
    createInterface({ input: /** @type {import('node:stream').Readable} */ (proc.stdout) }).once('line', (l) => resolve(JSON.parse(l)));
    proc.once('exit', (code) => reject(new Error(`naive server exited with ${code}`)));
  });
  return { url, proc };
}

/** Prints result rows: what, value, ratio, target, ok. @param {Array<[string, string, string, string, boolean | undefined]>} rows */
export function printRows(rows, width = 52) {
  for (const [what, value, ratio, target, ok] of rows) {
    console.log(`${String(what).padEnd(width)} ${String(value).padStart(12)}   ${String(ratio).padEnd(18)} ${target}${ok === undefined ? '' : ok ? '  ok' : '  MISSED'}`);
  }
}

/** Stores moved aside by {@link emptyStore}, deleted by {@link deleteMovedStores}. */
const movedStores = [];

/**
 * Empties a store directory as a fresh machine has it: by moving it aside, not deleting it. Deleting
 * thousands of chunk files right before a timed run measures the filesystem's deferred work (ext4
 * with `discard` on the machines here made the next run's file creates 10x slower), not the cache.
 * @param {string} dir
 */
export function emptyStore(dir) {
  if (!existsSync(dir)) return;
  const aside = `${dir}.old-${movedStores.length}`;
  renameSync(dir, aside);
  movedStores.push(aside);
}

/** Deletes what {@link emptyStore} moved aside (after the timed runs). */
export function deleteMovedStores() {
  for (const d of movedStores.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** The turborepo-remote-cache version the Turborepo benches compare against. */
export const TRC_VERSION = '2.12.0';

/** Installs turborepo-remote-cache from npm into a temp dir and returns the dir. */
export function installTrc() {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-trc-'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'trc', private: true }));
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^npm_(config|lifecycle|package)_/i.test(k)) delete env[k];
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `turborepo-remote-cache@${TRC_VERSION}`], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'], env });
  return dir;
}

/** A free loopback port. @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolve) => {
    const srv = createNetServer().listen(0, '127.0.0.1', () => {
      const port = /** @type {import('node:net').AddressInfo} */ (srv.address()).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts turborepo-remote-cache (installed by {@link installTrc}) as its own process.
 * @param {string} dir @param {string} token @param {string} team
 * @param {Record<string, string>} storage its STORAGE_* and S3_* variables
 */
export async function startTrc(dir, token, team, storage) {
  const port = await freePort();
  const proc = spawn(process.execPath, [join(dir, 'node_modules', 'turborepo-remote-cache', 'dist', 'cli.js')], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', HOST: '127.0.0.1', PORT: String(port), TURBO_TOKEN: token, LOG_LEVEL: 'warn', ...storage },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/v8/artifacts/status?slug=${team}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 200 || proc.exitCode !== null) throw new Error('turborepo-remote-cache did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url, proc, env: { TURBO_API: url, TURBO_TOKEN: token, TURBO_TEAM: team } };
}

/** Bytes and objects in an S3 bucket on s3rver. @param {string} endpoint @param {string} bucket */
export async function bucketBytes(endpoint, bucket) {
  const { S3ObjectStore } = (await import('@cascache/core')).default;
  const store = new S3ObjectStore({ bucket, endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  let total = 0;
  let objects = 0;
  for await (const o of store.list('')) {
    total += o.size;
    objects++;
  }
  return { total, objects };
}

/** Real source files from node_modules, up to `limit` bytes, as [relative path, bytes]. */
export function sourceFiles(limit) {
  /** @type {Array<[string, Buffer]>} */
  const out = [];
  let total = 0;
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules');
  const walk = (dir) => {
    for (const d of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (total >= limit) return;
      const p = join(dir, d.name);
      if (d.isDirectory() && d.name !== '.cache' && d.name !== '.bin') walk(p);
      else if (d.isFile() && /\.(js|cjs|mjs|ts|json|map)$/.test(d.name)) {
        const b = readFileSync(p);
        out.push([relative(root, p), b]);
        total += b.length;
      }
    }
  };
  walk(root);
  return out;
}
