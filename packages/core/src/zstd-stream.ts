/**
 * Streaming zstd (RFC 8878) for protocol bodies (Turborepo sends and expects tar.zst), from the
 * same backend as the blob codec (zstd.ts), so the choice of zstd implementation stays in one place.
 */
import type { Transform } from 'node:stream';
import { activeZstd } from './zstd';

/** A Transform that zstd-compresses what flows through it, at `level` (default 3), as one or more frames. */
export function zstdCompressStream(level = 3): Transform {
  return activeZstd().compressStream(level);
}

/**
 * A Transform that decompresses zstd frames. It does not bound the output: put an inflation guard
 * after it for untrusted input (the server's `InflateGuard`). Malformed input fails the stream.
 */
export function zstdDecompressStream(): Transform {
  return activeZstd().decompressStream();
}
