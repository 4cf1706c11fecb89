import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'libsql';
import fc from 'fast-check';
import {
  computeActionKey,
  executeGc,
  ingestDirectory,
  openLocalStore,
  planGc,
  recordRun,
  storeStats,
  StoreIndex,
  type BlobInfo,
  type LocalStore,
} from '../src';
import { markIndexStale, staleMarkerPath } from '../src/store-index';
import { tempDir } from './support/tmp';

/** The index's rows, without the columns that legitimately differ between an update and a rebuild (times). */
function rows(path: string): { blobs: unknown[]; entries: unknown[]; roots: unknown[] } {
  const db = new Database(path, { readonly: true });
  try {
    return {
      blobs: db.prepare('SELECT digest, stored_size, raw_size, codec FROM blobs ORDER BY digest').all(),
      entries: db.prepare('SELECT namespace, key, manifest, size, created FROM entries ORDER BY namespace, key').all(),
      roots: db.prepare('SELECT digest, name, size, files, created FROM roots ORDER BY digest').all(),
    };
  } finally {
    db.close();
  }
}

async function addOutput(store: LocalStore, dir: string, name: string, text: string): Promise<{ key: string; manifest: string; size: number; files: number }> {
  const src = join(dir, 'src', name);
  await rm(src, { recursive: true, force: true });
  await mkdir(src, { recursive: true });
  await writeFile(join(src, 'x.js'), text);
  await writeFile(join(src, 'shared.js'), 'shared '.repeat(20_000));
  const r = await ingestDirectory(store.blobs, src);
  const key = computeActionKey([name, text.slice(0, 32)]);
  await store.actionCache.put('default', key, { manifest: r.digest, size: r.logicalBytes });
  return { key, manifest: r.digest, size: r.logicalBytes, files: r.files };
}

describe('the SQLite store index', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let store: LocalStore;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
    store = await openLocalStore({ root: join(dir, 'store'), secret: null });
  });
  afterEach(async () => {
    store.close();
    await remove();
  });

  it('follows every write, hit and delete so that a rebuild from the files changes nothing', async () => {
    // Operations on a store, in any order; after each sequence the incrementally kept rows must equal
    // what a rebuild from the files produces.
    const op = fc.oneof(
      fc.record({ kind: fc.constant('put' as const), name: fc.constantFrom('a', 'b', 'c'), body: fc.string({ minLength: 1, maxLength: 40 }) }),
      fc.record({ kind: fc.constantFrom('hit' as const, 'invalidate' as const, 'root' as const, 'unroot' as const), i: fc.nat(5) }),
      fc.constant({ kind: 'gc' as const }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 8 }), async (ops) => {
        const outputs: Array<Awaited<ReturnType<typeof addOutput>>> = [];
        for (const o of ops) {
          if (o.kind === 'put') outputs.push(await addOutput(store, dir, o.name, `${o.body} `.repeat(3000)));
          else if (o.kind === 'gc') await executeGc(store, await planGc(store, { graceMs: 0 }));
          else {
            const out = outputs[o.i % Math.max(1, outputs.length)];
            if (!out) continue;
            if (o.kind === 'hit') await store.actionCache.get('default', out.key as never);
            else if (o.kind === 'invalidate') await store.actionCache.delete('default', out.key as never);
            else if (o.kind === 'root') await store.roots.add({ digest: out.manifest, name: `root-${o.i}`, size: out.size, files: out.files });
            else await store.roots.remove(out.manifest);
          }
        }
        store.index!.flush();
        const kept = rows(store.index!.path);
        expect(store.index!.staleReason()).toBeNull();
        await store.index!.rebuild(store);
        expect(rows(store.index!.path)).toEqual(kept);
        // Next sequence starts from an empty store.
        await rm(store.root, { recursive: true, force: true });
        store.close();
        store = await openLocalStore({ root: join(dir, 'store'), secret: null });
      }),
      { numRuns: 12 },
    );
  });

  it('gives the same totals as counting the files', async () => {
    const a = await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    await addOutput(store, dir, 'b', 'b '.repeat(30_000));
    await store.roots.add({ digest: a.manifest, name: 'root-a', size: a.size, files: a.files });
    const fromIndex = await storeStats(store);
    const counter = await openLocalStore({ root: store.root, secret: null, index: false });
    const fromFiles = await storeStats(counter);
    expect(fromIndex).toEqual(fromFiles);
    expect(fromIndex).toMatchObject({ acEntries: 2, roots: 1 });
  });

  it('a store changed by a process without the index marks it stale, and the next reader rebuilds it', async () => {
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    const before = await storeStats(store);
    const other = await openLocalStore({ root: store.root, secret: null, index: false });
    await addOutput(other, dir, 'b', 'b '.repeat(30_000));
    expect(existsSync(staleMarkerPath(store.root))).toBe(true);
    expect(store.index!.staleReason()).toMatch(/without the index/);
    const after = await storeStats(store);
    expect(after.acEntries).toBe(before.acEntries + 1);
    expect(after).toEqual(await storeStats(other));
    expect(existsSync(staleMarkerPath(store.root))).toBe(false);
  });

  it('an update that cannot get the write lock marks the index stale instead of failing the write', async () => {
    store.close();
    store = await openLocalStore({ root: store.root, secret: null, index: false });
    const { index } = StoreIndex.open(store.root, { busyTimeoutMs: 20 });
    await index.rebuild(store);
    const locker = new Database(index.path);
    locker.prepare('BEGIN IMMEDIATE').run(); // another process holding the write lock
    index.blobWritten({ digest: 'ab'.repeat(32), storedSize: 10, rawSize: 10, codec: 0, mtimeMs: Date.now() });
    index.flush(); // gives up after the busy timeout; never throws
    locker.prepare('ROLLBACK').run();
    locker.close();
    expect(index.staleReason()).toMatch(/an update failed/);
    // The failed statement must not block later commits on the index's connection (libsql leaves it in progress).
    index.blobWritten({ digest: 'cd'.repeat(32), storedSize: 11, rawSize: 11, codec: 0, mtimeMs: Date.now() });
    rmSync(staleMarkerPath(store.root));
    index.flush();
    expect(existsSync(staleMarkerPath(store.root))).toBe(false);
    const reader = new Database(index.path);
    expect(reader.prepare('SELECT stored_size FROM blobs WHERE digest = ?').all('cd'.repeat(32))).toEqual([{ stored_size: 11 }]);
    reader.close();
    markIndexStale(store.root, 'an update failed (restored for the rest of this test)');
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    expect(await index.refresh(store)).toMatch(/fell behind/);
    expect(index.counts()).toMatchObject({ entries: 1 });
    expect(index.staleReason()).toBeNull();
    index.close();
  });

  it('a writer that dies with updates still queued is found by its pid, and the next reader rebuilds', async () => {
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    const before = await storeStats(store);
    await mkdir(join(dir, 'src', 'child'), { recursive: true });
    await writeFile(join(dir, 'src', 'child', 'x.js'), 'child '.repeat(30_000));
    // A real process (the built package) that writes an output and exits before its index flush.
    const script = `
      const core = require(${JSON.stringify(require.resolve('@cascache/core'))});
      (async () => {
        const s = await core.openLocalStore({ root: ${JSON.stringify(store.root)}, secret: null });
        const r = await core.ingestDirectory(s.blobs, ${JSON.stringify(join(dir, 'src', 'child'))});
        await s.actionCache.put('default', core.computeActionKey(['child']), { manifest: r.digest, size: r.logicalBytes });
        process.exit(0);
      })();`;
    execFileSync(process.execPath, ['-e', script]);
    expect(store.index!.staleReason()).toMatch(/ended without closing it/);
    const after = await storeStats(store);
    expect(after.acEntries).toBe(before.acEntries + 1);
    expect(store.index!.staleReason()).toBeNull();
  });

  it('a writer whose index file another process moved aside follows it to the new file and marks it stale', async () => {
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    const path = store.index!.path;
    renameSync(path, `${path}.corrupt-test`); // what another process does with a corrupt index
    const other = StoreIndex.open(store.root).index;
    expect(other.replaced).toBe('missing');
    await addOutput(store, dir, 'b', 'b '.repeat(30_000));
    store.index!.flush();
    expect(other.staleReason()).toMatch(/never built|replaced while this process was writing/);
    const c = await other.rebuild(store);
    expect(c.entries).toBe(2);
    await addOutput(store, dir, 'c', 'c '.repeat(30_000));
    store.index!.flush();
    expect(other.counts().entries).toBe(3); // the writer's later updates land in the file readers read
    other.close();
  });

  it('keeps a row written while a rebuild is scanning', async () => {
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    // A view of the store as the rebuild's scan saw it when it began, paused after the first blob.
    const blobsAtStart: BlobInfo[] = [];
    for await (const b of store.blobs.list()) blobsAtStart.push(b);
    const entriesAtStart: Array<{ namespace: string; key: string; lastUsedMs?: number }> = [];
    for await (const e of store.entries.list()) entriesAtStart.push(e);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let paused!: () => void;
    const atPause = new Promise<void>((r) => (paused = r));
    const slow: LocalStore = {
      ...store,
      blobs: Object.assign(Object.create(store.blobs) as LocalStore['blobs'], {
        async *list(): AsyncIterable<BlobInfo> {
          for (const [i, b] of blobsAtStart.entries()) {
            yield b;
            if (i === 0) {
              paused();
              await gate;
            }
          }
        },
      }),
      entries: Object.assign(Object.create(store.entries) as LocalStore['entries'], {
        async *list() {
          yield* entriesAtStart as never[];
        },
      }),
    };
    const rebuilt = store.index!.rebuild(slow);
    await atPause;
    const b = await addOutput(store, dir, 'b', 'b '.repeat(30_000)); // written after the scan began: it cannot see it
    store.index!.flush();
    release();
    await rebuilt;
    const db = new Database(store.index!.path, { readonly: true });
    const row = db.prepare('SELECT manifest FROM entries WHERE key = ?').get(b.key) as { manifest: string } | undefined;
    const blob = db.prepare('SELECT digest FROM blobs WHERE digest = ?').get(b.manifest);
    db.close();
    expect(row?.manifest).toBe(b.manifest);
    expect(blob).toBeDefined();
  });

  it('moves a corrupt index aside when the store opens, and the first reader rebuilds it', async () => {
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    const good = await storeStats(store);
    const path = store.index!.path;
    store.close();
    for (const suffix of ['-wal', '-shm']) await rm(`${path}${suffix}`, { force: true });
    writeFileSync(path, Buffer.from('this is not a database, just garbage bytes'.repeat(200)));
    store = await openLocalStore({ root: store.root, secret: null });
    expect(store.index!.replaced).toBe('unreadable');
    expect(readdirSync(join(store.root, 'v1')).some((f) => f.startsWith('index.sqlite.corrupt-'))).toBe(true);
    expect(store.index!.staleReason()).toMatch(/unreadable/);
    expect(await storeStats(store)).toEqual(good);
  });

  it('does not take a locked index for a corrupt one: opening fails and the store works without it', async () => {
    await addOutput(store, dir, 'a', 'a '.repeat(30_000));
    const path = store.index!.path;
    store.close();
    const locker = new Database(path);
    locker.exec('BEGIN IMMEDIATE'); // another process holding the write lock past the busy timeout
    try {
      expect(() => StoreIndex.open(store.root, { busyTimeoutMs: 20 })).toThrow(/locked/);
      expect(readdirSync(join(store.root, 'v1')).filter((f) => f.includes('corrupt'))).toEqual([]);
      store = await openLocalStore({ root: store.root, secret: null });
      expect(store.index).toBeNull();
      await addOutput(store, dir, 'b', 'b '.repeat(30_000)); // writes go on, and mark the index stale
      expect(existsSync(staleMarkerPath(store.root))).toBe(true);
    } finally {
      locker.exec('ROLLBACK');
      locker.close();
    }
  });

  it('replaces an index of another schema version', async () => {
    const path = store.index!.path;
    store.close();
    const db = new Database(path);
    db.prepare("UPDATE meta SET value = '999' WHERE key = 'schema'").run();
    db.close();
    const reopened = StoreIndex.open(store.root);
    expect(reopened.replaced).toBe('schema');
    expect(reopened.index.staleReason()).toMatch(/never built/);
    reopened.index.close();
  });

  it('reads run records once each and credits a hit with the duration of the build it replaced', async () => {
    const t = 1_700_000_000_000;
    await recordRun(store.root, { tool: 'nx', startTime: t, tasks: [{ hash: 'h1', status: 'success', ms: 4000 }, { hash: 'h2', status: 'success', ms: 1000 }, { hash: 'h3', status: 'local-cache' }] });
    await recordRun(store.root, { tool: 'nx', startTime: t + 1, tasks: [{ hash: 'h1', status: 'success', ms: 3000 }] });
    await recordRun(store.root, {
      tool: 'nx',
      startTime: t + 2,
      tasks: [{ hash: 'h1', status: 'remote-cache' }, { hash: 'h2', status: 'remote-cache' }, { hash: 'h4', status: 'failure', ms: 5 }, { hash: 'h5', status: 'success', ms: 9, cache: false }],
    });
    await recordRun(store.root, { tool: 'cascache cache', startTime: t + 3, tasks: [{ id: 'app', hash: 'k1', status: 'hit' }] });
    await recordRun(store.root, { tool: 'cascache cache', startTime: t + 4, tasks: [{ id: 'app', hash: 'k2', status: 'miss' }] });
    writeFileSync(join(store.root, 'v1', 'runs', `${t + 5}-torn.json`), '{"tool":"nx","tas');
    const other = StoreIndex.open(store.root).index; // a second process reading the same files
    expect(await other.syncRuns()).toBe(6);
    other.close();
    await store.index!.refresh(store);
    expect(await store.index!.syncRuns()).toBe(0);
    expect(store.index!.toolStats()).toEqual([
      { tool: 'cascache cache', runs: 2, hits: 1, localHits: 0, misses: 1, hitRate: 0.5, savedMs: null },
      // h1's last real build took 3000 ms, h2's 1000 ms. local-cache is Nx's own cache: a hit, not
      // cascache's (no time credited). h5 is not cacheable: neither hit nor miss.
      { tool: 'nx', runs: 3, hits: 2, localHits: 1, misses: 4, hitRate: 0.429, savedMs: 4000 },
    ]);
    expect(store.index!.lastHits('cascache cache')).toEqual(new Map([['k1', t + 3]]));
    expect(store.index!.recentRuns(3)).toEqual([
      { tool: 'cascache cache', startTime: t + 4, durationMs: null, tasks: 1, hits: 0, localHits: 0, misses: 1, savedMs: null },
      { tool: 'cascache cache', startTime: t + 3, durationMs: null, tasks: 1, hits: 1, localHits: 0, misses: 0, savedMs: null },
      { tool: 'nx', startTime: t + 2, durationMs: null, tasks: 4, hits: 2, localHits: 0, misses: 1, savedMs: 4000 },
    ]);
  });
  it('names the tasks that miss most, with how often they were looked up and when they last missed', async () => {
    const t = 1_700_000_000_000;
    const run = (i: number, tasks: Array<[string, string]>) => recordRun(store.root, { tool: 'nx', startTime: t + i, tasks: tasks.map(([id, status]) => ({ id, hash: `${id}-${i}`, status })) });
    await run(0, [['app:build', 'success'], ['lib:build', 'success'], ['docs:build', 'success']]);
    await run(1, [['app:build', 'success'], ['lib:build', 'remote-cache'], ['docs:build', 'local-cache']]);
    await run(2, [['app:build', 'failure'], ['lib:build', 'success'], ['docs:build', 'remote-cache']]);
    await recordRun(store.root, { tool: 'cascache cache', startTime: t + 3, tasks: [{ id: 'app', hash: 'k', status: 'miss' }] });
    await store.index!.refresh(store);
    expect(store.index!.topMisses(3)).toEqual([
      { tool: 'nx', task: 'app:build', misses: 3, lookups: 3, lastMiss: t + 2 },
      { tool: 'nx', task: 'lib:build', misses: 2, lookups: 3, lastMiss: t + 2 },
      { tool: 'cascache cache', task: 'app', misses: 1, lookups: 1, lastMiss: t + 3 },
    ]);
  });
});
