import { readdirSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { computeActionKey, ingestDirectory, openLocalStore, storeStats, StoreIndex, type LocalStore } from '../src';
import { tempDir } from './support/tmp';

describe('the SQLite store index', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let store: LocalStore;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
    store = await openLocalStore({ root: join(dir, 'store'), secret: null });
    for (const name of ['a', 'b']) {
      await mkdir(join(dir, 'src', name), { recursive: true });
      await writeFile(join(dir, 'src', name, 'x.js'), `${name} `.repeat(30_000));
      const r = await ingestDirectory(store.blobs, join(dir, 'src', name));
      await store.actionCache.put('default', computeActionKey([name]), { manifest: r.digest, size: r.logicalBytes });
      if (name === 'a') await store.roots.add({ digest: r.digest, name: 'root-a', size: r.logicalBytes, files: r.files });
    }
  });
  afterEach(() => remove());

  it('is rebuilt from the files with the same totals the files give', async () => {
    const { index, replaced } = StoreIndex.open(store.root);
    expect(replaced).toBe('missing');
    const counts = await index.rebuild(store);
    const stats = await storeStats(store);
    expect(counts).toEqual({ blobs: stats.blobs, storedBytes: stats.storedBytes, rawBytes: stats.uniqueBytes, entries: 2, logicalBytes: stats.logicalBytes, roots: 1 });
    expect(index.rebuiltAt()).toEqual(expect.any(Number));
    index.close();
    const again = StoreIndex.open(store.root);
    expect(again.replaced).toBeUndefined();
    expect(again.index.counts()).toEqual(counts);
    again.index.close();
  });

  it('moves a corrupt index aside, starts a new one, and loses nothing on rebuild', async () => {
    const first = StoreIndex.open(store.root);
    const counts = await first.index.rebuild(store);
    first.index.close();
    writeFileSync(first.index.path, Buffer.from('this is not a database, just garbage bytes'.repeat(200)));
    const { index, replaced } = StoreIndex.open(store.root);
    expect(replaced).toBe('unreadable');
    expect(readdirSync(join(store.root, 'v1')).some((f) => f.startsWith('index.sqlite.corrupt-'))).toBe(true);
    expect(index.counts().blobs).toBe(0);
    expect(await index.rebuild(store)).toEqual(counts);
    index.close();
  });

  it('replaces an index of another schema version', async () => {
    const { index } = StoreIndex.open(store.root);
    index.close();
    const db = new Database(index.path);
    db.prepare("UPDATE meta SET value = '999' WHERE key = 'schema'").run();
    db.close();
    const reopened = StoreIndex.open(store.root);
    expect(reopened.replaced).toBe('schema');
    reopened.index.close();
  });
});
