import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { computeActionKey, ingestDirectory, verifyStore, type LocalStore } from '../src';
import { openTestStore, tempDir } from './support/tmp';

describe('store roots and verify', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let store: LocalStore;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
    store = await openTestStore({ root: join(dir, 'store'), secret: Buffer.alloc(32, 9) });
    await writeFile(join(dir, 'a.txt'), 'alpha '.repeat(2000));
    await writeFile(join(dir, 'b.txt'), 'beta');
  });
  afterEach(() => remove());

  const ingest = () => ingestDirectory(store.blobs, dir, { exclude: (p) => p === 'store' });

  it('records, lists, renames and removes roots by digest', async () => {
    const r = await ingest();
    const added = await store.roots.add({ digest: r.digest, name: 'release 1', size: r.logicalBytes, files: r.files });
    expect(added).toMatchObject({ digest: r.digest, name: 'release 1', size: 12004, files: 2 });
    const again = await store.roots.add({ digest: r.digest, name: 'renamed', size: r.logicalBytes, files: r.files });
    expect(again.created).toBe(added.created);
    expect((await store.roots.list()).map((x) => x.name)).toEqual(['renamed']);
    expect(await store.roots.remove(r.digest)).toBe(true);
    expect(await store.roots.remove(r.digest)).toBe(false);
    expect(await store.roots.list()).toEqual([]);
    await expect(store.roots.add({ digest: 'nope', name: 'x', size: 0, files: 0 })).rejects.toMatchObject({ code: 'E_BAD_INPUT' });
  });

  it('finds nothing wrong in a sound store', async () => {
    const r = await ingest();
    await store.roots.add({ digest: r.digest, name: 'x', size: r.logicalBytes, files: r.files });
    await store.actionCache.put('default', computeActionKey(['t', '1']), { manifest: r.digest, size: r.logicalBytes });
    const report = await verifyStore(store);
    expect(report).toMatchObject({ roots: 1, acEntries: 1, problems: [] });
    expect(report.blobs).toBe(3); // two chunks and the manifest
  });

  it('finds a flipped byte, quarantines the blob, and reports what depended on it', async () => {
    const r = await ingest();
    await store.roots.add({ digest: r.digest, name: 'x', size: r.logicalBytes, files: r.files });
    const key = computeActionKey(['t', '1']);
    await store.actionCache.put('default', key, { manifest: r.digest, size: r.logicalBytes });
    const a = r.manifest.entries.find((e) => e.path === 'a.txt');
    if (a?.type !== 'file') throw new Error('fixture');
    const p = store.blobs.pathOf(a.chunks[0]!);
    const bytes = await readFile(p);
    bytes[bytes.length - 1] ^= 0x10;
    await writeFile(p, bytes);
    const report = await verifyStore(store);
    expect(report.problems).toEqual([
      expect.objectContaining({ kind: 'blob', id: a.chunks[0], reason: 'corrupt' }),
      expect.objectContaining({ kind: 'ac-entry', id: `default/${key}`, reason: 'chunks-missing' }),
      expect.objectContaining({ kind: 'root', id: r.digest, reason: 'chunks-missing' }),
    ]);
    expect(await store.blobs.has([a.chunks[0]!])).toEqual(new Set());
  });

  it('reports a tampered action-cache entry', async () => {
    const r = await ingest();
    const key = computeActionKey(['t', '2']);
    await store.actionCache.put('default', key, { manifest: r.digest, size: 1 });
    const file = join(dir, 'store', 'v1', 'ac', 'default', key.slice(0, 2), key);
    await writeFile(file, (await readFile(file, 'utf8')).replace('"size":1', '"size":2'));
    expect((await verifyStore(store)).problems).toEqual([expect.objectContaining({ kind: 'ac-entry', reason: 'bad-signature' })]);
  });
});
