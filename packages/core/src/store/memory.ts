/**
 * In-memory BlobStore, for tests and as a reference implementation of the contract. Holds framed
 * blobs exactly as a disk tier would, so corruption and verification behave the same.
 */
import { Readable } from 'node:stream';
import { decodeBlob, encodeBlob, MAX_BLOB_BYTES } from '../codec';
import { assertContentDigest, assertDigest, type Digest } from '../digest';
import { CascacheError, ErrorCodes, isCascacheError } from '../errors';
import { readAll } from '../streams';
import type { BlobInfo, BlobStore, PutOptions, PutResult } from './types';

/** Options for {@link MemoryBlobStore}. */
export interface MemoryBlobStoreOptions {
  /** zstd level for stored frames (0 = raw). Default 1. */
  level?: number;
}

export class MemoryBlobStore implements BlobStore {
  readonly name = 'memory';
  private readonly frames = new Map<Digest, { frame: Buffer; atimeMs: number }>();
  private readonly level: number;

  constructor(options: MemoryBlobStoreOptions = {}) {
    this.level = options.level ?? 1;
  }

  async has(digests: Iterable<Digest>): Promise<Set<Digest>> {
    const found = new Set<Digest>();
    for (const d of digests) if (this.frames.has(d)) found.add(d);
    return found;
  }

  async get(digest: Digest): Promise<Readable | null> {
    assertDigest(digest);
    const slot = this.frames.get(digest);
    if (!slot) return null;
    try {
      const raw = decodeBlob(slot.frame, digest);
      slot.atimeMs = Date.now();
      return Readable.from([raw]);
    } catch (err) {
      if (isCascacheError(err, ErrorCodes.INTEGRITY)) this.frames.delete(digest);
      throw err;
    }
  }

  async put(digest: Digest, body: Uint8Array | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<PutResult> {
    assertDigest(digest);
    const raw = await readAll(body, MAX_BLOB_BYTES);
    assertContentDigest(digest, raw);
    if (this.frames.has(digest)) return { created: false, storedBytes: 0 };
    const frame = encodeBlob(raw, { level: this.level, compressible: options.compressible });
    this.frames.set(digest, { frame, atimeMs: Date.now() });
    return { created: true, storedBytes: frame.length };
  }

  async delete(digest: Digest): Promise<boolean> {
    return this.frames.delete(digest);
  }

  async *list(): AsyncIterable<BlobInfo> {
    for (const [digest, { frame, atimeMs }] of [...this.frames]) yield { digest, storedSize: frame.length, atimeMs };
  }

  /** Test hook: flips one byte of a stored frame to simulate media corruption. */
  corrupt(digest: Digest): void {
    const slot = this.frames.get(digest);
    if (!slot) throw new CascacheError(ErrorCodes.NOT_FOUND, `no blob ${digest}`);
    const copy = Buffer.from(slot.frame);
    copy[copy.length - 1] = copy[copy.length - 1]! ^ 0xff;
    slot.frame = copy;
  }
}
