/**
 * Blob framing: how one chunk (or manifest) is stored in a tier.
 *
 * ```
 * offset size  field
 * 0      4     magic "CASB" (0x43 0x41 0x53 0x42)
 * 4      1     format version (1)
 * 5      1     codec: 0 = raw, 1 = zstd (RFC 8878, one frame, content size present)
 * 6      2     reserved, zero
 * 8      8     raw length in bytes, unsigned big-endian
 * 16     ...   payload: the raw bytes, or one zstd frame that decodes to exactly `raw length` bytes
 * ```
 *
 * The digest always covers the raw (uncompressed) bytes, so a blob's address never depends on the
 * codec or level a tier chose. Decoding verifies header, length and digest; any mismatch is
 * `E_INTEGRITY`. Content that is already compressed (detected by magic bytes) is stored raw.
 * See docs/storage-format.md.
 */
import { digestOf, type Digest } from './digest';
import { CascacheError, ErrorCodes } from './errors';
import { asBuffer } from './streams';
import { activeZstd, zstdFrameContentSize, zstdFrameEnd } from './zstd';

export { zstdFrameContentSize } from './zstd';

/** Frame magic: ASCII "CASB". */
export const BLOB_MAGIC = Buffer.from('CASB', 'ascii');
/** Current frame format version. */
export const BLOB_FORMAT_VERSION = 1;
/** Size of the frame header in bytes. */
export const BLOB_HEADER_BYTES = 16;
/**
 * Largest raw blob in bytes (64 MiB). Chunks are at most 16 MiB (the chunker's bound); the margin is
 * for manifests. An artifact is never one blob.
 */
export const MAX_BLOB_BYTES = 64 * 1024 * 1024;

/** Payload codecs. */
export const Codec = { RAW: 0, ZSTD: 1 } as const;
export type CodecId = (typeof Codec)[keyof typeof Codec];

/** Options for {@link encodeBlob}. */
export interface EncodeOptions {
  /** zstd level: 0 stores raw; 1..19 compress (negative fast levels are allowed too). Default 3. */
  level?: number;
  /**
   * Whether compression is worth trying. Callers that sniffed the start of the whole file (a later
   * chunk of a JPEG has no magic of its own) pass `false`; by default the chunk's own first bytes are
   * checked with {@link looksCompressed}.
   */
  compressible?: boolean;
}

/** Below this many bytes compression rarely pays for its frame overhead. */
const MIN_COMPRESS_BYTES = 64;

/**
 * Frames raw bytes as a blob. Stores raw when the level is 0, the content looks compressed, or zstd
 * would not make it smaller.
 * @throws CascacheError `E_TOO_LARGE` when `raw` exceeds {@link MAX_BLOB_BYTES}.
 */
export function encodeBlob(raw: Uint8Array, options: EncodeOptions = {}): Buffer {
  if (raw.length > MAX_BLOB_BYTES) {
    throw new CascacheError(ErrorCodes.TOO_LARGE, `blob of ${raw.length} bytes exceeds the ${MAX_BLOB_BYTES}-byte limit`);
  }
  const level = options.level ?? 3;
  const compressible = options.compressible ?? !looksCompressed(raw);
  if (level !== 0 && compressible && raw.length >= MIN_COMPRESS_BYTES) {
    const z = activeZstd().compressFrame(asBuffer(raw), level);
    if (z.length < raw.length) return Buffer.concat([header(Codec.ZSTD, raw.length), z]);
  }
  return Buffer.concat([header(Codec.RAW, raw.length), raw]);
}

/** Parsed frame header. */
export interface BlobHeader {
  version: number;
  codec: CodecId;
  rawLength: number;
}

/**
 * Parses and checks a frame header.
 * @throws CascacheError `E_INTEGRITY` for a short buffer, wrong magic, unknown version or codec, or a
 * raw length over {@link MAX_BLOB_BYTES}.
 */
export function readBlobHeader(frame: Uint8Array): BlobHeader {
  const buf = asBuffer(frame);
  if (buf.length < BLOB_HEADER_BYTES) throw integrity(`blob frame is ${buf.length} bytes, shorter than its header`);
  if (!buf.subarray(0, 4).equals(BLOB_MAGIC)) throw integrity('blob frame has a wrong magic');
  const version = buf[4]!;
  if (version !== BLOB_FORMAT_VERSION) throw integrity(`blob frame version ${version} is not supported`);
  const codec = buf[5]!;
  if (codec !== Codec.RAW && codec !== Codec.ZSTD) throw integrity(`blob frame has unknown codec ${codec}`);
  if (buf.readUInt16BE(6) !== 0) throw integrity('blob frame reserved bytes are not zero');
  const rawLength = buf.readBigUInt64BE(8);
  if (rawLength > BigInt(MAX_BLOB_BYTES)) throw integrity(`blob frame claims ${rawLength} raw bytes, over the limit`);
  return { version, codec: codec as CodecId, rawLength: Number(rawLength) };
}

/**
 * Decodes a frame to its raw bytes and, when `expected` is given, checks their BLAKE3 digest.
 * Never allocates more than the header's raw length (bounded by {@link MAX_BLOB_BYTES}), whatever a
 * hostile zstd frame claims.
 * @throws CascacheError `E_INTEGRITY` on any malformed frame, length mismatch or digest mismatch.
 */
export function decodeBlob(frame: Uint8Array, expected?: Digest): Buffer {
  const buf = asBuffer(frame);
  const { codec, rawLength } = readBlobHeader(buf);
  const payload = buf.subarray(BLOB_HEADER_BYTES);
  let raw: Buffer;
  if (codec === Codec.RAW) {
    raw = payload;
  } else {
    const declared = zstdFrameContentSize(payload);
    if (declared !== rawLength) {
      throw integrity(`zstd frame declares ${declared ?? 'no'} content size, header says ${rawLength}`);
    }
    // One frame and nothing after it: a decoder may go on into a following frame, whose output no
    // declared size bounds. Within the frame, libzstd stops at the declared size.
    const end = zstdFrameEnd(payload);
    if (end !== payload.length) {
      throw integrity(end === null ? 'zstd frame is cut or malformed' : `zstd payload has ${payload.length - end} bytes after its frame`);
    }
    try {
      raw = activeZstd().decompressFrame(payload);
    } catch (err) {
      throw new CascacheError(ErrorCodes.INTEGRITY, `zstd payload does not decode: ${(err as Error).message}`, { cause: err });
    }
  }
  if (raw.length !== rawLength) throw integrity(`blob payload is ${raw.length} bytes, header says ${rawLength}`);
  if (expected !== undefined) {
    const actual = digestOf(raw);
    if (actual !== expected) {
      throw new CascacheError(ErrorCodes.INTEGRITY, `blob content does not match its digest ${expected}`, {
        details: { expected, actual },
      });
    }
  }
  return raw;
}

/** Magic-byte signatures of formats that are already compressed (or are pointless to recompress). */
const COMPRESSED_SIGNATURES: ReadonlyArray<{ offset: number; bytes: Buffer }> = [
  { offset: 0, bytes: Buffer.from([0x1f, 0x8b]) }, // gzip
  { offset: 0, bytes: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]) }, // zstd
  { offset: 0, bytes: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) }, // PNG
  { offset: 0, bytes: Buffer.from([0xff, 0xd8, 0xff]) }, // JPEG
  { offset: 0, bytes: Buffer.from('GIF8', 'ascii') }, // GIF
  { offset: 8, bytes: Buffer.from('WEBP', 'ascii') }, // WebP (RIFF....WEBP)
  { offset: 4, bytes: Buffer.from('ftyp', 'ascii') }, // MP4 / MOV / AVIF / HEIC
  { offset: 0, bytes: Buffer.from([0x50, 0x4b, 0x03, 0x04]) }, // zip, jar, docx, vsix
  { offset: 0, bytes: Buffer.from('wOF2', 'ascii') }, // WOFF2
  { offset: 0, bytes: Buffer.from('wOFF', 'ascii') }, // WOFF
  { offset: 0, bytes: Buffer.from('BZh', 'ascii') }, // bzip2
  { offset: 0, bytes: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) }, // xz
  { offset: 0, bytes: Buffer.from([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]) }, // 7z
  { offset: 0, bytes: Buffer.from('OggS', 'ascii') }, // Ogg
  { offset: 0, bytes: Buffer.from('ID3', 'ascii') }, // MP3
  { offset: 0, bytes: Buffer.from([0x1a, 0x45, 0xdf, 0xa3]) }, // Matroska / WebM
  { offset: 0, bytes: Buffer.from([0x04, 0x22, 0x4d, 0x18]) }, // LZ4 frame
];

/** True when the first bytes of `data` carry the magic of an already-compressed format. */
export function looksCompressed(data: Uint8Array): boolean {
  const buf = asBuffer(data);
  for (const { offset, bytes } of COMPRESSED_SIGNATURES) {
    if (buf.length >= offset + bytes.length && buf.subarray(offset, offset + bytes.length).equals(bytes)) return true;
  }
  return false;
}

function header(codec: CodecId, rawLength: number): Buffer {
  const h = Buffer.alloc(BLOB_HEADER_BYTES);
  BLOB_MAGIC.copy(h, 0);
  h[4] = BLOB_FORMAT_VERSION;
  h[5] = codec;
  h.writeBigUInt64BE(BigInt(rawLength), 8);
  return h;
}

function integrity(message: string): CascacheError {
  return new CascacheError(ErrorCodes.INTEGRITY, message);
}

