import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { Encoder } from '@toondepauw/node-zstd';
import { decompress as fzstdDecompress } from 'fzstd';
import { compress } from 'zstd-napi';
import {
  Codec,
  decodeBlob,
  digestOf,
  encodeBlob,
  ErrorCodes,
  looksCompressed,
  MAX_BLOB_BYTES,
  readBlobHeader,
  zstdCompressStream,
  zstdDecompressStream,
  zstdFrameContentSize,
  zstdFrameEnd,
} from '../src';
import { activeZstd, portableDecompressStream, useZstdBackend, type ZstdBackendName } from '../src/zstd';

const BACKENDS: ZstdBackendName[] = ['zstd-napi', '@toondepauw/node-zstd'];

/** The blob header for `rawLength` raw bytes, codec zstd. */
function zstdHeader(rawLength: number): Buffer {
  const h = Buffer.alloc(16);
  h.write('CASB', 0, 'ascii');
  h[4] = 1;
  h[5] = Codec.ZSTD;
  h.writeBigUInt64BE(BigInt(rawLength), 8);
  return h;
}

async function collect(r: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('blob framing', () => {
  it('round-trips any bytes at any level (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20_000 }), fc.constantFrom(0, 1, 3, 9), (raw, level) => {
        const frame = encodeBlob(raw, { level });
        return decodeBlob(frame, digestOf(raw)).equals(Buffer.from(raw));
      }),
    );
  });

  it('writes the documented header: magic CASB, version 1, codec, zero reserved, big-endian raw length', () => {
    const raw = Buffer.from('abc'.repeat(1000));
    const frame = encodeBlob(raw, { level: 3 });
    expect(frame.subarray(0, 4).toString('ascii')).toBe('CASB');
    expect(frame[4]).toBe(1);
    expect(frame[5]).toBe(Codec.ZSTD);
    expect(frame.readUInt16BE(6)).toBe(0);
    expect(frame.readBigUInt64BE(8)).toBe(3000n);
    expect(frame.length).toBeLessThan(200);
  });

  it('stores raw at level 0, for incompressible data, and for known compressed formats', () => {
    expect(readBlobHeader(encodeBlob(Buffer.from('a'.repeat(1000)), { level: 0 })).codec).toBe(Codec.RAW);
    expect(readBlobHeader(encodeBlob(randomBytes(5000))).codec).toBe(Codec.RAW);
    const gz = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(5000)]);
    expect(readBlobHeader(encodeBlob(gz)).codec).toBe(Codec.RAW);
    expect(readBlobHeader(encodeBlob(Buffer.alloc(5000), { compressible: false })).codec).toBe(Codec.RAW);
  });

  it('recognises common compressed formats by magic bytes', () => {
    const samples: Array<[string, Buffer]> = [
      ['gzip', Buffer.from([0x1f, 0x8b, 8])],
      ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])],
      ['png', Buffer.from('89504e470d0a1a0a0000', 'hex')],
      ['jpeg', Buffer.from('ffd8ffe0', 'hex')],
      ['webp', Buffer.from('RIFF\0\0\0\0WEBPVP8 ', 'latin1')],
      ['mp4', Buffer.from('\0\0\0\x18ftypmp42', 'latin1')],
      ['zip', Buffer.from('504b0304', 'hex')],
      ['woff2', Buffer.from('wOF2\0\x01', 'latin1')],
    ];
    for (const [, bytes] of samples) expect(looksCompressed(bytes)).toBe(true);
    expect(looksCompressed(Buffer.from('export default 1;'))).toBe(false);
    expect(looksCompressed(Buffer.alloc(0))).toBe(false);
  });

  it('detects a wrong digest, a flipped payload byte, a bad magic, version, codec or length', () => {
    const raw = Buffer.from('const a = 1;\n'.repeat(500));
    const frame = encodeBlob(raw);
    const d = digestOf(raw);
    expect(() => decodeBlob(frame, digestOf('other'))).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY }));
    const mutations: Array<(f: Buffer) => void> = [
      (f) => (f[f.length - 3] ^= 0x40),
      (f) => (f[0] = 0x58),
      (f) => (f[4] = 2),
      (f) => (f[5] = 7),
      (f) => (f[6] = 1),
      (f) => f.writeBigUInt64BE(BigInt(raw.length + 1), 8),
      (f) => f.writeBigUInt64BE(BigInt(MAX_BLOB_BYTES) + 1n, 8),
    ];
    for (const mutate of mutations) {
      const copy = Buffer.from(frame);
      mutate(copy);
      expect(() => decodeBlob(copy, d)).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY }));
    }
    expect(() => decodeBlob(frame.subarray(0, 10), d)).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY }));
    expect(() => decodeBlob(frame.subarray(0, frame.length - 5), d)).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY }));
  });

  it('refuses a zstd payload whose declared size differs from the header (no oversized allocation)', () => {
    const small = Buffer.from('x'.repeat(100));
    const big = compress(Buffer.alloc(10_000_000));
    const frame = Buffer.from(encodeBlob(small));
    const hostile = Buffer.concat([frame.subarray(0, 16), big]);
    expect(zstdFrameContentSize(big)).toBe(10_000_000);
    expect(() => decodeBlob(hostile)).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY }));
  });

  it('rejects blobs over the size limit', () => {
    expect(() => encodeBlob(Buffer.alloc(MAX_BLOB_BYTES + 1))).toThrow(expect.objectContaining({ code: ErrorCodes.TOO_LARGE }));
  });
});

describe.each(BACKENDS)('zstd through %s', (name) => {
  const other = BACKENDS.find((b) => b !== name)!;
  beforeAll(() => useZstdBackend(name));
  afterAll(() => useZstdBackend('zstd-napi'));

  it('is the backend in use', () => {
    expect(activeZstd().name).toBe(name);
  });

  it('round-trips, declares the content size in every frame, and the frame ends where the blob does (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 200_000 }), fc.nat(255), (bytes, fill) => {
        const raw = Buffer.concat([Buffer.from(bytes), Buffer.alloc(bytes.length, fill)]); // half compressible
        const frame = encodeBlob(raw);
        const payload = frame.subarray(16);
        return frame[5] === Codec.ZSTD && zstdFrameContentSize(payload) === raw.length && zstdFrameEnd(payload) === payload.length && decodeBlob(frame, digestOf(raw)).equals(raw);
      }),
      { numRuns: 40 },
    );
  });

  it(`reads blobs the other backend wrote, and the other reads its blobs`, () => {
    const raws = [Buffer.from('cascache '.repeat(5000)), Buffer.concat([randomBytes(30_000), Buffer.alloc(30_000, 1)])];
    const mine = raws.map((r) => encodeBlob(r));
    useZstdBackend(other);
    try {
      const theirs = raws.map((r) => encodeBlob(r));
      mine.forEach((f, i) => expect(decodeBlob(f, digestOf(raws[i]!)).equals(raws[i]!)).toBe(true));
      useZstdBackend(name);
      theirs.forEach((f, i) => expect(decodeBlob(f, digestOf(raws[i]!)).equals(raws[i]!)).toBe(true));
    } finally {
      useZstdBackend(name);
    }
  });

  it('decodes a blob written by zstd-napi 0.0.13 at level 3 (fixed bytes)', () => {
    const raw = Buffer.from('cascache blob vector '.repeat(40));
    const z = Buffer.from('28b52ffd604802e50000a8636173636163686520626c6f6220766563746f7220010061623599', 'hex');
    expect(decodeBlob(Buffer.concat([zstdHeader(raw.length), z]), digestOf(raw)).equals(raw)).toBe(true);
  });

  it('refuses a payload with anything after its frame: a second frame would decode with no size bound', () => {
    const frame = encodeBlob(Buffer.from('y'.repeat(1000)));
    const bomb = new Encoder(3).encodeSync(Buffer.alloc(50_000_000)); // declares no size
    for (const tail of [bomb, Buffer.from([0])]) {
      expect(() => decodeBlob(Buffer.concat([frame, tail]))).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY, message: expect.stringContaining('after its frame') }));
    }
  });

  it('stops at the declared size when a frame holds more than it says', () => {
    const raw = Buffer.alloc(1 << 20, 9);
    const lying = Buffer.from(encodeBlob(raw));
    const payload = lying.subarray(16);
    const fhd = payload[4]!;
    const fcsAt = 5 + ((fhd >>> 5) & 1 ? 0 : 1);
    expect(fhd >>> 6).toBe(2); // a 4-byte content size
    expect(payload.readUInt32LE(fcsAt)).toBe(raw.length);
    payload.writeUInt32LE(1000, fcsAt);
    lying.writeBigUInt64BE(1000n, 8);
    expect(() => decodeBlob(lying)).toThrow(expect.objectContaining({ code: ErrorCodes.INTEGRITY }));
  });

  it('round-trips streams of 0 B to 5 MB in 64 KiB pieces', async () => {
    for (const size of [0, 1, 100_000, 5_000_000]) {
      const raw = Buffer.concat([randomBytes(Math.floor(size / 2)), Buffer.alloc(size - Math.floor(size / 2), 'a')]);
      const pieces = Array.from({ length: Math.ceil(raw.length / 65536) }, (_, i) => raw.subarray(i * 65536, (i + 1) * 65536));
      const z = await collect(Readable.from(pieces).pipe(zstdCompressStream()));
      expect(z.length).toBeGreaterThan(0);
      expect(Buffer.from(fzstdDecompress(z)).equals(raw)).toBe(true); // an independent decoder reads every frame
      const back = await collect(Readable.from([z.subarray(0, 1000), z.subarray(1000)].filter((b) => b.length)).pipe(zstdDecompressStream()));
      expect(back.equals(raw)).toBe(true);
    }
  });

  it('fails a cut stream instead of ending it short', async () => {
    const z = compress(randomBytes(200_000));
    await expect(collect(Readable.from([z.subarray(0, z.length - 7)]).pipe(zstdDecompressStream()))).rejects.toThrow();
  });
});

describe('zstd stream decoders that need no install script', () => {
  const nodeHasZstd = typeof (zlib as { createZstdDecompress?: unknown }).createZstdDecompress === 'function';
  for (const decoder of ['fzstd', 'node:zlib'] as const) {
    const run = decoder === 'node:zlib' && !nodeHasZstd ? it.skip : it;
    run(`${decoder}: decodes several frames fed in pieces, and fails a cut stream`, async () => {
      const raw = Buffer.concat([randomBytes(1_000_000), Buffer.alloc(3_000_000, 'z')]);
      const z = Buffer.concat([compress(raw.subarray(0, 2_500_000)), new Encoder(3).encodeSync(raw.subarray(2_500_000))]);
      const pieces = Array.from({ length: Math.ceil(z.length / 65536) }, (_, i) => z.subarray(i * 65536, (i + 1) * 65536));
      expect((await collect(Readable.from(pieces).pipe(portableDecompressStream(decoder)))).equals(raw)).toBe(true);
      await expect(collect(Readable.from([z.subarray(0, z.length - 9)]).pipe(portableDecompressStream(decoder)))).rejects.toThrow();
    });
  }

  it('the portable backend compresses a 5 MB body as several whole frames', async () => {
    useZstdBackend('@toondepauw/node-zstd');
    try {
      const z = await collect(Readable.from([Buffer.alloc(5_000_000, 'b')]).pipe(zstdCompressStream()));
      const ends: number[] = [];
      for (let off = 0; off < z.length; ) {
        const end = zstdFrameEnd(z.subarray(off));
        expect(end).not.toBeNull();
        off += end!;
        ends.push(off);
      }
      expect(ends).toHaveLength(3);
    } finally {
      useZstdBackend('zstd-napi');
    }
  });
});
