/**
 * Action-cache entries and store roots on an object store:
 *
 * ```
 * <prefix>/v1/ac/<namespace>/<key>     the signed entry JSON, byte-identical to the local tier's
 * <prefix>/v1/roots/<digest>.json      a store root record (`cascache store add`)
 * <prefix>/v1/runs/<tool>/<branch>/...  shared run records (runs.ts)
 * ```
 * The bytes are opaque here; {@link ActionCache} verifies signatures on read. An entry names its
 * tree's manifest, whose tree object (pack-store.ts) says where every chunk is; `onRead` lets the
 * tier load it as soon as the entry arrives.
 *
 * Write-once uses the backend's conditional put (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`)
 * after a read, so of two writers of one key at once exactly one creates it and the other is told
 * what won ({@link LayeredStore} then keeps the winner locally too). Some S3-protocol servers ignore
 * the condition; the first entry this store creates finds out (the same conditional put once more
 * must be refused) and {@link ObjectAcStore.conditionalWrites} says so. On such a backend every
 * created entry is read back, and one that another writer replaced meanwhile is reported as not
 * created: that narrows the race to the moment between a write and its read-back, which only the
 * backend's condition can close.
 */
import { assertNamespace, MAX_AC_ENTRY_BYTES, type AcStore } from '../action-cache';
import { assertDigest, isDigest, type Digest } from '../digest';
import type { StoreRoot } from '../roots';
import { CascacheError, ErrorCodes } from '../errors';
import type { ObjectStore } from './object-store';

const acKey = (namespace: string, key: Digest) => `v1/ac/${namespace}/${key}`;
const rootKey = (digest: Digest) => `v1/roots/${digest}.json`;
/** `v1/runs/<tool>/<branch id>/<inverted start>-<random>.json` (runs.ts). */
const RUN_KEY_RE = /^v1\/runs\/[a-z0-9][a-z0-9._-]{0,63}\/(-|[0-9a-f]{16})\/[0-9]{13}-[0-9a-f]{8}\.json$/;
/** Largest run record read: 100,000 keys of 67 bytes, plus the rest. */
const MAX_RUN_RECORD_BYTES = 8 * 1024 * 1024;

/** Options for {@link ObjectAcStore}. */
export interface ObjectAcStoreOptions {
  objects: ObjectStore;
  /** Called with the bytes of every entry read (not yet verified), before they are returned. */
  onRead?: (bytes: Buffer) => Promise<void>;
}

/** An {@link AcStore} whose entries are objects, plus store roots. */
export class ObjectAcStore implements AcStore {
  readonly name: string;
  private readonly objects: ObjectStore;
  private readonly onRead: ObjectAcStoreOptions['onRead'];
  private honoured: boolean | undefined;

  constructor(options: ObjectAcStoreOptions) {
    this.objects = options.objects;
    this.name = options.objects.name;
    this.onRead = options.onRead;
  }

  async get(namespace: string, key: Digest): Promise<Buffer | null> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    const bytes = await this.objects.get(acKey(namespace, key));
    if (bytes === null) return null;
    // An oversized entry is returned as is: ActionCache rejects it as malformed.
    if (bytes.length <= MAX_AC_ENTRY_BYTES) await this.onRead?.(bytes);
    return bytes;
  }

  /**
   * Whether the backend honours conditional puts: unknown (undefined) until this store first creates
   * an entry, then learned once by putting the same bytes again under the condition.
   */
  get conditionalWrites(): boolean | undefined {
    return this.honoured;
  }

  async putIfAbsent(namespace: string, key: Digest, bytes: Buffer): Promise<{ created: true } | { created: false; existing: Buffer }> {
    const existing = await this.get(namespace, key);
    if (existing) return { created: false, existing };
    const objectKey = acKey(namespace, key);
    const r = await this.objects.put(objectKey, bytes, { ifAbsent: true });
    if (!r.created) {
      const now = await this.objects.get(objectKey);
      return now ? { created: false, existing: now } : { created: true };
    }
    // The same bytes again, under the condition: a backend that honours it refuses (harmless
    // either way: the object holds these bytes or a concurrent writer's, which the read-back sees).
    if (this.honoured === undefined) this.honoured = !(await this.objects.put(objectKey, bytes, { ifAbsent: true })).created;
    if (!this.honoured) {
      const now = await this.objects.get(objectKey);
      if (now && !now.equals(bytes)) return { created: false, existing: now };
    }
    return { created: true };
  }

  async replace(namespace: string, key: Digest, bytes: Buffer): Promise<void> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    await this.objects.put(acKey(namespace, key), bytes);
  }

  async delete(namespace: string, key: Digest): Promise<boolean> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    return this.objects.delete(acKey(namespace, key));
  }

  async *list(): AsyncIterable<{ namespace: string; key: Digest; lastUsedMs?: number }> {
    for await (const o of this.objects.list('v1/ac/')) {
      const m = /^v1\/ac\/([^/]+)\/([0-9a-f]{64})$/.exec(o.key);
      if (m && isDigest(m[2])) yield { namespace: m[1]!, key: m[2]!, lastUsedMs: o.mtimeMs };
    }
  }

  /** Uploads a store root record. @returns bytes sent. */
  async putRoot(root: StoreRoot): Promise<number> {
    assertDigest(root.digest, 'root digest');
    const body = Buffer.from(JSON.stringify(root));
    await this.objects.put(rootKey(root.digest), body);
    return body.length;
  }

  async putRun(objectKey: string, bytes: Buffer): Promise<number> {
    if (!RUN_KEY_RE.test(objectKey)) throw new CascacheError(ErrorCodes.BAD_INPUT, `not a run record key: ${objectKey}`);
    await this.objects.put(objectKey, bytes);
    return bytes.length;
  }

  async listRuns(prefix: string, limit: number): Promise<string[]> {
    const keys: string[] = [];
    // Listings come sorted from S3 and GCS, but not from every store: collect a bounded page, sort.
    for await (const o of this.objects.list(prefix)) {
      if (RUN_KEY_RE.test(o.key)) keys.push(o.key);
      if (keys.length >= Math.max(limit, 1000)) break;
    }
    return keys.sort().slice(0, limit);
  }

  async getRun(objectKey: string): Promise<Buffer | null> {
    if (!RUN_KEY_RE.test(objectKey)) return null;
    const bytes = await this.objects.get(objectKey);
    return bytes && bytes.length <= MAX_RUN_RECORD_BYTES ? bytes : null;
  }

  /** Every shared run record, in no particular order (GC). */
  async *listAllRuns(): AsyncIterable<{ key: string; mtimeMs: number }> {
    for await (const o of this.objects.list('v1/runs/')) if (RUN_KEY_RE.test(o.key)) yield { key: o.key, mtimeMs: o.mtimeMs ?? Number.NaN }; // unknown age: kept
  }

  /** Deletes a run record; true when something was deleted. */
  async deleteRun(objectKey: string): Promise<boolean> {
    if (!RUN_KEY_RE.test(objectKey)) return false;
    return this.objects.delete(objectKey);
  }

  /** A store root record, or null (also for a malformed one). */
  async getRoot(digest: Digest): Promise<StoreRoot | null> {
    assertDigest(digest, 'root digest');
    const body = await this.objects.get(rootKey(digest));
    if (!body) return null;
    try {
      const r = JSON.parse(body.toString('utf8')) as StoreRoot;
      return r && r.digest === digest && typeof r.name === 'string' ? r : null;
    } catch {
      return null;
    }
  }
}
