/**
 * The ObjectStore conformance suite: the object-level contract every remote backend (memory, S3,
 * GCS) must keep, run against each. The BlobStore suite then runs over a PackStore on each.
 */
import { randomBytes } from 'node:crypto';
import type { ObjectStore } from '../../src';

export function objectStoreConformance(name: string, factory: () => Promise<{ objects: ObjectStore; cleanup?: () => Promise<void> }>): void {
  describe(`ObjectStore conformance: ${name}`, () => {
    let objects: ObjectStore;
    let cleanup: (() => Promise<void>) | undefined;
    beforeEach(async () => {
      ({ objects, cleanup } = await factory());
    });
    afterEach(async () => {
      await cleanup?.();
    });

    it('returns null for a missing object and false for deleting one', async () => {
      expect(await objects.get('v1/nothing')).toBeNull();
      expect(await objects.get('v1/nothing', { offset: 0, length: 1 })).toBeNull();
    });

    it('round-trips bytes and reads exact ranges', async () => {
      const body = randomBytes(70_000);
      expect(await objects.put('v1/packs/a.pack', body)).toEqual({ created: true });
      expect((await objects.get('v1/packs/a.pack'))!.equals(body)).toBe(true);
      expect((await objects.get('v1/packs/a.pack', { offset: 0, length: 1 }))!.equals(body.subarray(0, 1))).toBe(true);
      expect((await objects.get('v1/packs/a.pack', { offset: 65_000, length: 5000 }))!.equals(body.subarray(65_000))).toBe(true);
      expect((await objects.get('v1/packs/a.pack', { offset: 12_345, length: 777 }))!.equals(body.subarray(12_345, 12_345 + 777))).toBe(true);
    });

    it('replaces on put, and stores an empty object', async () => {
      await objects.put('v1/x', Buffer.from('one'));
      await objects.put('v1/x', Buffer.from('two'));
      expect((await objects.get('v1/x'))!.toString()).toBe('two');
      await objects.put('v1/empty', Buffer.alloc(0));
      expect((await objects.get('v1/empty'))!.length).toBe(0);
    });

    it('lists by prefix with sizes, and deletes', async () => {
      await objects.put('v1/index/a.json', Buffer.from('aa'));
      await objects.put('v1/index/b.json', Buffer.from('bbb'));
      await objects.put('v1/other/c', Buffer.from('c'));
      const listed = [];
      for await (const o of objects.list('v1/index/')) listed.push([o.key, o.size]);
      expect(listed.sort()).toEqual([
        ['v1/index/a.json', 2],
        ['v1/index/b.json', 3],
      ]);
      expect(await objects.delete('v1/index/a.json')).toBe(true);
      expect(await objects.get('v1/index/a.json')).toBeNull();
      const after = [];
      for await (const o of objects.list('v1/')) after.push(o.key);
      expect(after.sort()).toEqual(['v1/index/b.json', 'v1/other/c']);
    });

    it('rejects a range past the end', async () => {
      await objects.put('v1/short', Buffer.from('abc'));
      await expect(objects.get('v1/short', { offset: 2, length: 5 })).rejects.toMatchObject({ code: 'E_INTEGRITY' });
    });

    it('keeps the first object with ifAbsent where the backend supports it', async () => {
      expect(await objects.put('v1/ac/ns/k', Buffer.from('first'), { ifAbsent: true })).toEqual({ created: true });
      const second = await objects.put('v1/ac/ns/k', Buffer.from('second'), { ifAbsent: true });
      if (second.created) return; // backend ignores the condition (s3rver): documented in object-ac.ts
      expect((await objects.get('v1/ac/ns/k'))!.toString()).toBe('first');
    });
  });
}
