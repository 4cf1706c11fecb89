/**
 * The zstd implementation (RFC 8878) behind the blob codec and the protocol streams, chosen once per
 * process:
 *
 * - `zstd-napi` when it is installed and loads: the fastest here, but it compiles on install, which
 *   pnpm, yarn berry and strict npm refuse without an approval. It is an optional peer dependency,
 *   so it is there only when the workspace asked for it (`npm run add-to` does, for npm).
 * - `@toondepauw/node-zstd` otherwise: libzstd through napi-rs, prebuilt per platform, no install
 *   script. Per 10 KiB chunk it decodes at 0.2-0.4x zstd-napi's rate; whole restores take 1.02x (Nx,
 *   after `nx reset`) to 1.08x (`cascache store get`) as long (docs/decisions.md). Its encoder streams, so its frames carry no content size: {@link
 *   ZstdBackend.compressFrame} writes one into the frame header. Its decoder reads on into a
 *   concatenated frame: callers admit exactly one frame ({@link zstdFrameEnd}) before decoding.
 *
 * Both produce frames the other decodes; blob bytes differ, digests (over raw bytes) do not.
 * Streams decode with zstd-napi, else `node:zlib` (Node 22.15 and later), else `fzstd` (pure JS).
 */
import { createRequire } from 'node:module';
import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { Decoder, Encoder } from '@toondepauw/node-zstd';
import { Decompress } from 'fzstd';
import { CascacheError, ErrorCodes } from './errors';
import { asBuffer } from './streams';

/** The implementations this module can use. */
export type ZstdBackendName = 'zstd-napi' | '@toondepauw/node-zstd';

/** One zstd implementation, as the codec and the protocol streams use it. */
export interface ZstdBackend {
  readonly name: ZstdBackendName;
  /** One frame of `raw` at `level`, declaring its content size (RFC 8878, 3.1.1.1.4). */
  compressFrame(raw: Buffer, level: number): Buffer;
  /**
   * The raw bytes of `frame`, which holds exactly one frame declaring its content size (the caller
   * checked). Throws the library's error on a malformed frame or one that holds more than it declares.
   */
  decompressFrame(frame: Buffer): Buffer;
  /** A Transform compressing what flows through it at `level`, as one or more frames. */
  compressStream(level: number): Transform;
  /** A Transform decompressing any number of concatenated frames. Unbounded: guard the output. */
  decompressStream(): Transform;
}

/** Raw bytes per frame when toondepauw compresses a stream (2 MiB: held per stream; zstd's level-3 window). */
export const ZSTD_STREAM_FRAME_BYTES = 2 * 1024 * 1024;

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * The fields of the zstd frame header at the start of `b` (RFC 8878, 3.1.1.1): its length, and where
 * its Frame_Content_Size field is and how many bytes it has (0: none). Null when the magic or the
 * reserved bit is wrong, or the header is cut.
 */
function zstdHeader(b: Buffer): { bytes: number; fcsAt: number; fcsBytes: number } | null {
  if (b.length < 5 || b.readUInt32LE(0) !== ZSTD_MAGIC) return null;
  const fhd = b[4]!;
  if ((fhd >>> 3) & 1) return null; // reserved bit
  const singleSegment = (fhd >>> 5) & 1;
  const fcsAt = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fhd >>> 6]!;
  return fcsAt + fcsBytes <= b.length ? { bytes: fcsAt + fcsBytes, fcsAt, fcsBytes } : null;
}

/**
 * Frame_Content_Size of the zstd frame at the start of `buf` (RFC 8878, section 3.1.1.1), or null
 * when the frame does not declare it or the header is malformed.
 */
export function zstdFrameContentSize(buf: Uint8Array): number | null {
  if (buf.length < 6) return null;
  const b = asBuffer(buf);
  const h = zstdHeader(b);
  if (!h) return null;
  switch (h.fcsBytes) {
    case 0:
      return null;
    case 1:
      return b[h.fcsAt]!;
    case 2:
      return b.readUInt16LE(h.fcsAt) + 256;
    case 4:
      return b.readUInt32LE(h.fcsAt);
    default: {
      const v = b.readBigUInt64LE(h.fcsAt);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(v);
    }
  }
}


/**
 * Offset just past the zstd frame at the start of `buf`, found by walking its block headers (RFC
 * 8878, 3.1.1.2: 3 bytes little-endian, bit 0 last block, bits 1-2 type, bits 3-23 size; an RLE block
 * carries one byte), plus the 4-byte checksum when the header flags one. Null when the frame is cut
 * or malformed. Reads headers only: nothing is decompressed.
 */
export function zstdFrameEnd(buf: Uint8Array): number | null {
  const b = asBuffer(buf);
  let off = zstdHeader(b)?.bytes;
  if (off === undefined) return null;
  for (;;) {
    if (off + 3 > b.length) return null;
    const bh = b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16);
    const type = (bh >>> 1) & 3;
    if (type === 3) return null; // reserved block type
    off += 3 + (type === 1 ? 1 : bh >>> 3);
    if (off > b.length) return null;
    if (bh & 1) break;
  }
  if ((b[4]! >>> 2) & 1) off += 4;
  return off <= b.length ? off : null;
}

/**
 * `z` with a 4-byte Frame_Content_Size of `rawLength` written into its header when it declares none
 * (FCS_Field_Size flag 2, RFC 8878 3.1.1.1.1). The declared size is what lets a decoder refuse to
 * produce more than a blob's header says.
 */
function withContentSize(z: Buffer, rawLength: number): Buffer {
  const h = zstdHeader(z);
  if (!h) throw new CascacheError(ErrorCodes.INTEGRITY, 'the zstd encoder produced a malformed frame header');
  if (h.fcsBytes > 0) return z; // declared already
  const pre = h.bytes;
  const out = Buffer.allocUnsafe(z.length + 4);
  z.copy(out, 0, 0, pre);
  out[4] = z[4]! | 0x80;
  out.writeUInt32LE(rawLength, pre);
  z.copy(out, pre + 4, pre);
  return out;
}

function toondepauw(): ZstdBackend {
  const encoders = new Map<number, Encoder>();
  const decoder = new Decoder();
  const encoderFor = (level: number): Encoder => {
    let e = encoders.get(level);
    if (!e) encoders.set(level, (e = new Encoder(level)));
    return e;
  };
  return {
    name: '@toondepauw/node-zstd',
    compressFrame: (raw, level) => withContentSize(encoderFor(level).encodeSync(raw), raw.length),
    decompressFrame: (frame) => decoder.decodeSync(frame),
    compressStream(level) {
      const encoder = encoderFor(level);
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let framed = false;
      /** Compresses the first `n` pending bytes as one frame, off the event loop. */
      const frame = async (t: Transform, n: number): Promise<void> => {
        const all = Buffer.concat(pending, pendingBytes);
        const rest = all.subarray(n);
        pending = rest.length ? [rest] : [];
        pendingBytes = rest.length;
        framed = true;
        t.push(await encoder.encode(all.subarray(0, n)));
      };
      return new Transform({
        transform(chunk: Buffer, _enc, done: TransformCallback) {
          pending.push(chunk);
          pendingBytes += chunk.length;
          const drain = async (t: Transform): Promise<void> => {
            while (pendingBytes >= ZSTD_STREAM_FRAME_BYTES) await frame(t, ZSTD_STREAM_FRAME_BYTES);
          };
          drain(this).then(() => done(), done);
        },
        flush(done: TransformCallback) {
          if (pendingBytes === 0 && framed) return done();
          // An empty body is still one (empty) frame: a zero-byte file is not a zstd stream.
          frame(this, pendingBytes).then(() => done(), done);
        },
      });
    },
    decompressStream: () => portableDecompressStream(),
  };
}

type ZstdNapi = typeof import('zstd-napi');

function napi(z: ZstdNapi): ZstdBackend {
  const compressors = new Map<number, InstanceType<ZstdNapi['Compressor']>>();
  const decompressor = new z.Decompressor();
  return {
    name: 'zstd-napi',
    compressFrame(raw, level) {
      let c = compressors.get(level);
      if (!c) {
        c = new z.Compressor();
        c.setParameters({ compressionLevel: level, contentSizeFlag: true, checksumFlag: false });
        compressors.set(level, c);
      }
      return c.compress(raw);
    },
    decompressFrame: (frame) => decompressor.decompress(frame),
    compressStream: (level) => new z.CompressStream({ compressionLevel: level }),
    decompressStream: () => new z.DecompressStream(),
  };
}

type ZstdZlib = { createZstdDecompress?: () => Transform };

/** Which stream decoder the portable backend uses on this Node: `node:zlib` from 22.15, else `fzstd`. */
export const PORTABLE_STREAM_DECODER: 'node:zlib' | 'fzstd' = typeof (zlib as ZstdZlib).createZstdDecompress === 'function' ? 'node:zlib' : 'fzstd';

/**
 * A zstd-decompressing Transform that needs no install script: `node:zlib` where the running Node
 * has zstd, else `fzstd`. `decoder` pins one (tests exercise each).
 * @throws Error when `decoder` is 'node:zlib' and this Node has no zstd.
 */
export function portableDecompressStream(decoder: 'node:zlib' | 'fzstd' = PORTABLE_STREAM_DECODER): Transform {
  if (decoder === 'node:zlib') {
    const create = (zlib as ZstdZlib).createZstdDecompress;
    if (!create) throw new Error(`Node ${process.version} has no zstd in node:zlib (22.15 and later do)`);
    return create();
  }
  let out: Transform | null = null;
  // A copy of each piece: fzstd may reuse its window buffer.
  const d = new Decompress((data) => out!.push(Buffer.from(data)));
  out = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      try {
        d.push(chunk);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
    flush(done: TransformCallback) {
      try {
        d.push(new Uint8Array(0), true);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
  });
  return out;
}

const backends = new Map<ZstdBackendName, ZstdBackend | null>();

/**
 * The named backend, or null when it cannot load here (zstd-napi not installed, or built for another
 * Node). `@toondepauw/node-zstd` is a dependency and always loads on a supported platform.
 */
export function zstdBackend(name: ZstdBackendName): ZstdBackend | null {
  if (!backends.has(name)) {
    let b: ZstdBackend | null = null;
    if (name === 'zstd-napi') {
      try {
        b = napi(createRequire(__filename)('zstd-napi') as ZstdNapi);
      } catch {
        b = null;
      }
    } else {
      b = toondepauw();
    }
    backends.set(name, b);
  }
  return backends.get(name)!;
}

let active: ZstdBackend | null = null;

/** The backend this process uses: zstd-napi when it loads, else @toondepauw/node-zstd. */
export function activeZstd(): ZstdBackend {
  return (active ??= zstdBackend('zstd-napi') ?? zstdBackend('@toondepauw/node-zstd')!);
}

/**
 * Makes `name` the backend for the rest of this process (tests, and `bench/`, compare the two).
 * @throws Error when that backend cannot load here.
 */
export function useZstdBackend(name: ZstdBackendName): void {
  const b = zstdBackend(name);
  if (!b) throw new Error(`the zstd backend ${name} cannot load here`);
  active = b;
}
