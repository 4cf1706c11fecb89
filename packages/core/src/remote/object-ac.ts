/**
 * Action-cache entries and store roots on an object store:
 *
 * ```
 * <prefix>/v1/ac/<namespace>/<key>     the signed entry JSON, byte-identical to the local tier's
 * <prefix>/v1/roots/<digest>.json      a store root record (`cascache store add`)
 * ```
 * The bytes are opaque here; {@link ActionCache} verifies signatures on read. An entry names its
 * tree's manifest, whose tree object (pack-store.ts) says where every chunk is; `onRead` lets the
 * tier load it as soon as the entry arrives.
 *
 * Write-once uses the backend's conditional put where it has one, after a read: a backend that
 * ignores the condition (some S3-protocol servers) can let two concurrent writers of one key race,
 * and the later write wins; both entries are signed and name complete trees, so either is correct.
 */
import { assertNamespace, MAX_AC_ENTRY_BYTES, type AcStore } from '../action-cache';
import { assertDigest, isDigest, type Digest } from '../digest';
import type { StoreRoot } from '../roots';
import type { ObjectStore } from './object-store';

const acKey = (namespace: string, key: Digest) => `v1/ac/${namespace}/${key}`;
const rootKey = (digest: Digest) => `v1/roots/${digest}.json`;

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

  async putIfAbsent(namespace: string, key: Digest, bytes: Buffer): Promise<{ created: true } | { created: false; existing: Buffer }> {
    const existing = await this.get(namespace, key);
    if (existing) return { created: false, existing };
    const r = await this.objects.put(acKey(namespace, key), bytes, { ifAbsent: true });
    if (r.created) return { created: true };
    const now = await this.objects.get(acKey(namespace, key));
    return now ? { created: false, existing: now } : { created: true };
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
