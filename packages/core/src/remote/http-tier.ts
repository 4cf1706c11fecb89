/**
 * The HTTP tier: another cascache server (a team server) through its chunk API, with Node's fetch.
 *
 * ```
 * POST /cas/v1/missing        {"digests":[..]} -> {"missing":[..]}               read token
 * POST /cas/v1/blobs          frame stream (frame-stream.ts) -> {"stored","bytes"} write token
 * POST /cas/v1/blobs:read     {"digests":[..]} -> frame stream of those present    read token
 * GET  /cas/v1/blobs          NDJSON of {"digest","storedSize","mtimeMs"}          read token
 * GET  /cas/v1/blobs/<d>      raw bytes; Range: bytes=a-b for part of them          read token
 * DELETE /cas/v1/blobs/<d>    204 / 404                                            write token
 * GET|PUT|DELETE /cas/v1/ac/<namespace>/<key>   entry bytes; PUT is write-once: 201, or 409 with the existing entry
 * GET  /cas/v1/ac             NDJSON of {"namespace","key","lastUsedMs"}           read token
 * GET|PUT /cas/v1/roots/<digest>                store root records
 * ```
 * The server stores blobs in its own store (one file per blob); a tree is present when its manifest
 * blob is, since uploads send chunks before the manifest. Every blob read is verified here against
 * its digest. Failures map to codes: network errors, 5xx and 429 are `E_UNAVAILABLE` (retryable),
 * 401/403 `E_CONFIG`, 400 `E_BAD_INPUT`, a body the server says is corrupt `E_INTEGRITY`.
 */
import { Readable } from 'node:stream';
import { assertNamespace } from '../action-cache';
import { decodeBlob, encodeBlob, MAX_BLOB_BYTES } from '../codec';
import { assertContentDigest, assertDigest, digestOf, isDigest, type Digest } from '../digest';
import { CascacheError, ErrorCodes, isCascacheError, type ErrorCode } from '../errors';
import type { StoreRoot } from '../roots';
import { readAll } from '../streams';
import type { BlobInfo, PutOptions, PutResult } from '../store/types';
import type { CircuitBreaker } from './breaker';
import { decodeFrameRecords, encodeFrameRecord, FRAME_STREAM_TYPE } from './frame-stream';
import type { PackUploadResult } from './pack-store';
import type { FetchedBlob, TierAcStore, TierBlobStore } from './tier';

/** Options for {@link HttpTierClient}. */
export interface HttpTierOptions {
  /** e.g. `https://cache.example.com` (no trailing slash). */
  baseUrl: string;
  /** Bearer token (read-only or read-write). */
  token?: string;
  breaker: CircuitBreaker;
  /** zstd level of uploaded frames. Default 3. */
  level?: number;
  /** Bytes per upload request. Default 16 MiB. */
  packTargetBytes?: number;
  /** Per-request timeout, ms. Default 60000. */
  timeoutMs?: number;
}

const BATCH_DIGESTS = 10_000;

/** One server, its blob and entry sides. */
export class HttpTierClient {
  readonly blobs: HttpBlobStore;
  readonly entries: HttpAcStore;

  constructor(readonly options: HttpTierOptions) {
    this.blobs = new HttpBlobStore(this);
    this.entries = new HttpAcStore(this);
  }

  /** One request through the breaker; statuses in `ok` are answers, others become errors. */
  async request(method: string, path: string, init: { body?: Buffer | string; headers?: Record<string, string>; ok?: number[] } = {}): Promise<Response> {
    const o = this.options;
    return o.breaker.guard(async () => {
      let res: Response;
      try {
        res = await fetch(`${o.baseUrl}${path}`, {
          method,
          body: init.body,
          headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...init.headers },
          signal: AbortSignal.timeout(o.timeoutMs ?? 60_000),
        });
      } catch (err) {
        throw new CascacheError(ErrorCodes.UNAVAILABLE, `${o.baseUrl}: ${method} ${path.split('?')[0]}: ${(err as Error).message}`, { cause: err, retryable: true });
      }
      if ((init.ok ?? [200]).includes(res.status)) return res;
      const text = await res.text().catch(() => '');
      let code: string | undefined;
      try {
        code = (JSON.parse(text) as { error?: string }).error;
      } catch {
        /* not JSON */
      }
      const message = `${o.baseUrl}: ${method} ${path.split('?')[0]} answered ${res.status}${code ? ` ${code}` : ''}`;
      if (res.status >= 500 || res.status === 429) {
        if (code === ErrorCodes.INTEGRITY) throw new CascacheError(ErrorCodes.INTEGRITY, message);
        throw new CascacheError(ErrorCodes.UNAVAILABLE, message, { retryable: true });
      }
      if (res.status === 401 || res.status === 403) throw new CascacheError(ErrorCodes.CONFIG, `${message}: check the tier's token`, { retryable: false });
      const known = Object.values(ErrorCodes) as string[];
      throw new CascacheError((code && known.includes(code) ? code : ErrorCodes.BAD_INPUT) as ErrorCode, message, { retryable: false });
    });
  }
}

/** The blob side of an HTTP tier. */
export class HttpBlobStore implements TierBlobStore {
  readonly name: string;

  constructor(private readonly client: HttpTierClient) {
    this.name = client.options.baseUrl;
  }

  async has(digests: Iterable<Digest>): Promise<Set<Digest>> {
    const all = [...new Set(digests)];
    const found = new Set<Digest>();
    for (let i = 0; i < all.length; i += BATCH_DIGESTS) {
      const batch = all.slice(i, i + BATCH_DIGESTS);
      const res = await this.client.request('POST', '/cas/v1/missing', { body: JSON.stringify({ digests: batch }), headers: { 'content-type': 'application/json' } });
      const missing = new Set(((await res.json()) as { missing: Digest[] }).missing);
      for (const d of batch) if (!missing.has(d)) found.add(d);
    }
    return found;
  }

  async get(digest: Digest): Promise<Readable | null> {
    const bytes = await this.getBuffer(digest);
    return bytes === null ? null : Readable.from([bytes]);
  }

  async getBuffer(digest: Digest): Promise<Buffer | null> {
    assertDigest(digest);
    const res = await this.client.request('GET', `/cas/v1/blobs/${digest}`, { ok: [200, 404] });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    const actual = digestOf(bytes);
    if (actual !== digest) throw new CascacheError(ErrorCodes.INTEGRITY, `${this.name} sent bytes for ${digest} that hash to ${actual}`, { details: { digest, actual } });
    return bytes;
  }

  /** Part of a blob: `length` bytes from `offset` (Range request). Not verifiable alone. */
  async getRange(digest: Digest, offset: number, length: number): Promise<Buffer | null> {
    assertDigest(digest);
    const res = await this.client.request('GET', `/cas/v1/blobs/${digest}`, { ok: [206, 404], headers: { range: `bytes=${offset}-${offset + length - 1}` } });
    if (res.status === 404) return null;
    return Buffer.from(await res.arrayBuffer());
  }

  async *fetchMany(digests: Iterable<Digest>): AsyncGenerator<FetchedBlob> {
    const all = [...new Set(digests)];
    for (let i = 0; i < all.length; i += BATCH_DIGESTS) {
      const res = await this.client.request('POST', '/cas/v1/blobs:read', { body: JSON.stringify({ digests: all.slice(i, i + BATCH_DIGESTS) }), headers: { 'content-type': 'application/json' } });
      for await (const { digest, frame } of decodeFrameRecords(Readable.fromWeb(res.body! as import('node:stream/web').ReadableStream<Uint8Array>))) {
        let bytes: Buffer;
        try {
          bytes = decodeBlob(frame, digest);
        } catch (err) {
          if (isCascacheError(err, ErrorCodes.INTEGRITY)) continue; // the caller sees it missing
          throw err;
        }
        yield { digest, bytes, frame };
      }
    }
  }

  async put(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    assertDigest(digest);
    const raw = await readAll(body, MAX_BLOB_BYTES);
    assertContentDigest(digest, raw);
    if ((await this.has([digest])).size > 0) return { created: false, storedBytes: 0 };
    const frame = encodeBlob(raw, { level: this.client.options.level ?? 3, compressible: options.compressible });
    await this.send([encodeFrameRecord(digest, frame)]);
    return { created: true, storedBytes: frame.length };
  }

  async putMany(blobs: AsyncIterable<{ digest: Digest; bytes: Uint8Array }> | Iterable<{ digest: Digest; bytes: Uint8Array }>): Promise<PackUploadResult> {
    const result: PackUploadResult = { packs: 0, blobs: 0, bytes: 0 };
    const target = this.client.options.packTargetBytes ?? 16 * 1024 * 1024;
    let batch: Buffer[] = [];
    let size = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      await this.send(batch);
      result.packs++;
      result.blobs += batch.length;
      result.bytes += size;
      batch = [];
      size = 0;
    };
    for await (const b of blobs) {
      assertDigest(b.digest);
      assertContentDigest(b.digest, b.bytes);
      const record = encodeFrameRecord(b.digest, encodeBlob(b.bytes, { level: this.client.options.level ?? 3 }));
      batch.push(record);
      size += record.length;
      if (size >= target) await flush();
    }
    await flush();
    return result;
  }

  async delete(digest: Digest): Promise<boolean> {
    assertDigest(digest);
    const res = await this.client.request('DELETE', `/cas/v1/blobs/${digest}`, { ok: [204, 404] });
    return res.status === 204;
  }

  async *list(): AsyncIterable<BlobInfo> {
    const res = await this.client.request('GET', '/cas/v1/blobs');
    for (const line of (await res.text()).split('\n')) {
      if (!line) continue;
      const b = JSON.parse(line) as BlobInfo;
      if (isDigest(b.digest)) yield b;
    }
  }

  async hasTree(manifest: Digest): Promise<boolean> {
    return (await this.has([manifest])).size === 1;
  }

  async loadTree(manifest: Digest): Promise<boolean> {
    return this.hasTree(manifest);
  }

  async writeTree(manifest: Digest, manifestBytes: Buffer): Promise<number> {
    const r = await this.putMany([{ digest: manifest, bytes: manifestBytes }]);
    return r.bytes;
  }

  private async send(records: Buffer[]): Promise<void> {
    await this.client.request('POST', '/cas/v1/blobs', { body: Buffer.concat(records), headers: { 'content-type': FRAME_STREAM_TYPE } });
  }
}

/** The entry side of an HTTP tier. */
export class HttpAcStore implements TierAcStore {
  readonly name: string;

  constructor(private readonly client: HttpTierClient) {
    this.name = client.options.baseUrl;
  }

  async get(namespace: string, key: Digest): Promise<Buffer | null> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    const res = await this.client.request('GET', `/cas/v1/ac/${namespace}/${key}`, { ok: [200, 404] });
    if (res.status === 404) return null;
    return Buffer.from(await res.arrayBuffer());
  }

  async putIfAbsent(namespace: string, key: Digest, bytes: Buffer): Promise<{ created: true } | { created: false; existing: Buffer }> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    const res = await this.client.request('PUT', `/cas/v1/ac/${namespace}/${key}`, { body: bytes, ok: [201, 409], headers: { 'content-type': 'application/octet-stream' } });
    if (res.status === 201) {
      await res.body?.cancel();
      return { created: true };
    }
    return { created: false, existing: Buffer.from(await res.arrayBuffer()) };
  }

  async replace(namespace: string, key: Digest, bytes: Buffer): Promise<void> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    await this.client.request('PUT', `/cas/v1/ac/${namespace}/${key}?replace=1`, { body: bytes, ok: [201], headers: { 'content-type': 'application/octet-stream' } });
  }

  async delete(namespace: string, key: Digest): Promise<boolean> {
    assertNamespace(namespace);
    assertDigest(key, 'action key');
    return (await this.client.request('DELETE', `/cas/v1/ac/${namespace}/${key}`, { ok: [204, 404] })).status === 204;
  }

  async *list(): AsyncIterable<{ namespace: string; key: Digest; lastUsedMs?: number }> {
    const res = await this.client.request('GET', '/cas/v1/ac');
    for (const line of (await res.text()).split('\n')) if (line) yield JSON.parse(line) as { namespace: string; key: Digest; lastUsedMs?: number };
  }

  async putRoot(root: StoreRoot): Promise<number> {
    assertDigest(root.digest, 'root digest');
    const body = Buffer.from(JSON.stringify(root));
    await this.client.request('PUT', `/cas/v1/roots/${root.digest}`, { body, ok: [201], headers: { 'content-type': 'application/json' } });
    return body.length;
  }

  async getRoot(digest: Digest): Promise<StoreRoot | null> {
    assertDigest(digest, 'root digest');
    const res = await this.client.request('GET', `/cas/v1/roots/${digest}`, { ok: [200, 404] });
    if (res.status === 404) return null;
    return (await res.json()) as StoreRoot;
  }
}
