/**
 * The local store: one directory holding blobs, action-cache entries and a descriptor.
 *
 * ```
 * <root>/v1/store.json           descriptor: format, digest, chunker algorithm and parameters
 * <root>/v1/blobs/ab/<digest>    framed blobs           <root>/v1/ac/<namespace>/ab/<key>
 * <root>/v1/tmp/                 writes in progress     <root>/v1/quarantine/  corrupt blobs
 * <root>/v1/roots/<digest>.json  store roots (GC roots) <root>/v1/runs/        recorded tool runs
 * <root>/v1/index.sqlite         the index (store-index.ts): a cache of all of the above
 * ```
 *
 * The descriptor is written once, when the store is created, and is authoritative afterwards: the
 * chunker parameters decide every boundary, so a store never silently switches them.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ActionCache, type ActionCacheOptions } from './action-cache';
import type { Trust } from './trust';
import { CHUNKER_ALGORITHM, DEFAULT_CHUNKER_PARAMS, validateChunkerParams, type ChunkerParams } from './chunker';
import { CascacheError, ErrorCodes, toIoError } from './errors';
import { RootStore } from './roots';
import { FsAcStore } from './store/fs-ac';
import { FsBlobStore, LAYOUT_VERSION, type FsBlobStoreOptions } from './store/fs';
import { staleMarkingObserver, StoreIndex } from './store-index';
import type { StoreObserver } from './store/types';

/** Contents of `<root>/v1/store.json`. */
export interface StoreDescriptor {
  format: 'cascache-store';
  version: 1;
  digest: 'blake3-256';
  chunker: { algorithm: typeof CHUNKER_ALGORITHM } & ChunkerParams;
  /** ISO 8601 creation time. */
  created: string;
}

/** Options for {@link openLocalStore}. */
export interface LocalStoreOptions {
  root: string;
  /** Chunker parameters for a new store. For an existing store they must match its descriptor. */
  chunker?: ChunkerParams;
  /** zstd level for new blobs. Default 3. */
  level?: number;
  /** Action-cache signing secret (>= 32 bytes), or null for an unsigned local-only store. */
  secret: Uint8Array | null;
  /** Signing key and trusted keys per namespace (see trust.ts); default: from `secret`. */
  trust?: Trust;
  /** Recorded as the writer of new AC entries. */
  writer?: string;
  onWarning?: ActionCacheOptions['onWarning'];
  onCorrupt?: FsBlobStoreOptions['onCorrupt'];
  /**
   * Keep the SQLite index (`v1/index.sqlite`) current as this process writes. Default true. Without
   * it (or when it cannot be opened) the first change marks the index stale instead, so it is
   * rebuilt before anyone reads it.
   */
  index?: boolean;
}

/** An opened local store. */
export interface LocalStore {
  root: string;
  descriptor: StoreDescriptor;
  blobs: FsBlobStore;
  entries: FsAcStore;
  actionCache: ActionCache;
  /** Named trees kept alive through GC (`cascache store add`). */
  roots: RootStore;
  /** The index this process keeps current, or null (see `LocalStoreOptions.index`). */
  index: StoreIndex | null;
  /** Writes what the index has queued and closes it. The store's files need no closing. */
  close(): void;
}

/**
 * Opens (creating if needed) a local store.
 * @throws CascacheError `E_CONFIG` when the descriptor is unreadable, of another format, or records
 * chunker parameters other than the explicitly requested ones; `E_IO` on filesystem failure.
 */
export async function openLocalStore(options: LocalStoreOptions): Promise<LocalStore> {
  const { descriptor, created } = await ensureDescriptor(options.root, options.chunker);
  let index: StoreIndex | null = null;
  if (options.index ?? true) {
    try {
      const opened = StoreIndex.open(options.root);
      index = opened.index;
      // A store created just now is empty, so its new index is complete without a rebuild.
      if (created && opened.replaced === 'missing') index.markBuilt();
    } catch {
      // SQLite failed to load or the file cannot be opened: the store works without its cache.
    }
  }
  const observer: StoreObserver = index ?? staleMarkingObserver(options.root);
  const blobs = new FsBlobStore({ root: options.root, level: options.level, onCorrupt: options.onCorrupt, observer });
  const entries = new FsAcStore(options.root, observer);
  const actionCache = new ActionCache({ entries, blobs, secret: options.secret, trust: options.trust, writer: options.writer, onWarning: options.onWarning });
  return { root: options.root, descriptor, blobs, entries, actionCache, roots: new RootStore(options.root, observer), index, close: () => {
      blobs.close();
      index?.close();
    } };
}

/** The chunker parameters recorded in a descriptor. */
export function descriptorChunker(d: StoreDescriptor): ChunkerParams {
  return { min: d.chunker.min, avg: d.chunker.avg, max: d.chunker.max };
}

async function ensureDescriptor(root: string, requested: ChunkerParams | undefined): Promise<{ descriptor: StoreDescriptor; created: boolean }> {
  const dir = join(root, LAYOUT_VERSION);
  const path = join(dir, 'store.json');
  const existing = await readDescriptor(path);
  if (existing) return { descriptor: checkRequested(existing, requested, path), created: false };
  const params = validateChunkerParams(requested ?? DEFAULT_CHUNKER_PARAMS);
  const descriptor: StoreDescriptor = {
    format: 'cascache-store',
    version: 1,
    digest: 'blake3-256',
    chunker: { algorithm: CHUNKER_ALGORITHM, ...params },
    created: new Date().toISOString(),
  };
  const tmp = join(dir, `store.json.${randomBytes(6).toString('hex')}`);
  try {
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(tmp, `${JSON.stringify(descriptor, null, 2)}\n`, { flag: 'wx' });
    await fsp.link(tmp, path); // EEXIST when another process created the store first
    return { descriptor, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const winner = await readDescriptor(path);
      if (winner) return { descriptor: checkRequested(winner, requested, path), created: false };
    }
    throw toIoError(err, `creating store descriptor ${path}`);
  } finally {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
  }
}

async function readDescriptor(path: string): Promise<StoreDescriptor | null> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw toIoError(err, `reading store descriptor ${path}`);
  }
  let d: StoreDescriptor;
  try {
    d = JSON.parse(text) as StoreDescriptor;
  } catch (err) {
    throw new CascacheError(ErrorCodes.CONFIG, `store descriptor ${path} is not valid JSON`, { cause: err });
  }
  if (d?.format !== 'cascache-store' || d.version !== 1 || d.digest !== 'blake3-256' || d.chunker?.algorithm !== CHUNKER_ALGORITHM) {
    throw new CascacheError(ErrorCodes.CONFIG, `store descriptor ${path} describes a format this version does not read`);
  }
  validateChunkerParams(d.chunker);
  return d;
}

function checkRequested(d: StoreDescriptor, requested: ChunkerParams | undefined, path: string): StoreDescriptor {
  if (requested && (requested.min !== d.chunker.min || requested.avg !== d.chunker.avg || requested.max !== d.chunker.max)) {
    throw new CascacheError(
      ErrorCodes.CONFIG,
      `store ${path} was created with chunker ${d.chunker.min}/${d.chunker.avg}/${d.chunker.max}; ` +
        `${requested.min}/${requested.avg}/${requested.max} was requested (use a new store directory to change it)`,
    );
  }
  return d;
}
