/**
 * Streaming zstd (RFC 8878) for protocol bodies (Turborepo sends and expects tar.zst), from the
 * same library as the blob codec, so the choice of zstd implementation stays in one package.
 */
import type { Transform } from 'node:stream';
import { CompressStream, DecompressStream } from 'zstd-napi';

/** A Transform that zstd-compresses what flows through it, at `level` (default 3). */
export function zstdCompressStream(level = 3): Transform {
  return new CompressStream({ compressionLevel: level });
}

/**
 * A Transform that decompresses zstd frames. It does not bound the output: put an inflation guard
 * after it for untrusted input (the server's `InflateGuard`).
 */
export function zstdDecompressStream(): Transform {
  return new DecompressStream();
}
