/**
 * What every store command shares: where the store is (`--store-dir`, else `CASCACHE_DIR`, else
 * `./.cascache`, the same order as the Nx plugin), the signing secret (`CASCACHE_SECRET`), and how
 * results are printed (`--json` for scripts, tables and colour only for people at a terminal).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import Table from 'cli-table3';
import type { Command } from 'commander';
import { CascacheError, descriptorChunker, ErrorCodes, formatBytes, ingestDirectory, materializeToDirectory, openLocalStore, type Digest, type IngestResult, type LocalStore } from '@cascache/core';
import type { Io } from './program';

export { formatBytes };

export interface StoreFlags {
  storeDir?: string;
  json?: boolean;
  remote?: string;
}

/** Adds `--store-dir` and `--json` to a command. */
export function withStoreFlags(cmd: Command): Command {
  return cmd
    .option('--store-dir <path>', 'local store (env CASCACHE_DIR; default ./.cascache)')
    .option('--json', 'machine-readable output on stdout')
    .option('--remote <url>', 'a remote tier: s3://, gs://, https:// (falls back to the local store when unavailable)');
}

export function resolveCliStoreDir(flags: StoreFlags, env: NodeJS.ProcessEnv, cwd: string): string {
  return resolve(cwd, flags.storeDir ?? env.CASCACHE_DIR ?? '.cascache');
}

/**
 * Opens the store the flags name. A `--remote` that cannot be used is a warning and the local store
 * serves alone (a failing cache never fails the work): remote tiers arrive with the remote-tiers work.
 * @throws CascacheError `E_CONFIG` for a short secret.
 */
export async function openCliStore(flags: StoreFlags, io?: Io, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Promise<LocalStore> {
  if (flags.remote) {
    let where = 'the given remote';
    try {
      const u = new URL(flags.remote);
      where = `${u.protocol}//${u.host}`; // never echo paths or queries: they may hold credentials
    } catch {
      /* not a URL: say so without repeating it */
    }
    io?.stderr.write(`cascache: warning: remote tiers are not supported yet; ${where} is not used, the local store serves alone\n`);
  }
  const secret = env.CASCACHE_SECRET;
  if (secret !== undefined && secret !== '' && Buffer.byteLength(secret) < 32) throw new CascacheError(ErrorCodes.CONFIG, 'CASCACHE_SECRET must be at least 32 bytes');
  return openLocalStore({ root: resolveCliStoreDir(flags, env, cwd), secret: secret ? Buffer.from(secret, 'utf8') : null, writer: 'cascache-cli' });
}

/** Hits over lookups, rounded to 0.001; 0 when nothing was looked up. */
export function hitRate(hits: number, misses: number): number {
  return hits + misses > 0 ? Math.round((hits / (hits + misses)) * 1000) / 1000 : 0;
}

/** "3 min ago" style ages. */
export function formatAge(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Prints rows as a table (people) or JSON (scripts). */
export function printRows(io: Io, json: boolean | undefined, head: string[], rows: Array<Array<string | number>>, data: unknown): void {
  if (json) {
    io.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
    return;
  }
  const colour = (io.stdout as NodeJS.WriteStream).isTTY === true;
  const table = new Table({ head, style: { head: colour ? ['cyan'] : [], border: colour ? ['grey'] : [] } });
  table.push(...rows.map((r) => r.map(String)));
  io.stdout.write(`${table.toString()}\n`);
}

/**
 * Restores a tree beside `target`, then moves it into place, so a failed restore never leaves a
 * half-written target. An existing non-empty target is an error unless `force`, which replaces it.
 * @throws CascacheError `E_EXISTS`, `E_NOT_FOUND`, `E_INTEGRITY`, `E_IO`.
 */
export async function restoreBeside(store: LocalStore, digest: Digest, target: string, force: boolean): Promise<void> {
  const abs = resolve(target);
  const occupied = existsSync(abs) && (!(await fsp.stat(abs)).isDirectory() || (await fsp.readdir(abs)).length > 0);
  if (occupied && !force) throw new CascacheError(ErrorCodes.EXISTS, `${target} exists and is not empty (use --force to replace it)`);
  await fsp.mkdir(dirname(abs), { recursive: true });
  const staging = join(dirname(abs), `.${basename(abs)}.cascache-${randomBytes(4).toString('hex')}`);
  const old = `${staging}.old`;
  try {
    await materializeToDirectory(store.blobs, digest, staging);
    if (existsSync(abs)) await fsp.rename(abs, old);
    await fsp.rename(staging, abs);
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
    await fsp.rm(old, { recursive: true, force: true });
  }
}

/**
 * A progress bar on stderr for long ingests, only for a person at a terminal (never with --json or
 * when stderr is a pipe). Returns the callback to hand to ingest and a function to close the bar.
 */
export function ingestProgress(io: Io, flags: StoreFlags, label: string): { onProgress?: (done: { files: number; bytes: number }, total: { files: number; bytes: number }) => void; stop: () => void } {
  if (flags.json || (io.stderr as NodeJS.WriteStream).isTTY !== true) return { stop: () => undefined };
  const bar = new SingleBar({ stream: io.stderr as NodeJS.WriteStream, format: `cascache: ${label} [{bar}] {value}/{total} files, {bytes}`, hideCursor: true, clearOnComplete: true });
  let started = false;
  return {
    onProgress: (done, total) => {
      if (!started) {
        bar.start(total.files, 0, { bytes: formatBytes(0) });
        started = true;
      }
      bar.update(done.files, { bytes: `${formatBytes(done.bytes)} of ${formatBytes(total.bytes)}` });
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** Stores a directory with the store's chunker parameters, showing progress to a person at a terminal. */
export async function ingestWithProgress(io: Io, flags: StoreFlags, store: LocalStore, source: string, label: string): Promise<IngestResult> {
  const progress = ingestProgress(io, flags, label);
  try {
    return await ingestDirectory(store.blobs, source, { chunker: descriptorChunker(store.descriptor), onProgress: progress.onProgress });
  } finally {
    progress.stop();
  }
}
