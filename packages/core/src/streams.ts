/** Small stream helpers shared by stores and manifests. */
import { Readable } from 'node:stream';
import { CascacheError, ErrorCodes } from './errors';

/** The same bytes as a Buffer, without copying (a view on the array's memory). */
export function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Collects a body into one Buffer, refusing to hold more than `limit` bytes.
 * @throws CascacheError `E_TOO_LARGE` past `limit` (the source is destroyed).
 */
export async function readAll(body: Uint8Array | AsyncIterable<Uint8Array>, limit: number): Promise<Buffer> {
  if (body instanceof Uint8Array) {
    if (body.length > limit) throw tooLarge(body.length, limit);
    return asBuffer(body);
  }
  const parts: Buffer[] = [];
  let total = 0;
  for await (const piece of body) {
    total += piece.length;
    if (total > limit) {
      if (body instanceof Readable) body.destroy();
      throw tooLarge(total, limit);
    }
    parts.push(Buffer.isBuffer(piece) ? piece : Buffer.from(piece));
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total);
}

/**
 * Re-yields a byte stream in pieces of at least `targetBytes` (the last may be shorter). A tar
 * stream comes out as one piece per 512-byte header and per chunk (~8 KiB); each piece that
 * reaches a zlib stream is a thread-pool round trip, so a 30 MB artifact cost ~4,000 of them and
 * gzip level 0 took longer than building the tar. Holds at most `targetBytes` plus one piece.
 */
export async function* coalesce(source: AsyncIterable<Uint8Array>, targetBytes: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (const piece of source) {
    parts.push(Buffer.isBuffer(piece) ? piece : Buffer.from(piece));
    held += piece.length;
    if (held >= targetBytes) {
      yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, held);
      parts = [];
      held = 0;
    }
  }
  if (held > 0) yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, held);
}

function tooLarge(seen: number, limit: number): CascacheError {
  return new CascacheError(ErrorCodes.TOO_LARGE, `body exceeds ${limit} bytes (read ${seen} so far)`, {
    details: { limit },
  });
}
