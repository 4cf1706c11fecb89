/**
 * Digests: BLAKE3-256 of the uncompressed bytes, as 64 lowercase hex characters.
 *
 * Spec: BLAKE3 (https://github.com/BLAKE3-team/BLAKE3-specs), default (unkeyed) mode, 32-byte output.
 * The implementation is `@napi-rs/blake-hash` (Rust `blake3` crate). A blob's digest never depends on
 * how a tier compresses it.
 */
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { blake3, Blake3Hasher } from '@napi-rs/blake-hash';
import { CascacheError, ErrorCodes } from './errors';
import { asBuffer } from './streams';

/** A BLAKE3-256 digest: 64 lowercase hex characters. */
export type Digest = string;

/** Length of a digest in hex characters. */
export const DIGEST_HEX_LENGTH = 64;

const DIGEST_RE = /^[0-9a-f]{64}$/;

/** True when `value` is a well-formed digest (64 lowercase hex characters). */
export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

/**
 * Returns `value` as a digest or throws.
 * @throws CascacheError `E_BAD_INPUT` when `value` is not 64 lowercase hex characters.
 */
export function assertDigest(value: unknown, what = 'digest'): Digest {
  if (!isDigest(value)) {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
    throw new CascacheError(ErrorCodes.BAD_INPUT, `${what} must be 64 lowercase hex characters (BLAKE3-256), got ${shown}`);
  }
  return value;
}

/** BLAKE3-256 of `data` (one shot), lowercase hex. */
/**
 * Checks that `bytes` hash to `digest`: every store's put trusts no caller's digest.
 * @throws CascacheError `E_INTEGRITY` naming both digests.
 */
export function assertContentDigest(digest: Digest, bytes: Uint8Array): void {
  const actual = digestOf(bytes);
  if (actual !== digest) throw new CascacheError(ErrorCodes.INTEGRITY, `put of ${digest}: bytes hash to ${actual}`, { details: { digest, actual } });
}

export function digestOf(data: Uint8Array | string): Digest {
  return blake3(typeof data === 'string' ? Buffer.from(data, 'utf8') : asBuffer(data)).toString('hex');
}

/** Incremental BLAKE3-256: `update()` any number of times, then `digest()` once. */
export class DigestHasher {
  private readonly hasher = new Blake3Hasher();
  private bytes = 0;

  /** Feeds bytes; returns `this`. */
  update(data: Uint8Array): this {
    this.hasher.update(asBuffer(data));
    this.bytes += data.length;
    return this;
  }

  /** Number of bytes fed so far. */
  get length(): number {
    return this.bytes;
  }

  /** The digest of everything fed, lowercase hex. */
  digest(): Digest {
    return this.hasher.digest('hex');
  }
}

/**
 * A pass-through stream that hashes what flows through it. Read `digest()` after `'finish'`/`'end'`.
 */
export class DigestStream extends Transform {
  private readonly hasher = new DigestHasher();

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hasher.update(chunk);
    done(null, chunk);
  }

  /** Digest of all bytes that passed through; valid once the stream has ended. */
  digest(): Digest {
    return this.hasher.digest();
  }

  /** Bytes that passed through. */
  get length(): number {
    return this.hasher.length;
  }
}

/**
 * BLAKE3-256 of a file's contents, streamed (never read whole into memory).
 * @throws the underlying fs error (ENOENT, EACCES...) unchanged.
 */
export async function digestFile(path: string): Promise<Digest> {
  const hasher = new DigestHasher();
  for await (const piece of createReadStream(path, { highWaterMark: 1 << 20 })) hasher.update(piece as Buffer);
  return hasher.digest();
}

/** Digest of an async stream of bytes (for example a Readable), streamed. */
export async function digestStream(source: AsyncIterable<Uint8Array>): Promise<{ digest: Digest; size: number }> {
  const hasher = new DigestHasher();
  for await (const piece of source) hasher.update(piece);
  return { digest: hasher.digest(), size: hasher.length };
}

