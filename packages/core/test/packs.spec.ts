import { readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import * as tarStream from 'tar-stream';
import { digestOf, ErrorCodes, FsBlobStore, ingestTar, PACK_MIN_BLOBS, type BlobStore } from '../src';
import { tempDir } from './support/tmp';

/** `n` distinct blobs of a few hundred bytes each (compressible, as build outputs are). */
function blobs(n: number, tag = 'b'): Buffer[] {
  return Array.from({ length: n }, (_, i) => Buffer.from(`${tag} ${i} ${createHash('sha256').update(`${tag}${i}`).digest('hex')}\n`.repeat(8)));
}

const files = (dir: string, sub: string): string[] => {
  try {
    return readdirSync(join(dir, 'v1', sub), { recursive: true }).map(String).filter((f) => !/^[0-9a-f]{2}$/.test(f));
  } catch {
    return [];
  }
};

async function putAll(store: BlobStore, items: Buffer[]): Promise<void> {
  for (const b of items) await store.put(digestOf(b), b);
}

describe('local pack files', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => ({ dir, remove } = await tempDir()));
  afterEach(() => remove());

  it('a batch of many blobs becomes one pack, visible to another process only once sealed', async () => {
    const writer = new FsBlobStore({ root: dir });
    const other = new FsBlobStore({ root: dir }); // another process's view of the same store
    const items = blobs(40);
    await writer.withBatch(async (s) => {
      await putAll(s, items);
      // Inside the batch the writer reads its own blobs; the other process does not see them yet.
      expect(await writer.getBuffer(digestOf(items[3]!))).toEqual(items[3]);
      expect((await other.has(items.map((b) => digestOf(b)))).size).toBe(0);
    });
    expect(files(dir, 'packs')).toHaveLength(1);
    expect(files(dir, 'blobs')).toEqual([]);
    expect(files(dir, 'tmp')).toEqual([]);
    expect((await other.has(items.map((b) => digestOf(b)))).size).toBe(40);
    for (const b of items) expect(await other.getBuffer(digestOf(b))).toEqual(b);
    const listed = [];
    for await (const x of other.list()) listed.push(x.digest);
    expect(listed.sort()).toEqual(items.map((b) => digestOf(b)).sort());
    expect(other.header(digestOf(items[0]!))?.rawLength).toBe(items[0]!.length);
  });

  it(`a batch of fewer than ${PACK_MIN_BLOBS} blobs is written as loose files`, async () => {
    const store = new FsBlobStore({ root: dir });
    const items = blobs(PACK_MIN_BLOBS - 1);
    await store.withBatch((s) => putAll(s, items));
    expect(files(dir, 'packs')).toEqual([]);
    expect(files(dir, 'blobs')).toHaveLength(PACK_MIN_BLOBS - 1);
    for (const b of items) expect(await new FsBlobStore({ root: dir }).getBuffer(digestOf(b))).toEqual(b);
  });

  it('a batch that fails alone leaves nothing behind', async () => {
    const store = new FsBlobStore({ root: dir });
    const items = blobs(100);
    await expect(
      store.withBatch(async (s) => {
        await putAll(s, items);
        throw new Error('rejected upload');
      }),
    ).rejects.toThrow('rejected upload');
    expect([...files(dir, 'packs'), ...files(dir, 'blobs'), ...files(dir, 'tmp')]).toEqual([]);
    expect((await store.has(items.map((b) => digestOf(b)))).size).toBe(0);
  });

  it('a rejected Nx upload (a 1 MB file, then ../x) stores nothing', async () => {
    const pack = tarStream.pack();
    const big = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i} ${digestOf(String(i))}\n`).join(''));
    pack.entry({ name: 'dist/big.js', size: big.length }, big);
    pack.entry({ name: '../x', size: 1 }, 'x');
    pack.finalize();
    const store = new FsBlobStore({ root: dir });
    await expect(ingestTar(store, pack)).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
    expect([...files(dir, 'packs'), ...files(dir, 'blobs'), ...files(dir, 'tmp')]).toEqual([]);
  });

  it('a failing batch does not drop what a concurrent batch stored', async () => {
    const store = new FsBlobStore({ root: dir });
    const mine = blobs(30, 'mine');
    const theirs = blobs(30, 'theirs');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const failing = store.withBatch(async (s) => {
      await putAll(s, theirs);
      await gate;
      throw new Error('rejected');
    });
    await store.withBatch(async (s) => {
      await putAll(s, mine);
      release();
      await expect(failing).rejects.toThrow('rejected');
    });
    const fresh = new FsBlobStore({ root: dir });
    for (const b of mine) expect(await fresh.getBuffer(digestOf(b))).toEqual(b);
  });

  it('deleting blobs rewrites their pack without them, and an emptied pack is removed', async () => {
    const store = new FsBlobStore({ root: dir });
    const items = blobs(40);
    await store.withBatch((s) => putAll(s, items));
    const [first] = files(dir, 'packs');
    const gone = items.slice(0, 10).map((b) => digestOf(b));
    expect(await store.deleteMany(gone)).toEqual(new Set(gone));
    const after = files(dir, 'packs');
    expect(after).toHaveLength(1);
    expect(after[0]).not.toBe(first);
    const fresh = new FsBlobStore({ root: dir });
    expect((await fresh.has(gone)).size).toBe(0);
    for (const b of items.slice(10)) expect(await fresh.getBuffer(digestOf(b))).toEqual(b);
    await fresh.deleteMany(items.slice(10).map((b) => digestOf(b)));
    expect(files(dir, 'packs')).toEqual([]);
  });

  it('another process removing blobs is seen by the next has(), so nobody deduplicates against them', async () => {
    const a = new FsBlobStore({ root: dir });
    const items = blobs(30);
    await a.withBatch((s) => putAll(s, items));
    expect((await a.has(items.map((b) => digestOf(b)))).size).toBe(30);
    await new FsBlobStore({ root: dir }).deleteMany(items.slice(0, 10).map((b) => digestOf(b)));
    expect((await a.has(items.map((b) => digestOf(b)))).size).toBe(20);
  });

  it('a blob held by two packs stays found when the one a reader used is rewritten without it', async () => {
    const shared = blobs(20, 'shared');
    const extra = blobs(1, 'extra');
    const reader = new FsBlobStore({ root: dir });
    const other = new FsBlobStore({ root: dir });
    await other.has([]); // another process that looked before pack 1 existed
    await reader.withBatch((s) => putAll(s, [...shared, ...extra])); // pack 1: shared + extra
    // That process stores the shared blobs again without looking: pack 2 (a duplicate is harmless).
    await other.withBatch((s) => putAll(s, shared));
    expect(files(dir, 'packs')).toHaveLength(2);
    expect((await reader.has(shared.map((b) => digestOf(b)))).size).toBe(20);
    // A third process deletes `extra`: pack 1 is rewritten, and its shared rows are skipped there,
    // because that process maps them to pack 2.
    const gc = new FsBlobStore({ root: dir });
    await gc.deleteMany([digestOf(extra[0]!)]);
    expect((await reader.has(shared.map((b) => digestOf(b)))).size).toBe(20);
    for (const b of shared) expect(await reader.getBuffer(digestOf(b))).toEqual(b);
  });

  it('a damaged frame is quarantined, the rest of its pack still reads, and a re-put repairs it', async () => {
    const corrupt: string[] = [];
    const store = new FsBlobStore({ root: dir, onCorrupt: (e) => corrupt.push(e.digest) });
    const items = blobs(20);
    await store.withBatch((s) => putAll(s, items));
    const victim = digestOf(items[5]!);
    const path = store.fileOf(victim)!;
    const bytes = await readFile(path);
    // The victim's frame is the sixth; flip its last payload byte (frames are back to back).
    const sizes = new Map<string, number>();
    for await (const x of store.list()) sizes.set(x.digest, x.storedSize);
    let offset = 0;
    for (let i = 0; i <= 5; i++) offset += sizes.get(digestOf(items[i]!))!;
    bytes[offset - 1] ^= 0x01;
    await writeFile(path, bytes);
    const reader = new FsBlobStore({ root: dir, onCorrupt: (e) => corrupt.push(e.digest) });
    await expect(reader.getBuffer(victim)).rejects.toMatchObject({ code: ErrorCodes.INTEGRITY });
    expect(corrupt).toEqual([victim]);
    expect(files(dir, 'quarantine')).toHaveLength(1);
    expect(await reader.getBuffer(victim)).toBeNull();
    for (const b of items) if (digestOf(b) !== victim) expect(await reader.getBuffer(digestOf(b))).toEqual(b);
    await reader.put(victim, items[5]!);
    expect(await new FsBlobStore({ root: dir }).getBuffer(victim)).toEqual(items[5]);
  });

  it('a pack whose index is damaged is moved aside and its blobs are misses', async () => {
    const store = new FsBlobStore({ root: dir });
    const items = blobs(20);
    await store.withBatch((s) => putAll(s, items));
    const path = store.fileOf(digestOf(items[0]!))!;
    const bytes = await readFile(path);
    bytes[bytes.length - 30] ^= 0x01; // inside the last index row
    await writeFile(path, bytes);
    const events: string[] = [];
    const reader = new FsBlobStore({ root: dir, onCorrupt: (e) => events.push(e.error.message) });
    expect(await reader.getBuffer(digestOf(items[0]!))).toBeNull();
    expect(events).toEqual([expect.stringMatching(/index checksum mismatch/)]);
    expect(files(dir, 'packs')).toEqual([]);
    expect(files(dir, 'quarantine')).toHaveLength(1);
  });

  it('round trip: any sequence of batches, loose puts and deletes reads back as a model says', async () => {
    const pool = blobs(60, 'pool');
    const op = fc.oneof(
      fc.record({ kind: fc.constant('batch' as const), items: fc.uniqueArray(fc.nat(59), { minLength: 1, maxLength: 40 }), fail: fc.boolean() }),
      fc.record({ kind: fc.constant('put' as const), items: fc.uniqueArray(fc.nat(59), { minLength: 1, maxLength: 3 }) }),
      fc.record({ kind: fc.constant('delete' as const), items: fc.uniqueArray(fc.nat(59), { minLength: 1, maxLength: 20 }) }),
      fc.record({ kind: fc.constant('reopen' as const) }),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const root = join(dir, `r${run++}`);
        let store = new FsBlobStore({ root });
        const model = new Set<number>();
        for (const o of ops) {
          if (o.kind === 'reopen') {
            store.close();
            store = new FsBlobStore({ root });
          } else if (o.kind === 'put') {
            await putAll(store, o.items.map((i) => pool[i]!));
            o.items.forEach((i) => model.add(i));
          } else if (o.kind === 'delete') {
            await store.deleteMany(o.items.map((i) => digestOf(pool[i]!)));
            o.items.forEach((i) => model.delete(i));
          } else {
            const before = new Set(model);
            await store
              .withBatch(async (s) => {
                await putAll(
                  s,
                  o.items.map((i) => pool[i]!),
                );
                if (o.fail) throw new Error('fail');
              })
              .catch(() => undefined);
            if (!o.fail) o.items.forEach((i) => model.add(i));
            else expect(model).toEqual(before);
          }
        }
        const fresh = new FsBlobStore({ root });
        const present = await fresh.has(pool.map((b) => digestOf(b)));
        expect([...present].sort()).toEqual([...model].map((i) => digestOf(pool[i]!)).sort());
        for (const i of model) expect(await fresh.getBuffer(digestOf(pool[i]!))).toEqual(pool[i]);
        const listed: string[] = [];
        for await (const b of fresh.list()) listed.push(b.digest);
        expect(listed.sort()).toEqual([...present].sort());
        expect(files(root, 'tmp')).toEqual([]);
      }),
      { numRuns: 60 },
    );
  });

  it('frames written to the pack in runs read back inside the batch (written or not yet) and after the seal', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 300_000 }), { minLength: PACK_MIN_BLOBS + 1, maxLength: 40 }), async (sizes) => {
        const root = join(dir, `runs${run++}`);
        // Incompressible bytes, so the frames add up past the write runs' 1 MiB.
        const items = sizes.map((n, i) => Buffer.concat(Array.from({ length: Math.ceil(n / 32) }, (_, j) => createHash('sha256').update(`${run}/${i}/${j}`).digest())).subarray(0, n));
        const store = new FsBlobStore({ root });
        await store.withBatch(async (s) => {
          for (let i = 0; i < items.length; i++) {
            await s.put(digestOf(items[i]!), items[i]!);
            // Every blob so far, whether its frame is in the file yet or still in memory.
            for (const j of [0, i >> 1, i]) expect((await store.getBuffer(digestOf(items[j]!)))?.equals(items[j]!)).toBe(true);
          }
        });
        const other = new FsBlobStore({ root });
        for (const b of items) expect((await other.getBuffer(digestOf(b)))?.equals(b)).toBe(true);
        expect(files(root, 'packs')).toHaveLength(1);
        expect(files(root, 'tmp')).toEqual([]);
      }),
      { numRuns: 12 },
    );
  });

  it('a streamed put body is accepted inside a batch', async () => {
    const store = new FsBlobStore({ root: dir });
    const b = blobs(1)[0]!;
    await store.withBatch((s) => s.put(digestOf(b), Readable.from([b])));
    expect(await store.getBuffer(digestOf(b))).toEqual(b);
  });
});
