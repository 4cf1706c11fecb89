/**
 * The body format of the chunk API's batched transfers (upload and batch read), shared by the
 * server and the HTTP tier client: records back to back, each
 *
 * ```
 * 32 bytes   the blob's digest (raw BLAKE3-256)
 *  4 bytes   frame length, big-endian
 *  n bytes   the blob frame (codec.ts: header, then raw or zstd bytes)
 * ```
 * Frames travel compressed; the receiver decodes each and checks it against its digest before
 * storing or returning it, so nothing in the stream is trusted. Content type
 * `application/vnd.cascache.frames`.
 */
import { BLOB_HEADER_BYTES, MAX_BLOB_BYTES } from '../codec';
import { assertDigest, type Digest } from '../digest';
import { CascacheError, ErrorCodes } from '../errors';

/** Content type of a frame stream. */
export const FRAME_STREAM_TYPE = 'application/vnd.cascache.frames';

/** Encodes one record. */
export function encodeFrameRecord(digest: Digest, frame: Buffer): Buffer {
  assertDigest(digest);
  const head = Buffer.alloc(36);
  Buffer.from(digest, 'hex').copy(head, 0);
  head.writeUInt32BE(frame.length, 32);
  return Buffer.concat([head, frame]);
}

/**
 * Reads records from a body as they arrive, holding at most one frame in memory.
 * @throws CascacheError `E_BAD_INPUT` for a truncated stream, `E_TOO_LARGE` for a frame over the
 * blob limit.
 */
export async function* decodeFrameRecords(body: AsyncIterable<Uint8Array>): AsyncGenerator<{ digest: Digest; frame: Buffer }> {
  // Pieces are kept as they arrive and joined once per record, so a large frame costs one copy.
  let pieces: Buffer[] = [];
  let held = 0;
  const take = (n: number): Buffer => {
    const all = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, held);
    pieces = all.length > n ? [all.subarray(n)] : [];
    held -= n;
    return all.subarray(0, n);
  };
  const peekHeader = (): Buffer => {
    if (pieces[0]!.length < 36) pieces = [Buffer.concat(pieces, held)];
    return pieces[0]!.subarray(0, 36);
  };
  for await (const piece of body) {
    pieces.push(Buffer.from(piece));
    held += piece.length;
    while (held >= 36) {
      const length = peekHeader().readUInt32BE(32);
      if (length > MAX_BLOB_BYTES + BLOB_HEADER_BYTES + 1024) throw new CascacheError(ErrorCodes.TOO_LARGE, `a frame of ${length} bytes exceeds the blob limit`);
      if (held < 36 + length) break;
      const record = take(36 + length);
      yield { digest: record.subarray(0, 32).toString('hex'), frame: Buffer.from(record.subarray(36)) };
    }
  }
  if (held > 0) throw new CascacheError(ErrorCodes.BAD_INPUT, `frame stream ends inside a record (${held} bytes left)`);
}
