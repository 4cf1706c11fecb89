/**
 * The one storage interface every tier implements (restic's `Backend`, bazel-remote's cache):
 * content-addressed blobs keyed by the BLAKE3 digest of their raw bytes. It knows nothing about
 * action keys or manifests; those layers sit on top (cacache's content vs entry-index split).
 *
 * Contract, checked by the shared conformance suite for every implementation:
 * - A miss is `null` / `false` / absent from a set. Only real failures throw, as CascacheError.
 * - `put` hashes the bytes it is given and rejects a mismatch with `E_INTEGRITY`: a caller's digest is
 *   never trusted. Concurrent puts of one digest are safe; a put of a present blob is a cheap no-op.
 * - `get` returns the raw bytes, verified against the digest. A stored blob found corrupt is reported
 *   as `E_INTEGRITY` and removed from service (quarantined), so the next `get` is a miss and a
 *   layered store can refetch it from another tier.
 * - Blobs are bounded by `MAX_BLOB_BYTES`; artifacts are many blobs, never one.
 */
import type { Readable } from 'node:stream';
import type { Digest } from '../digest';

/** One stored blob as listed by {@link BlobStore.list}. */
export interface BlobInfo {
  digest: Digest;
  /** Bytes the tier uses for it (after compression and framing). */
  storedSize: number;
  /** Last access time in ms since the epoch, when the tier tracks it. */
  atimeMs?: number;
  /** When the blob was written, ms since the epoch, when the tier knows (GC grace periods). */
  mtimeMs?: number;
}

/** Result of {@link BlobStore.put}. */
export interface PutResult {
  /** False when the blob was already present (deduplicated). */
  created: boolean;
  /** Bytes the tier wrote for it (0 when not created). */
  storedBytes: number;
}

/** Per-call hints for {@link BlobStore.put}. */
export interface PutOptions {
  /** False when the caller knows the content is already compressed (see codec `looksCompressed`). */
  compressible?: boolean;
}

/** A content-addressed blob tier. All methods may throw CascacheError (`E_IO`, `E_UNAVAILABLE`...). */
export interface BlobStore {
  /** Short human-readable name for logs and stats, e.g. `fs:/home/me/.cascache`. */
  readonly name: string;
  /** The subset of `digests` that are present. Batched: one call for many digests. */
  has(digests: Iterable<Digest>): Promise<Set<Digest>>;
  /** The raw bytes of a blob, verified, or `null` on a miss. @throws `E_INTEGRITY` on corruption. */
  get(digest: Digest): Promise<Readable | null>;
  /**
   * Stores raw bytes under their digest.
   * @throws `E_BAD_INPUT` for a malformed digest, `E_INTEGRITY` when the bytes do not hash to it,
   * `E_TOO_LARGE` over `MAX_BLOB_BYTES`.
   */
  put(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options?: PutOptions): Promise<PutResult>;
  /** Removes a blob; true when something was removed. */
  delete(digest: Digest): Promise<boolean>;
  /** Every stored blob, in no particular order. */
  list(): AsyncIterable<BlobInfo>;
}

/**
 * Told about every change a local store makes, after it is on disk, so an index can follow the files
 * (see store-index.ts). Calls are synchronous and must not throw: an observer that fails records that
 * it fell behind, and the files stay the truth.
 */
export interface StoreObserver {
  /** A blob file was created. Sizes in bytes, time in ms since the epoch. */
  blobWritten(blob: { digest: Digest; storedSize: number; rawSize: number; codec: number; mtimeMs: number }): void;
  /** A blob file was deleted or quarantined. */
  blobDeleted(digest: Digest): void;
  /** An action-cache entry file was created or replaced with these bytes (not yet verified). */
  entryWritten(namespace: string, key: Digest, bytes: Buffer, atMs: number): void;
  /** An entry was hit: its last-use time is now `atMs`. */
  entryUsed(namespace: string, key: Digest, atMs: number): void;
  entryDeleted(namespace: string, key: Digest): void;
  /** A store root was added or renamed. */
  rootWritten(root: { digest: Digest; name: string; size: number; files: number; created: number }): void;
  rootRemoved(digest: Digest): void;
}

/**
 * A store that can group the puts of one unit of work (one task output, one fetched tree) into one
 * pack file (the local store: store/packs.ts). What `fn` put is durable when `withBatch` resolves.
 */
export interface BatchingBlobStore extends BlobStore {
  withBatch<T>(fn: (store: BlobStore) => Promise<T>): Promise<T>;
}

/** Runs `fn` in a batch when the store has them, else with the store itself. */
export function inBatch<T>(store: BlobStore, fn: (store: BlobStore) => Promise<T>): Promise<T> {
  const batching = store as Partial<BatchingBlobStore>;
  return typeof batching.withBatch === 'function' ? batching.withBatch(fn) : fn(store);
}
