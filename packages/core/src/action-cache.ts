/**
 * The action cache (AC): action key -> manifest digest, signed, write-once. Bazel's REAPI splits
 * CAS from AC the same way; cacache keeps its entry index apart from content.
 *
 * An entry is canonical JSON:
 * ```json
 * {"created":1732200000000,"format":"cascache.ac/v1","key":"<64 hex>","manifest":"<digest>",
 *  "namespace":"default","sig":"hmac-sha256:<64 hex>","size":12345,"writer":"ci-main"}
 * ```
 * `sig` signs the canonical JSON of every other member (see `trust.ts`): HMAC-SHA256 (RFC 2104) under
 * the cache secret, or Ed25519 (RFC 8032) under a trusted writer's private key
 * (`"sig":"ed25519:<key id>:<base64url>"`), so an entry cannot be moved to another key or namespace,
 * or edited, without the secret or the key. Which signatures a reader accepts is per namespace.
 *
 * Reads never fail on bad data: an entry that does not parse, whose signature is wrong, or whose
 * manifest or chunks are missing is a miss (reported through `onWarning`), never served.
 * Keys are write-once: a second put with a different manifest is `E_EXISTS`; the same manifest
 * again is a no-op. An entry that fails verification may be replaced, since it can never be served.
 */
import { canonicalJson } from './canonical-json';
import { assertDigest, digestOf, isDigest, type Digest } from './digest';
import { CascacheError, ErrorCodes, isCascacheError } from './errors';
import { NAMESPACE_RE } from './format';
import { manifestChunks, type Manifest } from './manifest';
import type { BlobStore } from './store/types';
import { getManifest, treeProblem } from './tree';
import { MIN_SECRET_BYTES, Trust, type SignatureScheme } from './trust';

/** Format tag of version-1 AC entries. */
export const AC_FORMAT = 'cascache.ac/v1';
export { MIN_SECRET_BYTES };
/** Largest AC entry accepted from a store, in bytes. */
export const MAX_AC_ENTRY_BYTES = 64 * 1024;

export { NAMESPACE_RE };

/**
 * Checks a namespace name: 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
 * @throws CascacheError `E_BAD_INPUT`.
 */
export function assertNamespace(namespace: string): string {
  if (typeof namespace !== 'string' || !NAMESPACE_RE.test(namespace)) {
    throw new CascacheError(ErrorCodes.BAD_INPUT, `namespace must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit, got ${JSON.stringify(String(namespace).slice(0, 80))}`);
  }
  return namespace;
}

/**
 * An action key: BLAKE3-256 over a domain-separated tuple. Encoding: the ASCII tag
 * `cascache.action-key/v1`, then for each part its length as an 8-byte big-endian integer and its
 * bytes (strings as UTF-8). The first part names the tool, e.g. `["nx", namespace, nxHash]`.
 */
export function computeActionKey(parts: ReadonlyArray<string | Uint8Array>): Digest {
  const pieces: Buffer[] = [Buffer.from('cascache.action-key/v1', 'ascii')];
  for (const part of parts) {
    const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : Buffer.from(part);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(bytes.length));
    pieces.push(len, bytes);
  }
  return digestOf(Buffer.concat(pieces));
}

/** Raw storage for AC entries: bytes per (namespace, key). Implementations do no verification. */
export interface AcStore {
  readonly name: string;
  /** The stored bytes, or null. */
  get(namespace: string, key: Digest): Promise<Buffer | null>;
  /** Stores `bytes` only if nothing is stored yet; otherwise returns what is there. Atomic. */
  putIfAbsent(namespace: string, key: Digest, bytes: Buffer): Promise<{ created: true } | { created: false; existing: Buffer }>;
  /** Stores `bytes`, replacing anything there. Atomic (readers see old or new, never a mix). */
  replace(namespace: string, key: Digest, bytes: Buffer): Promise<void>;
  /** Removes an entry; true when something was removed. */
  delete(namespace: string, key: Digest): Promise<boolean>;
  /** Every (namespace, key) stored, with when it was last written or hit (ms) when the store knows. */
  list(): AsyncIterable<{ namespace: string; key: Digest; lastUsedMs?: number }>;
  /** Marks an entry as used now (LRU eviction); optional. */
  touch?(namespace: string, key: Digest): Promise<void>;
}

/** In-memory AC storage, for tests. */
export class MemoryAcStore implements AcStore {
  readonly name = 'memory';
  private readonly map = new Map<string, Buffer>();

  async get(namespace: string, key: Digest): Promise<Buffer | null> {
    return this.map.get(`${namespace}/${key}`) ?? null;
  }
  async putIfAbsent(namespace: string, key: Digest, bytes: Buffer): Promise<{ created: true } | { created: false; existing: Buffer }> {
    const existing = this.map.get(`${namespace}/${key}`);
    if (existing) return { created: false, existing };
    this.map.set(`${namespace}/${key}`, Buffer.from(bytes));
    return { created: true };
  }
  async replace(namespace: string, key: Digest, bytes: Buffer): Promise<void> {
    this.map.set(`${namespace}/${key}`, Buffer.from(bytes));
  }
  async delete(namespace: string, key: Digest): Promise<boolean> {
    return this.map.delete(`${namespace}/${key}`);
  }
  async *list(): AsyncIterable<{ namespace: string; key: Digest }> {
    for (const k of [...this.map.keys()]) {
      const [namespace, key] = k.split('/') as [string, string];
      yield { namespace, key };
    }
  }
  /** Test hook: overwrite stored bytes without any checks (simulates tampering). */
  tamper(namespace: string, key: Digest, bytes: Buffer): void {
    this.map.set(`${namespace}/${key}`, bytes);
  }
}

/**
 * Parses stored entry bytes and checks their shape (format, fields, types), not their signature:
 * for readers that only describe entries, such as the store index. Null when malformed.
 */
export function parseAcEntry(bytes: Buffer): { entry: AcEntry; sig: string } | null {
  if (bytes.length > MAX_AC_ENTRY_BYTES) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
  const { sig, ...rest } = parsed as Record<string, unknown>;
  const e = rest as unknown as AcEntry;
  const wellFormed =
    e.format === AC_FORMAT &&
    typeof e.namespace === 'string' &&
    isDigest(e.key) &&
    isDigest(e.manifest) &&
    Number.isSafeInteger(e.size) &&
    e.size >= 0 &&
    Number.isSafeInteger(e.created) &&
    typeof e.writer === 'string' &&
    typeof sig === 'string' &&
    Object.keys(rest).length === 7;
  return wellFormed ? { entry: e, sig: sig as string } : null;
}

/**
 * The entry stored under `namespace`/`key` as {@link parseAcEntry} reads it, or null when the bytes
 * are malformed or name another place (signature not checked).
 */
export function describeAcEntry(bytes: Buffer, namespace: string, key: Digest): AcEntry | null {
  const e = parseAcEntry(bytes)?.entry;
  return e && e.namespace === namespace && e.key === key ? e : null;
}

/** A verified AC entry. */
export interface AcEntry {
  format: typeof AC_FORMAT;
  namespace: string;
  key: Digest;
  /** Root digest of the output tree. */
  manifest: Digest;
  /** Logical size of the output in bytes. */
  size: number;
  /** Creation time, ms since the epoch. */
  created: number;
  /** Who wrote it (token name, host, CI job); informational, covered by the signature. */
  writer: string;
}

/** A cache hit: the entry and its (validated) manifest. */
export interface AcHit {
  entry: AcEntry;
  manifest: Manifest;
  /** The entry as stored, signature included: what another tier keeps when it adopts the hit. */
  bytes: Buffer;
}

/** Why a stored entry was not served. */
export type AcMissReason = 'malformed' | 'bad-signature' | 'untrusted' | 'mismatch' | 'manifest-missing' | 'manifest-invalid' | 'chunks-missing';

/** Options for {@link ActionCache}. */
export interface ActionCacheOptions {
  entries: AcStore;
  blobs: BlobStore;
  /**
   * HMAC-SHA256 secret, at least 32 bytes. `null` only for a purely local store: entries are then
   * written unsigned and read without verification (see `signing`). Ignored when `trust` is given.
   */
  secret: Uint8Array | null;
  /** How entries are signed and which signatures each namespace accepts; default: from `secret`. */
  trust?: Trust;
  /** Default writer recorded in new entries. */
  writer?: string;
  /** Clock, ms since the epoch (tests). */
  now?: () => number;
  /** Told about entries that were found but not served. Core never logs by itself. */
  onWarning?: (event: { namespace: string; key: Digest; reason: AcMissReason; detail?: string }) => void;
}

export class ActionCache {
  /** How new entries are signed: `ed25519`, `hmac-sha256`, or `none` for an unsigned local store. */
  readonly signing: SignatureScheme;
  /** The signing and verification rules in use. */
  readonly trust: Trust;
  private readonly opts: ActionCacheOptions;

  /** @throws CascacheError `E_CONFIG` for a secret shorter than 32 bytes. */
  constructor(options: ActionCacheOptions) {
    this.trust = options.trust ?? new Trust({ secret: options.secret });
    this.signing = this.trust.scheme;
    this.opts = options;
  }

  /**
   * Records `key -> manifest` in `namespace`. The manifest and its chunks must already be stored.
   * @returns `created: false` when the same manifest was already recorded (a no-op).
   * @throws CascacheError `E_EXISTS` when the key already maps to a different manifest, `E_BAD_INPUT`
   * for a malformed key, digest or namespace, `E_CONFIG` when readers with this trust would not accept
   * what it signs in `namespace` (no trusted signing key for it).
   */
  async put(namespace: string, key: Digest, value: { manifest: Digest; size: number; writer?: string }): Promise<{ created: boolean; entry: AcEntry }> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    assertDigest(value.manifest, 'manifest digest');
    if (!Number.isSafeInteger(value.size) || value.size < 0) throw new CascacheError(ErrorCodes.BAD_INPUT, 'size must be a non-negative integer');
    const unreadable = this.trust.writableProblem(namespace);
    if (unreadable) throw new CascacheError(ErrorCodes.CONFIG, `cannot write to namespace ${namespace}: ${unreadable}`);
    const entry: AcEntry = {
      format: AC_FORMAT,
      namespace,
      key,
      manifest: value.manifest,
      size: value.size,
      created: (this.opts.now ?? Date.now)(),
      writer: value.writer ?? this.opts.writer ?? 'unknown',
    };
    const bytes = this.encode(entry);
    const r = await this.opts.entries.putIfAbsent(namespace, key, bytes);
    if (r.created) return { created: true, entry };
    const existing = this.verify(namespace, key, r.existing);
    if (typeof existing === 'string') {
      // The stored entry can never be served (tampered, corrupt, other secret): replace it.
      await this.opts.entries.replace(namespace, key, bytes);
      return { created: true, entry };
    }
    if (existing.manifest === value.manifest) return { created: false, entry: existing };
    if (!(await this.servable(existing))) {
      // Its manifest or a chunk is gone (quarantined, evicted): it can never be a hit, so a valid
      // write may take its place. That is how a store heals; write-once protects only what serves.
      await this.opts.entries.replace(namespace, key, bytes);
      return { created: true, entry };
    }
    throw new CascacheError(ErrorCodes.EXISTS, `action key ${key} in namespace ${namespace} already maps to another output`, {
      details: { namespace, key, existing: existing.manifest, attempted: value.manifest },
    });
  }

  /**
   * Looks a key up. A hit means the entry verified and its manifest and every chunk are present
   * (`verifyChunks: false` skips the chunk check, for callers that fetch chunks themselves).
   * Never throws for bad stored data: that is a miss, reported through `onWarning`.
   * @throws CascacheError `E_BAD_INPUT` for a malformed key or namespace; store failures (`E_IO`,
   * `E_UNAVAILABLE`) propagate.
   */
  async get(namespace: string, key: Digest, options: { verifyChunks?: boolean } = {}): Promise<AcHit | null> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    const bytes = await this.opts.entries.get(namespace, key);
    if (bytes === null) return null;
    const entry = this.verify(namespace, key, bytes);
    if (typeof entry === 'string') return this.miss(namespace, key, entry);
    let manifest: Manifest | null;
    try {
      manifest = await getManifest(this.opts.blobs, entry.manifest);
    } catch (err) {
      if (isCascacheError(err, ErrorCodes.BAD_INPUT) || isCascacheError(err, ErrorCodes.INTEGRITY)) {
        return this.miss(namespace, key, 'manifest-invalid', err.message);
      }
      throw err;
    }
    if (manifest === null) return this.miss(namespace, key, 'manifest-missing', entry.manifest);
    if (options.verifyChunks ?? true) {
      const chunks = manifestChunks(manifest);
      const present = await this.opts.blobs.has(chunks);
      const missing = chunks.length - present.size;
      if (missing > 0) return this.miss(namespace, key, 'chunks-missing', `${missing} of ${chunks.length} chunks`);
    }
    await this.opts.entries.touch?.(namespace, key);
    return { entry, manifest, bytes };
  }

  /**
   * Keeps an entry verified elsewhere (a remote tier's hit) as it was signed, without signing it
   * again: a reader holds no key for `main`, yet keeps `main`'s entries. Replaces what is stored
   * only when that cannot be served, or with `overServable` (the entry that won a write race on a
   * shared tier replaces the one that lost here). @returns false when the bytes do not verify here
   * (nothing stored) or a servable entry with another manifest is already stored.
   * @throws CascacheError `E_BAD_INPUT` for a malformed key or namespace.
   */
  async adopt(namespace: string, key: Digest, bytes: Buffer, options: { overServable?: boolean } = {}): Promise<boolean> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    const entry = this.verify(namespace, key, bytes);
    if (typeof entry === 'string') return false;
    const r = await this.opts.entries.putIfAbsent(namespace, key, bytes);
    if (r.created || r.existing.equals(bytes)) return true;
    const existing = this.verify(namespace, key, r.existing);
    if (typeof existing !== 'string') {
      if (existing.manifest === entry.manifest) return true; // the same output, signed twice: keep either
      if (!options.overServable && (await this.servable(existing))) return false; // write-once
    }
    await this.opts.entries.replace(namespace, key, bytes);
    return true;
  }

  /** Removes an entry (invalidation); true when something was removed. */
  async delete(namespace: string, key: Digest): Promise<boolean> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    return this.opts.entries.delete(namespace, key);
  }

  /** True when an entry's manifest and every chunk are present (nothing reported, nothing touched). */
  private async servable(entry: AcEntry): Promise<boolean> {
    try {
      return (await treeProblem(this.opts.blobs, entry.manifest)) === null;
    } catch {
      return false;
    }
  }

  /** Reads and verifies a stored entry without checking its manifest; null when absent or invalid. */
  async peek(namespace: string, key: Digest): Promise<AcEntry | null> {
    const bytes = await this.opts.entries.get(namespace, key);
    if (bytes === null) return null;
    const entry = this.verify(namespace, key, bytes);
    return typeof entry === 'string' ? null : entry;
  }

  private encode(entry: AcEntry): Buffer {
    return Buffer.from(canonicalJson({ ...entry, sig: this.sign(entry) }), 'utf8');
  }

  private sign(entry: AcEntry): string {
    return this.trust.sign(canonicalJson(entry));
  }

  /**
   * Checks stored entry bytes as a reader would (format, signature with this cache's secret, that it
   * names `namespace` and `key`), without touching the store: the entry, or why it cannot be served.
   * A team server uses it to accept only entries its readers could serve.
   */
  check(namespace: string, key: Digest, bytes: Buffer): AcEntry | AcMissReason {
    return this.verify(namespace, key, bytes);
  }

  /** The verified entry, or the reason it cannot be served. */
  private verify(namespace: string, key: Digest, bytes: Buffer): AcEntry | AcMissReason {
    const parsed = parseAcEntry(bytes);
    if (!parsed) return 'malformed';
    const { entry: e, sig } = parsed;
    // Verified as a reader of the namespace it is stored under: an entry signed for `pr-1` and
    // copied into `main` fails here (its own namespace field is covered by the signature too).
    const checked = this.trust.verify(namespace, canonicalJson(e), sig);
    if (checked !== 'ok') return checked;
    if (e.namespace !== namespace || e.key !== key) return 'mismatch';
    return e;
  }

  private miss(namespace: string, key: Digest, reason: AcMissReason, detail?: string): null {
    this.opts.onWarning?.({ namespace, key, reason, detail });
    return null;
  }
}
