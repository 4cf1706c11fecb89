/**
 * Remote tiers from URLs (restic's `ParseConfig(url)`): one function turns a user's
 * `s3://bucket/prefix?region=eu-west-1&endpoint=http://127.0.0.1:9000&forcePathStyle=true` or
 * `gs://bucket/prefix?endpoint=http://127.0.0.1:4443` into a {@link RemoteTier}: a pack store for blobs,
 * an AC store for entries, both on one object store wrapped in a circuit breaker.
 *
 * Secrets never go in a URL: credentials come from the cloud SDK's own chain (or `credentials`),
 * and a URL with a user or password is refused.
 */
import { isDigest, type Digest } from '../digest';
import { CascacheError, ErrorCodes } from '../errors';
import type { AcStore } from '../action-cache';
import type { StoreRoot } from '../roots';
import type { BlobStore } from '../store/types';
import { BreakerObjectStore, CircuitBreaker, type BreakerOptions } from './breaker';
import { HttpTierClient } from './http-tier';
import { GcsObjectStore } from './gcs';
import { ObjectAcStore } from './object-ac';
import type { ObjectStore } from './object-store';
import { PackStore, type PackStoreOptions, type PackUploadResult } from './pack-store';
import { S3ObjectStore } from './s3';

/** A parsed remote URL. */
export type RemoteLocation =
  | { kind: 's3'; bucket: string; prefix: string; region?: string; endpoint?: string; forcePathStyle?: boolean }
  | { kind: 'gs'; bucket: string; prefix: string; apiEndpoint?: string; projectId?: string }
  | { kind: 'http'; baseUrl: string };

/** One tier as configured (nx.json plugin options, the config file, `--remote`). */
export interface TierConfig {
  /** `s3://…`, `gs://…`, or `https://host[:port]/` (another cascache server; `http://` on loopback only). */
  url: string;
  /** Bearer token for an HTTP tier (from the config file or the environment, never the URL). */
  token?: string;
  /** zstd level for blobs this tier encodes. Default 3. */
  level?: number;
  /** Read from this tier, never write to it. */
  readOnly?: boolean;
  /** Pack size target, bytes. Default 16 MiB. */
  packTargetBytes?: number;
}

/** One blob from `fetchMany`: raw bytes, verified, and the frame they were decoded from. */
export interface FetchedBlob {
  digest: Digest;
  bytes: Buffer;
  frame?: Buffer;
}

/** The blob side of a tier: a BlobStore with batched transfer and tree objects. */
export interface TierBlobStore extends BlobStore {
  /** A blob's raw bytes, verified, or null. */
  getBuffer(digest: Digest): Promise<Buffer | null>;
  /**
   * Many blobs with few requests; absent or damaged ones are skipped (the caller compares). Each
   * comes with the verified frame it was decoded from when the tier has one, so a local tier can
   * keep that frame instead of compressing the bytes again.
   */
  fetchMany(digests: Iterable<Digest>): AsyncGenerator<FetchedBlob>;
  /** Uploads many blobs, skipping present ones; each is checked against its digest first. */
  putMany(blobs: AsyncIterable<{ digest: Digest; bytes: Uint8Array }> | Iterable<{ digest: Digest; bytes: Uint8Array }>): Promise<PackUploadResult>;
  /** True when the tier holds the tree of `manifest` (the manifest and, by upload order, its chunks). */
  hasTree(manifest: Digest): Promise<boolean>;
  /** Prepares reading a tree (learns where its chunks are); false when the tier does not have it. */
  loadTree(manifest: Digest): Promise<boolean>;
  /** Records a tree whose chunks the tier holds. @returns bytes sent. */
  writeTree(manifest: Digest, manifestBytes: Buffer): Promise<number>;
  /**
   * Told that a tree read from this tier came back incomplete (a chunk it lists failed
   * verification): until it is written again, `hasTree` is false for it here, so the next upload of
   * that output re-sends what is damaged and rewrites the tree object instead of trusting it.
   */
  distrustTree?(manifest: Digest): void;
}

/** The entry side of a tier: AC entries, store roots and, on object stores, shared run records. */
export interface TierAcStore extends AcStore {
  /** Uploads a store root record. @returns bytes sent. */
  putRoot(root: StoreRoot): Promise<number>;
  /** A store root record, or null. */
  getRoot(digest: Digest): Promise<StoreRoot | null>;
  /** Uploads a signed run record under its object key (runs.ts). Absent: the tier keeps no runs. @returns bytes sent. */
  putRun?(objectKey: string, bytes: Buffer): Promise<number>;
  /** Object keys under a run prefix, sorted (newest first, by construction), at most `limit`. */
  listRuns?(prefix: string, limit: number): Promise<string[]>;
  /** A run record's bytes (not yet verified), or null. */
  getRun?(objectKey: string): Promise<Buffer | null>;
  /**
   * False when the backend was found to ignore conditional puts, so two writers of one key at once
   * may both believe they created it (object-ac.ts); undefined until known or where it cannot be.
   */
  readonly conditionalWrites?: boolean;
}

/** A remote tier: blobs, AC entries and roots, behind one circuit breaker. */
export interface RemoteTier {
  readonly name: string;
  /** The URL it was opened from (no secrets: URLs never carry them). */
  readonly url: string;
  readonly readOnly: boolean;
  readonly blobs: TierBlobStore;
  readonly entries: TierAcStore;
  /**
   * Reset on an explicit flush, so it gets one real attempt; open again (with the failure that
   * opened it) when the tier failed that many times in a row since.
   */
  readonly breaker: { reset(): void; readonly isOpen: boolean; readonly lastFailure: string | null; failed?(err: unknown): void };
  /** Loads the client and opens a connection before the first request needs it. Never throws. */
  warm(): Promise<void>;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$/;

/**
 * Parses a remote URL.
 * @throws CascacheError `E_CONFIG` for an unknown scheme, a bad bucket, credentials in the URL, an
 * unknown query parameter or a bad endpoint.
 */
export function parseRemoteUrl(url: string): RemoteLocation {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new CascacheError(ErrorCodes.CONFIG, `remote ${JSON.stringify(url)} is not a URL (expected s3://bucket/prefix or gs://bucket/prefix)`);
  }
  if (u.username || u.password) throw new CascacheError(ErrorCodes.CONFIG, 'a remote URL must not carry credentials; use the SDK credential chain or config');
  const bucket = u.hostname;
  const prefix = decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, '');
  const params = Object.fromEntries(u.searchParams);
  const allow = (names: string[]) => {
    for (const k of Object.keys(params)) if (!names.includes(k)) throw new CascacheError(ErrorCodes.CONFIG, `remote ${u.protocol}// does not take the parameter ${JSON.stringify(k)} (known: ${names.join(', ')})`);
  };
  const endpoint = (v: string | undefined) => {
    if (v === undefined) return undefined;
    try {
      const e = new URL(v);
      if (e.protocol !== 'http:' && e.protocol !== 'https:') throw new Error('scheme');
      return e.toString().replace(/\/$/, '');
    } catch {
      throw new CascacheError(ErrorCodes.CONFIG, `remote endpoint ${JSON.stringify(v)} is not an http(s) URL`);
    }
  };
  if (u.protocol === 's3:' || u.protocol === 'gs:') {
    if (!BUCKET_RE.test(bucket)) throw new CascacheError(ErrorCodes.CONFIG, `remote bucket ${JSON.stringify(bucket)} is not a valid bucket name`);
  }
  if (u.protocol === 's3:') {
    allow(['region', 'endpoint', 'forcePathStyle']);
    const fps = params.forcePathStyle;
    if (fps !== undefined && fps !== 'true' && fps !== 'false') throw new CascacheError(ErrorCodes.CONFIG, 'forcePathStyle must be true or false');
    return { kind: 's3', bucket, prefix, region: params.region, endpoint: endpoint(params.endpoint), forcePathStyle: fps === undefined ? undefined : fps === 'true' };
  }
  if (u.protocol === 'gs:') {
    allow(['endpoint', 'projectId']);
    return { kind: 'gs', bucket, prefix, apiEndpoint: endpoint(params.endpoint), projectId: params.projectId };
  }
  if (u.protocol === 'https:' || u.protocol === 'http:') {
    if (u.search || u.hash) throw new CascacheError(ErrorCodes.CONFIG, 'an http(s) remote takes no query or fragment; its token goes in config or CASCACHE_REMOTE_TOKEN');
    if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
      throw new CascacheError(ErrorCodes.CONFIG, `http:// is allowed for loopback only (tokens and cache entries would cross the network in clear); use https://${u.host}/`);
    }
    return { kind: 'http', baseUrl: `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}` };
  }
  throw new CascacheError(ErrorCodes.CONFIG, `remote scheme ${u.protocol} is not supported (use s3://, gs:// or https://)`);
}

/**
 * Validates a list of tiers from configuration (nx.json, a config file, `CASCACHE_TIERS`): each item
 * is a URL string or `{url, level?, readOnly?, packTargetBytes?}`. Unknown keys are errors, so a typo
 * is never silently ignored. `where` names the source in messages.
 * @throws CascacheError `E_CONFIG`.
 */
export function parseTierConfigs(value: unknown, where: string): TierConfig[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new CascacheError(ErrorCodes.CONFIG, `${where}: tiers must be a list`);
  return value.map((item, i) => {
    const at = `${where}: tiers[${i}]`;
    const t = typeof item === 'string' ? { url: item } : item;
    if (typeof t !== 'object' || t === null || Array.isArray(t)) throw new CascacheError(ErrorCodes.CONFIG, `${at} must be a URL or an object with a url`);
    const known = ['url', 'level', 'readOnly', 'packTargetBytes', 'token'];
    for (const k of Object.keys(t)) if (!known.includes(k)) throw new CascacheError(ErrorCodes.CONFIG, `${at}: unknown key "${k}" (known: ${known.join(', ')})`);
    const c = t as Record<string, unknown>;
    if (typeof c.url !== 'string') throw new CascacheError(ErrorCodes.CONFIG, `${at}: url must be a string`);
    parseRemoteUrl(c.url);
    if (c.level !== undefined && !(Number.isInteger(c.level) && (c.level as number) >= 0 && (c.level as number) <= 19)) throw new CascacheError(ErrorCodes.CONFIG, `${at}: level must be an integer 0-19`);
    if (c.readOnly !== undefined && typeof c.readOnly !== 'boolean') throw new CascacheError(ErrorCodes.CONFIG, `${at}: readOnly must be true or false`);
    const ptb = c.packTargetBytes;
    if (ptb !== undefined && !(Number.isInteger(ptb) && (ptb as number) >= 64 * 1024 && (ptb as number) <= 1024 * 1024 * 1024)) throw new CascacheError(ErrorCodes.CONFIG, `${at}: packTargetBytes must be an integer from 64 KiB to 1 GiB`);
    if (c.token !== undefined && (typeof c.token !== 'string' || c.token === '')) throw new CascacheError(ErrorCodes.CONFIG, `${at}: token must be a non-empty string`);
    return { url: c.url, level: c.level as number | undefined, readOnly: c.readOnly as boolean | undefined, packTargetBytes: ptb as number | undefined, token: c.token as string | undefined };
  });
}

/**
 * Gives HTTP tiers without a token of their own the default one (the edges pass
 * `CASCACHE_REMOTE_TOKEN`); other tiers are returned unchanged.
 */
export function withDefaultToken(tiers: TierConfig[], token: string | undefined): TierConfig[] {
  if (!token) return tiers;
  return tiers.map((t) => (t.token || !/^https?:/i.test(t.url) ? t : { ...t, token }));
}

/** Options for {@link openRemoteTier} beyond the tier's config. */
export interface OpenTierOptions {
  /** Circuit-breaker settings and callbacks. */
  breaker?: BreakerOptions;
  /** Explicit S3 credentials (default: the SDK chain). */
  s3Credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Pack store tuning and callbacks. */
  pack?: Omit<PackStoreOptions, 'objects' | 'level' | 'packTargetBytes'>;
  /** Use this object store instead of the one the URL names (tests, fault injection). */
  objects?: ObjectStore;
}

/**
 * Opens a remote tier. Nothing is sent until the first read or write.
 * @throws CascacheError `E_CONFIG` for a bad URL.
 */
export function openRemoteTier(config: TierConfig, options: OpenTierOptions = {}): RemoteTier {
  const location = options.objects ? null : parseRemoteUrl(config.url);
  if (location?.kind === 'http') {
    const breaker = new CircuitBreaker(location.baseUrl, options.breaker);
    const client = new HttpTierClient({ baseUrl: location.baseUrl, token: config.token, breaker, level: config.level, packTargetBytes: config.packTargetBytes });
    return { name: location.baseUrl, url: config.url, readOnly: config.readOnly ?? false, blobs: client.blobs, entries: client.entries, breaker, warm: async () => undefined };
  }
  const raw = options.objects ?? objectStoreFor(location as Exclude<RemoteLocation, { kind: 'http' }>, options);
  const objects = new BreakerObjectStore(raw, options.breaker);
  const blobs = new PackStore({ ...options.pack, objects, level: config.level, packTargetBytes: config.packTargetBytes });
  // An entry names its tree's manifest: load the tree object now, so the reads that follow find
  // the manifest and every chunk without listing the bucket. Unverified on purpose: the manifest is
  // checked against its digest and every chunk against its own.
  const entries = new ObjectAcStore({
    objects,
    onRead: async (bytes) => {
      const manifest = manifestOf(bytes);
      if (manifest) await blobs.loadTree(manifest).catch(() => false);
    },
  });
  return {
    name: raw.name,
    url: config.url,
    readOnly: config.readOnly ?? false,
    blobs,
    entries,
    breaker: objects.breaker,
    warm: () => objects.warm(),
  };
}

function objectStoreFor(loc: Exclude<RemoteLocation, { kind: 'http' }>, options: OpenTierOptions): ObjectStore {
  if (loc.kind === 's3') {
    return new S3ObjectStore({ bucket: loc.bucket, prefix: loc.prefix, region: loc.region, endpoint: loc.endpoint, forcePathStyle: loc.forcePathStyle, credentials: options.s3Credentials });
  }
  return new GcsObjectStore({ bucket: loc.bucket, prefix: loc.prefix, apiEndpoint: loc.apiEndpoint, projectId: loc.projectId });
}

/** The manifest digest an AC entry names, read without verifying it (for prefetch and liveness). */
export function manifestOf(bytes: Buffer): Digest | null {
  try {
    const m = (JSON.parse(bytes.toString('utf8')) as { manifest?: unknown }).manifest;
    return isDigest(m) ? m : null;
  } catch {
    return null;
  }
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '[::1]' || host === '::1';
}
