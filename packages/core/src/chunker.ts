/**
 * Content-defined chunking: FastCDC 2020 with normalization level 1.
 *
 * Source: Wen Xia et al., "The Design of Fast Content-Defined Chunking for Data Deduplication Based
 * Storage Systems", IEEE TPDS 2020 (gear hash, sub-minimum cut-point skipping, normalized chunking,
 * rolling two bytes per step). Cut points are bit-compatible with the `fastcdc` Rust crate's `v2020`
 * module, `FastCDC::new(data, min, avg, max)`: same GEAR table, same masks, same loop. Verified by
 * the fixed vectors in `fixtures/fastcdc`.
 *
 * Boundaries must never change silently (every stored chunk depends on them): this module is
 * versioned as `fastcdc-2020` in the store descriptor, and any change of behaviour is a new algorithm
 * name, never an edit here.
 *
 * The crate rolls two bytes per loop step: `(h << 2) + GEAR_LS[x]` tested against `mask << 1`, then
 * `+ GEAR[y]` tested against `mask`. Since `(h << 2) + (GEAR[x] << 1) == ((h << 1) + GEAR[x]) << 1`
 * (mod 2^64), that is exactly one gear step `h = (h << 1) + GEAR[b]` per byte with `h & mask` tested
 * after each byte, which is what `cut()` does. Every mask lives in bits 0..47, and shifting left and
 * adding only carry upward, so the hash is kept as a 16-bit low limb (bits 0..15) and a 32-bit high
 * limb (bits 16..47): all small integers for V8, and equal to the crate's `u64` arithmetic in every
 * bit that is tested.
 */
import { createHash } from 'node:crypto';
import { CascacheError, ErrorCodes } from './errors';
import { asBuffer } from './streams';

/** Chunk size bounds in bytes. */
export interface ChunkerParams {
  /** Minimum chunk length in bytes (64 .. 1 MiB). Inputs shorter than this are one chunk. */
  min: number;
  /** Target average chunk length in bytes (256 .. 4 MiB). */
  avg: number;
  /** Maximum chunk length in bytes (1 KiB .. 16 MiB). */
  max: number;
}

/** Name of this algorithm as recorded in store descriptors. */
export const CHUNKER_ALGORITHM = 'fastcdc-2020-nc1';

/** Defaults: 2 KiB / 8 KiB / 64 KiB. */
export const DEFAULT_CHUNKER_PARAMS: Readonly<ChunkerParams> = Object.freeze({ min: 2048, avg: 8192, max: 65536 });

/** The crate's bounds (`MINIMUM_MIN` ... `MAXIMUM_MAX`), inclusive, in bytes. */
export const CHUNKER_BOUNDS = Object.freeze({
  min: [64, 1_048_576] as const,
  avg: [256, 4_194_304] as const,
  max: [1024, 16_777_216] as const,
});

// Masks for 2^0 .. 2^25 bits, from the C reference implementation (destor) and restic-FastCDC, as
// used by the crate. Index = log2(avg) +/- normalization level. Split into [high 32 bits, low 32 bits].
const MASKS: ReadonlyArray<readonly [number, number]> = [
  [0, 0], [0, 0], [0, 0], [0, 0], [0, 0],
  [0x00000000, 0x01804110],
  [0x00000000, 0x01803110], // 64 B
  [0x00000000, 0x18035100], // 128 B
  [0x00000018, 0x00035300], // 256 B
  [0x00000190, 0x00353000], // 512 B
  [0x00005900, 0x03530000], // 1 KiB
  [0x0000d900, 0x03530000], // 2 KiB
  [0x0000d901, 0x03530000], // 4 KiB
  [0x0000d903, 0x03530000], // 8 KiB
  [0x0000d903, 0x13530000], // 16 KiB
  [0x0000d90f, 0x03530000], // 32 KiB
  [0x0000d903, 0x03537000], // 64 KiB
  [0x0000d907, 0x03537000], // 128 KiB
  [0x0000d907, 0x07537000], // 256 KiB
  [0x0000d917, 0x07537000], // 512 KiB
  [0x0000d917, 0x47537000], // 1 MiB
  [0x0000d917, 0x67537000], // 2 MiB
  [0x0000d937, 0x67537000], // 4 MiB
  [0x0000d937, 0x77537000], // 8 MiB
  [0x0000d937, 0x77577000], // 16 MiB
  [0x0000db37, 0x77577000],
];

/**
 * The GEAR table: for i in 0..255, the first 8 bytes (big-endian) of MD5 over 64 bytes all equal to
 * i. This is the construction of the C reference implementation and of the crate's `table64.rs`;
 * deriving it avoids 256 hand-copied constants (fixed entries are checked by a vector test).
 * `hi`/`lo` hold the full 64 bits; `mid` (bits 16..47) and `low16` (bits 0..15) feed the hot loop.
 */
function buildGear(): { hi: Uint32Array; lo: Uint32Array; mid: Int32Array; low16: Int32Array } {
  const hi = new Uint32Array(256);
  const lo = new Uint32Array(256);
  const mid = new Int32Array(256);
  const low16 = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const md5 = createHash('md5').update(Buffer.alloc(64, i)).digest();
    hi[i] = md5.readUInt32BE(0);
    lo[i] = md5.readUInt32BE(4);
    mid[i] = md5.readInt32BE(2); // bytes 2..5 of the big-endian u64 = bits 16..47
    low16[i] = md5.readUInt16BE(6);
  }
  return { hi, lo, mid, low16 };
}

const GEAR = buildGear();

/** The GEAR table entry for byte `i` as a 16-hex-digit string (for vector tests and debugging). */
export function gearEntry(i: number): string {
  return GEAR.hi[i]!.toString(16).padStart(8, '0') + GEAR.lo[i]!.toString(16).padStart(8, '0');
}

/**
 * Validates chunker parameters against the crate's bounds and `min <= avg <= max`.
 * @throws CascacheError `E_CONFIG` naming the offending value and its allowed range.
 */
export function validateChunkerParams(params: ChunkerParams): ChunkerParams {
  for (const key of ['min', 'avg', 'max'] as const) {
    const value = params[key];
    const [lo, hi] = CHUNKER_BOUNDS[key];
    if (!Number.isSafeInteger(value) || value < lo || value > hi) {
      throw new CascacheError(
        ErrorCodes.CONFIG,
        `chunker ${key} must be an integer from ${lo} to ${hi} bytes, got ${String(value)}`,
        { details: { [key]: value } },
      );
    }
  }
  if (!(params.min <= params.avg && params.avg <= params.max)) {
    throw new CascacheError(
      ErrorCodes.CONFIG,
      `chunker sizes must satisfy min <= avg <= max, got ${params.min} / ${params.avg} / ${params.max}`,
    );
  }
  return { min: params.min, avg: params.avg, max: params.max };
}

/**
 * A configured FastCDC 2020 cutter. Stateless between calls: `cut()` finds the end of the chunk
 * that starts at `start`.
 */
export class Chunker {
  readonly params: Readonly<ChunkerParams>;
  // Masks split like the hash: bits 16..47 and bits 0..15. "S" (small) is the stricter mask used
  // before the average size, "L" (large) the looser one after it (normalized chunking, level 1).
  private readonly maskSMid: number;
  private readonly maskSLow: number;
  private readonly maskLMid: number;
  private readonly maskLLow: number;

  /** @throws CascacheError `E_CONFIG` for parameters outside the crate's bounds. */
  constructor(params: ChunkerParams = DEFAULT_CHUNKER_PARAMS) {
    this.params = Object.freeze(validateChunkerParams(params));
    const bits = Math.round(Math.log2(this.params.avg));
    const [sHi, sLo] = MASKS[bits + 1]!;
    const [lHi, lLo] = MASKS[bits - 1]!;
    this.maskSMid = ((sHi << 16) | (sLo >>> 16)) | 0;
    this.maskSLow = sLo & 0xffff;
    this.maskLMid = ((lHi << 16) | (lLo >>> 16)) | 0;
    this.maskLLow = lLo & 0xffff;
  }

  /**
   * Length in bytes of the chunk starting at `start`, looking at no byte at or past `end`.
   * When fewer than `max` bytes are available, the caller must pass all remaining input (the end of
   * the data), exactly as the crate does; streaming callers use {@link chunkStream}.
   */
  cut(source: Uint8Array, start: number, end: number): number {
    const { min, avg, max } = this.params;
    let remaining = end - start;
    if (remaining <= min) return remaining;
    let center = avg;
    if (remaining > max) remaining = max;
    else if (remaining < center) center = remaining;

    const gMid = GEAR.mid;
    const gLow = GEAR.low16;
    let mid = 0;
    let low = 0;
    // The crate steps over pairs of bytes: positions 2*floor(min/2) .. 2*floor(center/2) with the
    // small mask, then up to 2*floor(remaining/2) with the large one.
    let i = start + ((min >>> 1) << 1);
    let stop = start + ((center >>> 1) << 1);
    let mMid = this.maskSMid;
    let mLow = this.maskSLow;
    for (let phase = 0; phase < 2; phase++) {
      for (; i < stop; i++) {
        const b = source[i]!;
        low = (low << 1) + gLow[b]!;
        mid = ((mid << 1) + gMid[b]! + (low >>> 16)) | 0;
        low &= 0xffff;
        if ((mid & mMid) === 0 && (low & mLow) === 0) return i - start;
      }
      stop = start + ((remaining >>> 1) << 1);
      mMid = this.maskLMid;
      mLow = this.maskLLow;
    }
    return remaining;
  }
}

/** Chunk lengths (bytes) of a whole buffer, in order. An empty buffer has no chunks. */
export function chunkLengths(data: Uint8Array, params: ChunkerParams = DEFAULT_CHUNKER_PARAMS): number[] {
  const chunker = new Chunker(params);
  const lengths: number[] = [];
  for (let off = 0; off < data.length; ) {
    const n = chunker.cut(data, off, data.length);
    lengths.push(n);
    off += n;
  }
  return lengths;
}

/**
 * Splits a byte stream into chunks, with boundaries identical to {@link chunkLengths} on the
 * concatenated input whatever the sizes of the incoming pieces.
 *
 * Memory: holds at most about `max(4 MiB, 2 * max)` bytes plus one incoming piece. Yielded chunks
 * are views into buffers that are never written again, so they stay valid after the next step.
 */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  params: ChunkerParams = DEFAULT_CHUNKER_PARAMS,
): AsyncGenerator<Buffer> {
  const chunker = new Chunker(params);
  const { max } = chunker.params;
  const threshold = Math.max(4 << 20, 2 * max);
  let pending: Buffer[] = [];
  let pendingBytes = 0;

  for await (const piece of source) {
    if (piece.length === 0) continue;
    pending.push(asBuffer(piece));
    pendingBytes += piece.length;
    if (pendingBytes < threshold) continue;
    const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    let off = 0;
    // Only cut while a full `max` window is available: then the cut cannot depend on later bytes.
    while (buf.length - off >= max) {
      const n = chunker.cut(buf, off, buf.length);
      yield buf.subarray(off, off + n);
      off += n;
    }
    const rest = buf.subarray(off);
    pending = rest.length > 0 ? [rest] : [];
    pendingBytes = rest.length;
  }
  if (pendingBytes === 0) return;
  const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
  for (let off = 0; off < buf.length; ) {
    const n = chunker.cut(buf, off, buf.length);
    yield buf.subarray(off, off + n);
    off += n;
  }
}
