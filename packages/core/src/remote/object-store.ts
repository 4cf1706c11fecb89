/**
 * The object-store backend under every remote tier: named immutable-ish objects with ranged reads,
 * as S3 and GCS offer them (restic's `Backend` at the object level). Packs, pack indexes, tree objects,
 * AC entries and store roots are all objects; {@link PackStore} turns this into a `BlobStore`.
 *
 * Contract (checked by `test/support/object-conformance.ts` for every implementation):
 * - keys are relative to the tier's prefix, `/`-separated, ASCII;
 * - a missing object is `null` / `false`, only real failures throw `CascacheError`:
 *   `E_UNAVAILABLE` (retryable: network errors, timeouts, 5xx, throttling) or `E_CONFIG`
 *   (not retryable: no such bucket, access denied, bad credentials);
 * - `put` replaces atomically (readers see the old or the new object, never a mix); with
 *   `ifAbsent` it does not replace an existing object where the backend can promise that
 *   (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`) and reports `created: false`.
 */
import { CascacheError, ErrorCodes } from '../errors';

/** A byte range of an object: `length` bytes from `offset`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** One listed object. */
export interface ObjectInfo {
  /** Key relative to the tier prefix. */
  key: string;
  /** Size in bytes. */
  size: number;
  /** Last modification time, ms since the epoch, when the backend reports it. */
  mtimeMs?: number;
}

/** An object store (one bucket and prefix). */
export interface ObjectStore {
  /** For logs and warnings, e.g. `s3://bucket/prefix`. Never contains a secret. */
  readonly name: string;
  /** The object's bytes (or the requested range of them), or `null` when it does not exist. */
  get(key: string, range?: ByteRange): Promise<Buffer | null>;
  /** Stores an object. */
  put(key: string, body: Buffer, options?: { ifAbsent?: boolean }): Promise<{ created: boolean }>;
  /** Removes an object; true when it existed (backends that cannot tell return true). */
  delete(key: string): Promise<boolean>;
  /** Every object whose key starts with `prefix`, in no promised order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /**
   * Optional: load the client and open a connection ahead of the first real request (a server calls
   * it right after it starts listening). Never throws.
   */
  warm?(): Promise<void>;
}

/** In-memory object store for tests; `faults` lets a test make calls fail. */
export class MemoryObjectStore implements ObjectStore {
  readonly name: string;
  readonly objects = new Map<string, { body: Buffer; mtimeMs: number }>();
  /** Counts of calls by operation, for asserting request economy. */
  readonly calls = { get: 0, put: 0, delete: 0, list: 0 };
  /** When set, called before each operation; throw from it to inject a fault. */
  faults: ((op: 'get' | 'put' | 'delete' | 'list', key: string) => void) | null = null;

  constructor(name = 'memory://objects') {
    this.name = name;
  }

  async get(key: string, range?: ByteRange): Promise<Buffer | null> {
    this.calls.get++;
    this.faults?.('get', key);
    const o = this.objects.get(key);
    if (!o) return null;
    if (!range) return Buffer.from(o.body);
    checkRange(this.name, key, range, o.body.length);
    return Buffer.from(o.body.subarray(range.offset, range.offset + range.length));
  }

  async put(key: string, body: Buffer, options: { ifAbsent?: boolean } = {}): Promise<{ created: boolean }> {
    this.calls.put++;
    this.faults?.('put', key);
    if (options.ifAbsent && this.objects.has(key)) return { created: false };
    this.objects.set(key, { body: Buffer.from(body), mtimeMs: Date.now() });
    return { created: true };
  }

  async delete(key: string): Promise<boolean> {
    this.calls.delete++;
    this.faults?.('delete', key);
    return this.objects.delete(key);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.calls.list++;
    this.faults?.('list', prefix);
    for (const [key, o] of [...this.objects]) if (key.startsWith(prefix)) yield { key, size: o.body.length, mtimeMs: o.mtimeMs };
  }
}

/**
 * Checks that a range lies inside an object of `size` bytes.
 * @throws CascacheError `E_INTEGRITY` when it does not (an index points past the end of its pack).
 */
export function checkRange(store: string, key: string, range: ByteRange, size: number): void {
  if (!Number.isSafeInteger(range.offset) || !Number.isSafeInteger(range.length) || range.offset < 0 || range.length < 1 || range.offset + range.length > size) {
    throw new CascacheError(ErrorCodes.INTEGRITY, `range ${range.offset}+${range.length} is outside ${store}/${key} (${size} bytes)`, {
      details: { key, ...range, size },
    });
  }
}

/**
 * `E_UNAVAILABLE`, retryable: the remote may answer later. `details.timeout` marks a remote that
 * accepted the request and then did not answer in time (a hung server: see the circuit breaker).
 */
export function unavailable(store: string, what: string, cause: unknown): CascacheError {
  return new CascacheError(ErrorCodes.UNAVAILABLE, `${store}: ${what}: ${describe(cause)}`, { cause, retryable: true, details: isTimeout(cause) ? { timeout: true } : undefined });
}

/** A client-side timeout: the SDKs' `TimeoutError`, Node's `ETIMEDOUT`, an aborted request. */
function isTimeout(err: unknown): boolean {
  const e = err as { name?: string; code?: string } | null;
  return e?.name === 'TimeoutError' || e?.code === 'ETIMEDOUT' || e?.code === 'ESOCKETTIMEDOUT' || e?.name === 'AbortError';
}

/** `E_CONFIG`, not retryable: the remote refuses us (credentials, bucket, permissions). */
export function refused(store: string, what: string, cause: unknown): CascacheError {
  return new CascacheError(ErrorCodes.CONFIG, `${store}: ${what}: ${describe(cause)}`, { cause, retryable: false });
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** Joins a tier prefix and a key: `a/b` + `v1/x` = `a/b/v1/x`; an empty prefix adds nothing. */
export function joinKey(prefix: string, key: string): string {
  return prefix === '' ? key : `${prefix}/${key}`;
}

/** Normalizes a user-given prefix: no leading or trailing `/`, no empty, `.` or `..` segments. */
export function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (p === '') return '';
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') {
      throw new CascacheError(ErrorCodes.CONFIG, `remote prefix ${JSON.stringify(prefix)} has an empty, '.' or '..' segment`);
    }
  }
  return p;
}
