import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { compress } from 'zstd-napi';
import { Codec, decodeBlob, digestOf, encodeBlob, ErrorCodes, looksCompressed, MAX_BLOB_BYTES, readBlobHeader, zstdFrameContentSize } from '../src';

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
