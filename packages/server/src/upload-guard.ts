/**
 * Guards a compressed upload while it streams: caps the compressed bytes, the decompressed bytes,
 * and the decompression ratio (a gzip bomb expands ~1000x; real build outputs compress 3-10x).
 */
import { pipeline, Transform, type TransformCallback } from 'node:stream';
import { CascacheError, ErrorCodes } from '@cascache/core';

export interface UploadLimits {
  /** Largest request body in bytes. Default 4 GiB. */
  maxCompressedBytes?: number;
  /** Largest decompressed tar in bytes. Default 16 GiB. */
  maxDecompressedBytes?: number;
  /** Largest decompressed/compressed ratio, checked past the first MiB. Default 200. */
  maxRatio?: number;
}

export const DEFAULT_UPLOAD_LIMITS: Required<UploadLimits> = {
  maxCompressedBytes: 4 * 1024 ** 3,
  maxDecompressedBytes: 16 * 1024 ** 3,
  maxRatio: 200,
};

/** Counts bytes flowing through it; errors past `limit`. */
export class ByteCounter extends Transform {
  bytes = 0;
  constructor(private readonly limit = Number.MAX_SAFE_INTEGER) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      done(new CascacheError(ErrorCodes.TOO_LARGE, `upload exceeds ${this.limit} bytes`));
      return;
    }
    done(null, chunk);
  }
}

/** Sits after gunzip: bounds the decompressed size and its ratio to the compressed count. */
export class InflateGuard extends Transform {
  private out = 0;
  constructor(
    private readonly compressed: ByteCounter,
    private readonly limits: Required<UploadLimits>,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.out += chunk.length;
    if (this.out > this.limits.maxDecompressedBytes) {
      done(new CascacheError(ErrorCodes.TOO_LARGE, `decompressed upload exceeds ${this.limits.maxDecompressedBytes} bytes`));
      return;
    }
    if (this.out > 1 << 20 && this.out > this.limits.maxRatio * Math.max(1, this.compressed.bytes)) {
      done(new CascacheError(ErrorCodes.TOO_LARGE, `upload expands more than ${this.limits.maxRatio}x: refusing a likely decompression bomb`));
      return;
    }
    done(null, chunk);
  }
}

/**
 * The decompressed stream of an upload: `body` counted into `received`, through `decoder` (gunzip,
 * zstd), bounded by an {@link InflateGuard}. Errors surface on the returned stream.
 */
export function inflate(body: NodeJS.ReadableStream, received: ByteCounter, decoder: Transform, limits: Required<UploadLimits>): Transform {
  const guard = new InflateGuard(received, limits);
  return pipeline(body, received, decoder, guard, () => undefined);
}
