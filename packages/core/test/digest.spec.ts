import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { assertDigest, digestOf, digestStream, DigestHasher, ErrorCodes, isDigest } from '../src';

const VECTORS = JSON.parse(readFileSync(join(__dirname, '../../../fixtures/blake3/vectors.json'), 'utf8')) as {
  cases: Array<{ input_len: number; hash: string }>;
};

function vectorInput(length: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = i % 251;
  return b;
}

describe('BLAKE3 digests against the official test vectors', () => {
  it('covers the lengths the spec calls out', () => {
    const lengths = VECTORS.cases.map((c) => c.input_len);
    for (const l of [0, 1, 1023, 1024, 1025, 2048, 31744, 102400]) expect(lengths).toContain(l);
  });

  it.each(VECTORS.cases)('one-shot digest of $input_len bytes', ({ input_len, hash }) => {
    expect(digestOf(vectorInput(input_len))).toBe(hash);
  });

  it.each(VECTORS.cases)('streaming digest of $input_len bytes in 7-byte pieces', async ({ input_len, hash }) => {
    const input = vectorInput(input_len);
    const pieces = [];
    for (let i = 0; i < input.length; i += 7) pieces.push(input.subarray(i, i + 7));
    expect(await digestStream(Readable.from(pieces))).toEqual({ digest: hash, size: input_len });
  });
});

describe('digest helpers', () => {
  it('incremental hashing equals one-shot for any split', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.array(fc.nat(5000), { maxLength: 8 }), (bytes, cuts) => {
        const h = new DigestHasher();
        let prev = 0;
        for (const c of [...cuts].sort((a, b) => a - b)) {
          const at = Math.min(c, bytes.length);
          h.update(bytes.subarray(prev, at));
          prev = at;
        }
        h.update(bytes.subarray(prev));
        return h.digest() === digestOf(bytes) && h.length === bytes.length;
      }),
    );
  });

  it('accepts only 64 lowercase hex characters', () => {
    const good = digestOf('x');
    expect(isDigest(good)).toBe(true);
    for (const bad of [good.toUpperCase(), good.slice(1), `${good}a`, '', null, 42, `../${good.slice(3)}`]) {
      expect(isDigest(bad)).toBe(false);
      expect(() => assertDigest(bad)).toThrow(expect.objectContaining({ code: ErrorCodes.BAD_INPUT }));
    }
  });
});
