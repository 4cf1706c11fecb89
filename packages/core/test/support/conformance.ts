/**
 * The BlobStore conformance suite (after restic's generic backend tests): every implementation runs
 * exactly these cases by calling `blobStoreConformance` with a factory. A store that cannot inject
 * corruption omits `corrupt` and skips those cases.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { digestOf, ErrorCodes, readAll, type BlobStore, type Digest } from '../../src';

export interface ConformanceSubject {
  store: BlobStore;
  /** Damages the stored form of a blob so that the next read must detect it. */
  corrupt?: (digest: Digest) => Promise<void>;
  /** Releases resources (temp dirs, servers). */
  cleanup?: () => Promise<void>;
}

async function body(store: BlobStore, digest: Digest): Promise<Buffer | null> {
  const stream = await store.get(digest);
  return stream === null ? null : readAll(stream, 1 << 30);
}

export function blobStoreConformance(name: string, factory: () => Promise<ConformanceSubject>): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let subject: ConformanceSubject;
    let store: BlobStore;
    beforeEach(async () => {
      subject = await factory();
      store = subject.store;
    });
    afterEach(async () => {
      await subject.cleanup?.();
    });

    const text = Buffer.from('export const answer = 42;\n'.repeat(200));
    const textDigest = digestOf(text);

    it('returns a miss (null / empty set / false) for absent blobs', async () => {
      const d = digestOf('absent');
      expect(await store.get(d)).toBeNull();
      expect(await store.has([d])).toEqual(new Set());
      expect(await store.delete(d)).toBe(false);
    });

    it('round-trips bytes exactly, from a Buffer and from a stream', async () => {
      const random = randomBytes(100_000);
      const r1 = await store.put(textDigest, text);
      const r2 = await store.put(digestOf(random), Readable.from([random.subarray(0, 7), random.subarray(7)]));
      expect(r1.created).toBe(true);
      expect(r2.created).toBe(true);
      expect((await body(store, textDigest))!.equals(text)).toBe(true);
      expect((await body(store, digestOf(random)))!.equals(random)).toBe(true);
    });

    it('stores the empty blob', async () => {
      const d = digestOf(Buffer.alloc(0));
      await store.put(d, Buffer.alloc(0));
      expect((await body(store, d))!.length).toBe(0);
    });

    it('rejects bytes that do not match the claimed digest, and stores nothing', async () => {
      const wrong = digestOf('something else');
      await expect(store.put(wrong, text)).rejects.toMatchObject({ code: ErrorCodes.INTEGRITY });
      expect(await store.has([wrong])).toEqual(new Set());
      expect(await store.get(wrong)).toBeNull();
    });

    it('rejects malformed digests with E_BAD_INPUT', async () => {
      for (const bad of ['', 'ABC', textDigest.toUpperCase(), `${textDigest}0`, '../../etc/passwd', textDigest.slice(0, 63) + 'g']) {
        await expect(store.put(bad, text)).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
        await expect(store.get(bad)).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
      }
    });

    it('answers has() for many digests in one call', async () => {
      const blobs = Array.from({ length: 50 }, (_, i) => Buffer.from(`blob ${i}`));
      for (const b of blobs.slice(0, 25)) await store.put(digestOf(b), b);
      const found = await store.has(blobs.map((b) => digestOf(b)));
      expect(found).toEqual(new Set(blobs.slice(0, 25).map((b) => digestOf(b))));
    });

    it('treats a second put of a present blob as a no-op', async () => {
      await store.put(textDigest, text);
      const again = await store.put(textDigest, text);
      expect(again).toEqual({ created: false, storedBytes: 0 });
      expect((await body(store, textDigest))!.equals(text)).toBe(true);
    });

    it('survives concurrent puts of one digest', async () => {
      const data = randomBytes(300_000);
      const d = digestOf(data);
      const results = await Promise.all(Array.from({ length: 8 }, () => store.put(d, data)));
      expect(results.filter((r) => r.created).length).toBeGreaterThanOrEqual(1);
      expect((await body(store, d))!.equals(data)).toBe(true);
      const listed = [];
      for await (const info of store.list()) if (info.digest === d) listed.push(info);
      expect(listed).toHaveLength(1);
    });

    it('deletes and lists', async () => {
      const a = Buffer.from('a');
      const b = Buffer.from('b');
      await store.put(digestOf(a), a);
      await store.put(digestOf(b), b);
      expect(await store.delete(digestOf(a))).toBe(true);
      const listed: Digest[] = [];
      for await (const info of store.list()) {
        expect(info.storedSize).toBeGreaterThan(0);
        listed.push(info.digest);
      }
      expect(listed.sort()).toEqual([digestOf(b)]);
      expect(await store.get(digestOf(a))).toBeNull();
    });

    it('reports a corrupt blob as E_INTEGRITY once, then as a miss', async () => {
      if (!subject.corrupt) return;
      await store.put(textDigest, text);
      await subject.corrupt(textDigest);
      await expect(body(store, textDigest)).rejects.toMatchObject({ code: ErrorCodes.INTEGRITY });
      expect(await store.get(textDigest)).toBeNull();
      // A fresh put heals it.
      await store.put(textDigest, text);
      expect((await body(store, textDigest))!.equals(text)).toBe(true);
    });
  });
}
