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
import {
  CascacheError,
  descriptorChunker,
  ErrorCodes,
  isCascacheError,
  formatBytes,
  indexStats,
  ingestDirectory,
  LayeredStore,
  materializeToDirectory,
  openLocalStore,
  openRemoteTier,
  parseTierConfigs,
  parseTrustedKeys,
  storeStats,
  Trust,
  withDefaultToken,
  type Digest,
  type IngestResult,
  type LocalStore,
  type StoreIndex,
  type StoreStats,
  type TierConfig,
} from '@cascache/core';
import type { Io } from './program';
import { readConfigFile, type ServeConfig } from './serve';

export { formatBytes };

export interface StoreFlags {
  storeDir?: string;
  json?: boolean;
  remote?: string;
  config?: string;
}

/** Adds `--store-dir` and `--json` to a command. */
export function withStoreFlags(cmd: Command): Command {
  return cmd
    .option('--store-dir <path>', 'local store (env CASCACHE_DIR; default ./.cascache)')
    .option('--json', 'machine-readable output on stdout')
    .option('--config <file>', 'cascache config file, as for serve: storeDir and tiers are used here (env CASCACHE_CONFIG)')
    .option('--remote <url>', 'a remote tier: s3://bucket/prefix?region=..&endpoint=.., gs://bucket/prefix, https://team-server/ (env CASCACHE_REMOTE; token: CASCACHE_REMOTE_TOKEN); the local store serves alone when it is unreachable');
}

/** A local store, with the remote tiers in front of it when any are configured. */
export type CliStore = LocalStore & { layered: LayeredStore | null };

/** Stores opened by the running command, closed (index flushed) when it ends. */
const openStores = new Set<CliStore>();

/** Closes every store the command opened: their indexes write what they have queued. */
export function closeCliStores(): void {
  for (const s of openStores) s.close();
  openStores.clear();
}

/**
 * The store's index, made current for reading (rebuilt from the files when it fell behind; that is
 * said on stderr), or null when SQLite could not open it or could not rebuild it (a full disk; said
 * too): callers then work from the files.
 */
export async function currentIndex(s: LocalStore, io: Io, flags: StoreFlags): Promise<StoreIndex | null> {
  if (!s.index) {
    io.stderr.write('cascache: warning: the store index (SQLite) could not be opened; figures that need it are left out\n');
    return null;
  }
  try {
    const reason = await s.index.refresh(s);
    if (reason && !flags.json) io.stderr.write(`cascache: rebuilt the store index from the files, because ${reason}\n`);
  } catch (err) {
    if (!isCascacheError(err, ErrorCodes.IO)) throw err;
    io.stderr.write(`cascache: warning: ${err.message}; working from the files without it (it is rebuilt next time)\n`);
    return null;
  }
  return s.index;
}

/** The current index (see {@link currentIndex}) and the store-wide figures, refreshing the index once. */
export async function currentStats(s: LocalStore, io: Io, flags: StoreFlags): Promise<{ index: StoreIndex | null; stats: StoreStats }> {
  const index = await currentIndex(s, io, flags);
  return { index, stats: index ? indexStats(index) : await storeStats(s) };
}

/**
 * The remote tiers for a command: `--remote <url>`, else `CASCACHE_REMOTE` (comma-separated URLs),
 * else `CASCACHE_TIERS` (a JSON list, as in nx.json), else `tiers` in the config file; HTTP tiers
 * without a token take `CASCACHE_REMOTE_TOKEN`. @throws CascacheError `E_CONFIG`.
 */
export function resolveTiers(flags: StoreFlags, env: NodeJS.ProcessEnv): TierConfig[] {
  return withDefaultToken(configuredTiers(flags, env), env.CASCACHE_REMOTE_TOKEN);
}

function configuredTiers(flags: StoreFlags, env: NodeJS.ProcessEnv): TierConfig[] {
  if (flags.remote) return parseTierConfigs([flags.remote], '--remote');
  if (env.CASCACHE_REMOTE) return parseTierConfigs(env.CASCACHE_REMOTE.split(',').map((u) => u.trim()).filter(Boolean), 'CASCACHE_REMOTE');
  if (env.CASCACHE_TIERS) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(env.CASCACHE_TIERS);
    } catch {
      throw new CascacheError(ErrorCodes.CONFIG, 'CASCACHE_TIERS must be a JSON list of URLs or {url, level, readOnly, packTargetBytes}');
    }
    return parseTierConfigs(parsed, 'CASCACHE_TIERS');
  }
  return configFile(flags, env).tiers ?? [];
}

/**
 * The signing and verification rules from the environment, then the config file: CASCACHE_SECRET,
 * CASCACHE_SIGNING_KEY, CASCACHE_TRUSTED_KEYS (JSON). @throws CascacheError `E_CONFIG`.
 */
export function resolveTrust(flags: StoreFlags, env: NodeJS.ProcessEnv): Trust {
  const file = configFile(flags, env);
  const secret = env.CASCACHE_SECRET || file.secret || null;
  if (secret !== null && Buffer.byteLength(secret) < 32) throw new CascacheError(ErrorCodes.CONFIG, 'CASCACHE_SECRET must be at least 32 bytes');
  return new Trust({
    secret: secret === null ? null : Buffer.from(secret, 'utf8'),
    signingKey: env.CASCACHE_SIGNING_KEY || file.signingKey || null,
    trustedKeys: env.CASCACHE_TRUSTED_KEYS ? parseTrustedKeys(env.CASCACHE_TRUSTED_KEYS, 'CASCACHE_TRUSTED_KEYS') : (file.trustedKeys ?? {}),
  });
}

/** Opens a LayeredStore over `local` for `tiers`; remote warnings go to stderr, once per tier. */
export function openLayered(local: LocalStore, tiers: TierConfig[], io: Io | undefined): LayeredStore {
  const remotes = tiers.map((t) =>
    openRemoteTier(t, {
      breaker: { threshold: 2, onOpen: (name) => io?.stderr.write(`cascache: warning: ${name} is unreachable; skipping it for this command (uploads stay journaled for \`cascache flush\`)\n`) },
    }),
  );
  return new LayeredStore({
    local,
    remotes,
    trust: local.actionCache.trust,
    sync: true, // a CLI process ends with its command: upload now, or leave it journaled
    retryBaseMs: 500,
    retryMaxMs: 5000,
    onEvent: (e) => {
      if (e.type === 'warning') io?.stderr.write(`cascache: warning: ${e.tier}: ${e.message}\n`);
    },
  });
}

export function resolveCliStoreDir(flags: StoreFlags, env: NodeJS.ProcessEnv, cwd: string): string {
  return resolve(cwd, flags.storeDir ?? env.CASCACHE_DIR ?? configFile(flags, env, cwd).storeDir ?? '.cascache');
}

/** The config file named by `--config` or `CASCACHE_CONFIG`, or nothing. */
function configFile(flags: StoreFlags, env: NodeJS.ProcessEnv, cwd = process.cwd()): Partial<ServeConfig> {
  const path = flags.config ?? env.CASCACHE_CONFIG;
  return path ? readConfigFile(resolve(cwd, path)) : {};
}

/**
 * Opens the store the flags name, with its remote tiers (see {@link resolveTiers}). A remote that
 * cannot be reached is a warning and the local store serves alone: a failing cache never fails the work.
 * With `existing`, for commands that read or maintain a store (stats, verify, gc, store list...),
 * there must be one: run from a subfolder, they would otherwise create an empty store there and
 * report on it.
 * @throws CascacheError `E_CONFIG` for a short secret or a bad remote URL; `E_NOT_FOUND` when
 *   `existing` and the directory holds no store.
 */
export async function openCliStore(flags: StoreFlags, io?: Io, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd(), options: { existing?: boolean } = {}): Promise<CliStore> {
  if (options.existing) {
    const dir = resolveCliStoreDir(flags, env, cwd);
    if (!existsSync(join(dir, 'v1', 'store.json'))) {
      throw new CascacheError(ErrorCodes.NOT_FOUND, `no cascache store at ${dir}: run this from the workspace root, or name the store with --store-dir or CASCACHE_DIR`);
    }
  }
  const trust = resolveTrust(flags, env);
  const tiers = resolveTiers(flags, env);
  const local = await openLocalStore({ root: resolveCliStoreDir(flags, env, cwd), secret: null, trust, writer: 'cascache-cli' });
  const store = Object.assign(local, { layered: tiers.length > 0 ? openLayered(local, tiers, io) : null });
  openStores.add(store);
  return store;
}

/** {@link openCliStore} for commands that read or maintain a store: there must be one. */
export function openExistingCliStore(flags: StoreFlags, io?: Io): Promise<CliStore> {
  return openCliStore(flags, io, process.env, process.cwd(), { existing: true });
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
