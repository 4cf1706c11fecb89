import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { Chunker, chunkLengths, chunkStream, DEFAULT_CHUNKER_PARAMS, ErrorCodes, gearEntry, type ChunkerParams } from '../src';

const DIR = join(__dirname, '../../../fixtures/fastcdc');
const VECTORS = JSON.parse(readFileSync(join(DIR, 'vectors.json'), 'utf8')) as {
  file: string;
  sha256: string;
  cases: Array<ChunkerParams & { lengths: number[] }>;
  allZeros: ChunkerParams & { lengths: number[] };
};
const IMAGE = readFileSync(join(DIR, VECTORS.file));

async function streamLengths(data: Uint8Array, pieces: number[], params: ChunkerParams): Promise<number[]> {
  const parts: Uint8Array[] = [];
  let off = 0;
  for (const p of pieces) {
    if (off >= data.length) break;
    parts.push(data.subarray(off, off + p));
    off += p;
  }
  if (off < data.length) parts.push(data.subarray(off));
  const out: number[] = [];
  for await (const c of chunkStream(parts, params)) out.push(c.length);
  return out;
}

describe('FastCDC 2020 (fastcdc crate v2020, normalization level 1) vectors', () => {
  it('uses the untouched fixture image', () => {
    expect(createHash('sha256').update(IMAGE).digest('hex')).toBe(VECTORS.sha256);
  });

  it('derives the crate GEAR table (spot entries from the crate source)', () => {
    expect(gearEntry(0)).toBe('3b5d3c7d207e37dc');
    expect(gearEntry(1)).toBe('784d68ba91123086');
    expect(gearEntry(128)).toBe('c0ce47f889336346');
    expect(gearEntry(255)).toBe('aabd2b2a451504e1');
  });

  it.each(VECTORS.cases)('cuts SekienAkashita.jpg with $min/$avg/$max', (c) => {
    const lengths = chunkLengths(IMAGE, c);
    expect(lengths).toEqual(c.lengths);
    expect(lengths.reduce((a, b) => a + b, 0)).toBe(IMAGE.length);
  });

  it('cuts all-zero input at max size', () => {
    const z = VECTORS.allZeros;
    expect(chunkLengths(Buffer.alloc(10240), z)).toEqual(z.lengths);
  });

  it.each(VECTORS.cases)('streams SekienAkashita.jpg with $min/$avg/$max in 1000-byte pieces to the same cuts', async (c) => {
    expect(await streamLengths(IMAGE, new Array(200).fill(1000), c)).toEqual(c.lengths);
  });
});

describe('chunker behaviour', () => {
  it('defaults to 2 KiB / 8 KiB / 64 KiB', () => {
    expect(DEFAULT_CHUNKER_PARAMS).toEqual({ min: 2048, avg: 8192, max: 65536 });
  });

  it('gives no chunks for empty input and one chunk below the minimum', () => {
    expect(chunkLengths(Buffer.alloc(0))).toEqual([]);
    expect(chunkLengths(Buffer.alloc(2048, 1))).toEqual([2048]);
    expect(chunkLengths(Buffer.alloc(17, 1))).toEqual([17]);
  });

  it('keeps every chunk within [min, max] except the last', () => {
    const data = Buffer.concat(Array.from({ length: 40 }, () => IMAGE));
    const lengths = chunkLengths(data);
    for (const l of lengths.slice(0, -1)) {
      expect(l).toBeGreaterThanOrEqual(2048);
      expect(l).toBeLessThanOrEqual(65536);
    }
  });

  it('streams to the same boundaries as one buffer, whatever the piece sizes (property)', async () => {
    const params: ChunkerParams = { min: 64, avg: 256, max: 1024 };
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 0, maxLength: 20_000 }),
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 40 }),
        async (data, pieces) => {
          expect(await streamLengths(data, pieces, params)).toEqual(chunkLengths(data, params));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('streams multi-megabyte input across its internal buffer threshold identically', async () => {
    const data = Buffer.concat(Array.from({ length: 90 }, (_, i) => (i % 2 ? IMAGE : IMAGE.subarray(i * 100))));
    expect(await streamLengths(data, new Array(400).fill(65_537), DEFAULT_CHUNKER_PARAMS)).toEqual(chunkLengths(data));
  });

  it('finds the same boundaries after an insertion (content-defined)', () => {
    const data = Buffer.concat([IMAGE, IMAGE, IMAGE]);
    const edited = Buffer.concat([Buffer.from('one inserted line\n'), data]);
    const before = new Set(cutDigests(data));
    const after = cutDigests(edited);
    const shared = after.filter((d) => before.has(d)).length;
    expect(shared / after.length).toBeGreaterThan(0.8);
  });

  it.each([
    [{ min: 63, avg: 256, max: 1024 }, 'min'],
    [{ min: 64, avg: 255, max: 1024 }, 'avg'],
    [{ min: 64, avg: 256, max: 1023 }, 'max'],
    [{ min: 2048, avg: 8192, max: 16_777_217 }, 'max'],
    [{ min: 4096, avg: 2048, max: 65536 }, 'min <= avg <= max'],
    [{ min: 2048.5, avg: 8192, max: 65536 }, 'min'],
  ])('rejects %j with E_CONFIG naming %s', (params, word) => {
    expect(() => new Chunker(params)).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG, message: expect.stringContaining(word) }));
  });

  it('accepts the extreme bounds of the crate', () => {
    expect(() => new Chunker({ min: 64, avg: 256, max: 1024 })).not.toThrow();
    expect(() => new Chunker({ min: 1_048_576, avg: 4_194_304, max: 16_777_216 })).not.toThrow();
  });
});

function cutDigests(data: Buffer): string[] {
  const out: string[] = [];
  let off = 0;
  for (const l of chunkLengths(data)) {
    out.push(createHash('sha256').update(data.subarray(off, off + l)).digest('hex'));
    off += l;
  }
  return out;
}
