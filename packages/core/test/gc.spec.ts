import { utimes, writeFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { computeActionKey, digestOf, executeGc, ingestDirectory, materializeToDirectory, planEvict, planGc, UploadJournal, type LocalStore } from '../src';
import { openTestStore, tempDir } from './support/tmp';

const HOUR = 3600_000;

describe('gc and evict', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let store: LocalStore;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
    store = await openTestStore({ root: join(dir, 'store'), secret: Buffer.alloc(32, 5) });
  });
  afterEach(() => remove());

  /** Stores a tree of unique content under an AC key; returns the key and its digests. */
  async function entry(name: string, bytes = 20_000): Promise<{ key: string; manifest: string; chunks: string[] }> {
    const src = join(dir, 'src', name);
    await mkdir(src, { recursive: true });
    let text = '';
    for (let i = 0; text.length < bytes; i++) text += `${name} line ${i} ${digestOf(`${name}${i}`)}\n`;
    await writeFile(join(src, 'out.js'), text);
    const r = await ingestDirectory(store.blobs, src);
    const key = computeActionKey(['test', name]);
    await store.actionCache.put('default', key, { manifest: r.digest, size: r.logicalBytes });
    const f = r.manifest.entries[0]!;
    return { key, manifest: r.digest, chunks: f.type === 'file' ? f.chunks : [] };
  }

  async function age(digests: string[], ms: number): Promise<void> {
    const t = new Date(Date.now() - ms);
    for (const d of digests) await utimes(store.blobs.fileOf(d)!, t, t);
  }

  async function ageEntry(key: string, ms: number): Promise<void> {
    const t = new Date(Date.now() - ms);
    await utimes(join(dir, 'store', 'v1', 'ac', 'default', key.slice(0, 2), key), t, t);
  }

  it('drops entries unused for --older-than, sweeps what only they referenced, and keeps young orphans', async () => {
    const keep = await entry('keep');
    const old = await entry('old');
    const orphanOld = Buffer.from('orphan, old');
    const orphanYoung = Buffer.from('orphan, young');
    await store.blobs.put(digestOf(orphanOld), orphanOld);
    await store.blobs.put(digestOf(orphanYoung), orphanYoung);
    await age([...keep.chunks, keep.manifest, ...old.chunks, old.manifest, digestOf(orphanOld)], 2 * HOUR);
    await ageEntry(old.key, 48 * HOUR);

    const plan = await planGc(store, { olderThanMs: 24 * HOUR });
    expect(plan.entries.map((e) => [e.key, e.reason])).toEqual([[old.key, 'older-than']]);
    expect(new Set(plan.blobs.map((b) => b.digest))).toEqual(new Set([...old.chunks, old.manifest, digestOf(orphanOld)]));
    expect(plan.inGrace).toBe(1);
    // A plan changes nothing.
    expect(await store.actionCache.peek('default', old.key)).not.toBeNull();

    const done = await executeGc(store, plan);
    expect(done).toEqual({ deletedEntries: 1, deletedBlobs: plan.blobs.length, freedBytes: plan.freedBytes, deletedTmpFiles: 0 });
    expect(await store.actionCache.get('default', keep.key)).not.toBeNull();
    expect(await store.actionCache.peek('default', old.key)).toBeNull();
    expect(await store.blobs.has([digestOf(orphanYoung)])).toEqual(new Set([digestOf(orphanYoung)]));
  });

  it('drops entries that can never be served, and keeps entries another secret signed, with their blobs', async () => {
    const broken = await entry('broken');
    const fine = await entry('fine');
    const foreign = await entry('foreign');
    await store.blobs.deleteMany([broken.chunks[0]!]); // quarantined after damage, say
    // Read with another secret, 'foreign' (and 'fine') fail their signature: that is the reader's
    // secret, not the store. A GC with a wrong secret must not empty the store.
    store.close();
    const other = await openTestStore({ root: join(dir, 'store'), secret: Buffer.alloc(32, 9) });
    const plan = await planGc(other, { scope: 'all', graceMs: 0 });
    expect(plan.entries.map((e) => [e.key, e.reason])).toEqual([[broken.key, 'unservable']]);
    const kept = new Set([...fine.chunks, fine.manifest, ...foreign.chunks, foreign.manifest]);
    expect(plan.blobs.filter((b) => kept.has(b.digest))).toEqual([]);
    await executeGc(other, plan);
    other.close();
    store = await openTestStore({ root: join(dir, 'store'), secret: Buffer.alloc(32, 5) });
    expect(await store.actionCache.get('default', fine.key)).not.toBeNull();
    expect(await store.actionCache.get('default', foreign.key)).not.toBeNull();
    expect(await store.actionCache.peek('default', broken.key)).toBeNull();
  });

  it('keeps everything a store root references', async () => {
    const e = await entry('rooted');
    await store.roots.add({ digest: e.manifest, name: 'r', size: 1, files: 1 });
    await store.actionCache.delete('default', e.key);
    await age([...e.chunks, e.manifest], 2 * HOUR);
    expect((await planGc(store)).blobs).toEqual([]);
    await store.roots.remove(e.manifest);
    expect((await planGc(store)).blobs.length).toBe(e.chunks.length + 1);
  });

  it('loses nothing from a writer running during gc', async () => {
    // Old garbage gives gc real work while the writer runs.
    const garbage = await entry('garbage', 200_000);
    await store.actionCache.delete('default', garbage.key);
    await age([...garbage.chunks, garbage.manifest], 2 * HOUR);
    const written: Array<{ key: string }> = [];
    const writer = (async () => {
      for (let i = 0; i < 12; i++) written.push(await entry(`w${i}`, 30_000));
    })();
    const collector = (async () => {
      for (let i = 0; i < 4; i++) await executeGc(store, await planGc(store));
    })();
    await Promise.all([writer, collector]);
    for (const [i, w] of written.entries()) {
      const hit = await store.actionCache.get('default', w.key);
      expect(hit).not.toBeNull();
      await materializeToDirectory(store.blobs, hit!.manifest, join(dir, 'check', String(i)));
    }
    expect(await store.blobs.has([garbage.manifest])).toEqual(new Set());
  });

  it('evicts least recently used entries until the store fits, and hits refresh an entry', async () => {
    const a = await entry('a', 60_000);
    const b = await entry('b', 60_000);
    const c = await entry('c', 60_000);
    await ageEntry(a.key, 3 * HOUR);
    await ageEntry(b.key, 2 * HOUR);
    await ageEntry(c.key, 1 * HOUR);
    await store.actionCache.get('default', a.key); // a hit makes a the most recently used
    let total = 0;
    for await (const x of store.blobs.list()) total += x.storedSize;
    const plan = await planEvict(store, { toSizeBytes: Math.floor(total * 0.7), graceMs: 0 });
    expect(plan.entries.map((e) => e.key)).toEqual([b.key]);
    expect(plan.keptBytes).toBeLessThanOrEqual(Math.floor(total * 0.7));
    await executeGc(store, plan);
    let after = 0;
    for await (const x of store.blobs.list()) after += x.storedSize;
    expect(after).toBeLessThanOrEqual(Math.floor(total * 0.7));
    expect(await store.actionCache.get('default', a.key)).not.toBeNull();
  });

  it('evicts the largest entries first with strategy largest', async () => {
    const small = await entry('small', 10_000);
    const big = await entry('big', 150_000);
    let total = 0;
    for await (const x of store.blobs.list()) total += x.storedSize;
    const plan = await planEvict(store, { toSizeBytes: total - 1, strategy: 'largest', graceMs: 0 });
    expect(plan.entries.map((e) => e.key)).toEqual([big.key]);
    void small;
  });

  it('keeps what a pending upload names, through gc --older-than and eviction, until the upload is done', async () => {
    const a = await entry('a', 60_000);
    const b = await entry('b', 60_000);
    await ageEntry(a.key, 48 * HOUR);
    await ageEntry(b.key, 48 * HOUR);
    await age([a.manifest, ...a.chunks, b.manifest, ...b.chunks], 48 * HOUR);
    // Write-behind: a's upload to a remote tier is still pending (the remote was down).
    const journal = new UploadJournal(store.root);
    const id = await journal.add('s3://team-cache/x', { kind: 'ac', namespace: 'default', key: a.key });
    const gc = await planGc(store, { olderThanMs: HOUR, graceMs: 0 });
    expect(gc.entries.map((e) => e.key)).toEqual([b.key]);
    expect(gc.pinned).toBe(1);
    expect(gc.blobs.map((x) => x.digest)).not.toContain(a.manifest);
    const evict = await planEvict(store, { toSizeBytes: 0, graceMs: 0 });
    expect(evict.entries.map((e) => e.key)).toEqual([b.key]);
    expect(evict.pinned).toBe(1);
    await executeGc(store, gc);
    const restored = join(dir, 'restored-a');
    await materializeToDirectory(store.blobs, a.manifest, restored); // everything the upload needs is still here
    // Once uploaded, it is an ordinary old entry again.
    await journal.done('s3://team-cache/x', id);
    expect((await planGc(store, { olderThanMs: HOUR, graceMs: 0 })).entries.map((e) => e.key)).toEqual([a.key]);
    // A pending root upload keeps its tree the same way.
    await journal.add('s3://team-cache/x', { kind: 'root', digest: a.manifest });
    const withRoot = await planGc(store, { olderThanMs: HOUR, graceMs: 0 });
    expect(withRoot.entries.map((e) => e.key)).toEqual([a.key]);
    expect(withRoot.blobs.map((x) => x.digest)).not.toContain(a.manifest);
  });

  it('sweeps temp files a killed writer left, older than the grace period, and spares young ones', async () => {
    const tmp = join(dir, 'store', 'v1', 'tmp');
    await mkdir(tmp, { recursive: true });
    await writeFile(join(tmp, 'pack-12345-abcdef.tmp'), Buffer.alloc(4096, 1));
    await utimes(join(tmp, 'pack-12345-abcdef.tmp'), new Date(Date.now() - 2 * HOUR), new Date(Date.now() - 2 * HOUR));
    await writeFile(join(tmp, 'nx-1.spool'), 'in progress');
    const plan = await planGc(store);
    expect(plan.tmpFiles).toEqual([{ name: 'pack-12345-abcdef.tmp', size: 4096 }]);
    const result = await executeGc(store, plan);
    expect(result.deletedTmpFiles).toBe(1);
    expect(await readdir(tmp)).toEqual(['nx-1.spool']);
  });

  it('leaves no temp files behind', async () => {
    await entry('x');
    await executeGc(store, await planGc(store, { graceMs: 0 }));
    expect(await readdir(join(dir, 'store', 'v1', 'tmp'))).toEqual([]);
  });
});
