/** Small stream helpers shared by stores and manifests. */
import { Readable } from 'node:stream';
import { CascacheError, ErrorCodes } from './errors';

/**
 * Collects a body into one Buffer, refusing to hold more than `limit` bytes.
 * @throws CascacheError `E_TOO_LARGE` past `limit` (the source is destroyed).
 */
export async function readAll(body: Uint8Array | AsyncIterable<Uint8Array>, limit: number): Promise<Buffer> {
  if (body instanceof Uint8Array) {
    if (body.length > limit) throw tooLarge(body.length, limit);
    return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
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

function tooLarge(seen: number, limit: number): CascacheError {
  return new CascacheError(ErrorCodes.TOO_LARGE, `body exceeds ${limit} bytes (read ${seen} so far)`, {
    details: { limit },
  });
}
