// GC of a remote tier: condemn, then delete a grace period later; repack mostly dead packs; never
// break a live tree, and never lose a chunk a slow writer named meanwhile.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  computeActionKey,
  executeRemoteGc,
  ingestDirectory,
  LayeredStore,
  materializeToDirectory,
  MemoryObjectStore,
  openRemoteTier,
  PackStore,
  planRemoteGc,
  type RemoteTier,
} from '../src';
import { expectSameFlatTree } from './support/same-tree';
import { closeBeforeRemoval, openTestStore, tempDir } from './support/tmp';

const SECRET = Buffer.alloc(32, 8);
const HOUR = 3_600_000;

describe('remote GC', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
  });
  afterEach(() => remove());

  const tier = (objects: MemoryObjectStore): RemoteTier => openRemoteTier({ url: 's3://gc-bucket/x' }, { objects });

  async function machine(name: string, objects: MemoryObjectStore, sync = true) {
    const local = await openTestStore({ root: join(dir, name), secret: SECRET });
    const store = new LayeredStore({ local, remotes: [tier(objects)], secret: SECRET, sync });
    closeBeforeRemoval(store);
    return { local, store };
  }

  /** A tree of incompressible files (so sizes are predictable), stored under an action key. */
  async function output(m: Awaited<ReturnType<typeof machine>>, name: string, files: number) {
    const src = join(dir, 'src', name);
    await mkdir(src, { recursive: true });
    for (let i = 0; i < files; i++) {
      const parts: Buffer[] = [];
      for (let j = 0; j < 600; j++) parts.push(createHash('sha256').update(`${name}/${i}/${j}`).digest());
      await writeFile(join(src, `f${i}.bin`), Buffer.concat(parts));
    }
    const r = await ingestDirectory(m.local.blobs, src);
    const key = computeActionKey(['gc', name]);
    await m.local.actionCache.put('default', key, { manifest: r.digest, size: r.logicalBytes });
    await m.store.recordUpload({ kind: 'ac', namespace: 'default', key });
    return { key, src };
  }

  async function restores(objects: MemoryObjectStore, name: string, out: { key: string; src: string }) {
    const m = await machine(name, objects);
    const hit = await m.store.lookup('default', out.key);
    if (!hit) return false;
    await materializeToDirectory(m.local.blobs, hit.manifest, join(dir, 'out', name));
    await expectSameFlatTree(out.src, join(dir, 'out', name));
    return true;
  }

  it('condemns a dead pack, deletes it one grace period later, and keeps every live tree whole', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', objects);
    const keep = await output(a, 'keep', 2);
    const drop = await output(a, 'drop', 2);
    await objects.delete(`v1/ac/default/${drop.key}`); // e.g. invalidated
    const packsBefore = [...objects.objects.keys()].filter((k) => k.endsWith('.pack')).length;
    expect(packsBefore).toBe(2);

    const t1 = Date.now() + 2 * HOUR;
    const plan = await planRemoteGc(tier(objects), { now: t1 });
    expect(plan.condemn).toHaveLength(1);
    expect(plan.deletePacks).toEqual([]);
    expect(plan.trees).toHaveLength(1);
    const r1 = await executeRemoteGc(tier(objects), plan);
    expect(r1).toMatchObject({ condemnedPacks: 1, deletedPacks: 0, deletedTrees: 1 });
    expect([...objects.objects.keys()].filter((k) => k.startsWith('v1/condemned/'))).toHaveLength(1);

    // Too early for the second phase: nothing is deleted.
    expect((await planRemoteGc(tier(objects), { now: t1 + HOUR / 2 })).deletePacks).toEqual([]);
    const plan2 = await planRemoteGc(tier(objects), { now: t1 + 2 * HOUR });
    expect(plan2.deletePacks).toHaveLength(1);
    const r2 = await executeRemoteGc(tier(objects), plan2);
    expect(r2.deletedPacks).toBe(1);
    expect(r2.freedBytes).toBeGreaterThan(30_000);
    expect([...objects.objects.keys()].filter((k) => k.endsWith('.pack'))).toHaveLength(1);
    expect(await restores(objects, 'reader', keep)).toBe(true);
  });

  it("a writer re-uploads chunks of a condemned pack, and a stale writer's new tree revives it", async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', objects);
    const drop = await output(a, 'again', 2);
    const stale = new PackStore({ objects }); // a writer that read the indexes before GC ran
    await stale.refresh(true);
    await objects.delete(`v1/ac/default/${drop.key}`);
    await executeRemoteGc(tier(objects), await planRemoteGc(tier(objects), { now: Date.now() + 2 * HOUR }));

    // A fresh writer does not trust the condemned pack: the same content goes out again.
    const fresh = new PackStore({ objects });
    const chunk = [...(await fresh.packs()).values()][0]!.blobs[0]!.digest;
    expect((await fresh.has([chunk])).size).toBe(0);

    // The stale writer names the condemned chunks in a new tree: the next pass revives the pack.
    const local = await openTestStore({ root: join(dir, 'a'), secret: SECRET });
    const entry = (await local.actionCache.peek('default', drop.key))!;
    const manifestBytes = (await local.blobs.getBuffer(entry.manifest))!;
    await stale.writeTree(entry.manifest, manifestBytes);
    await objects.put(`v1/ac/default/${drop.key}`, (await local.entries.get('default', drop.key))!);
    const plan = await planRemoteGc(tier(objects), { now: Date.now() + 4 * HOUR });
    expect(plan.revive).toHaveLength(1);
    expect(plan.deletePacks).toEqual([]);
    await executeRemoteGc(tier(objects), plan);
    expect(await restores(objects, 'reader', drop)).toBe(true);
  });

  it('repacks a mostly dead pack: live chunks move, their tree is rewritten, the old pack goes later', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', objects, false);
    const small = await output(a, 'small', 1);
    const big = await output(a, 'big', 4);
    await a.store.drain(); // one batch: both trees' chunks share one pack
    expect([...objects.objects.keys()].filter((k) => k.endsWith('.pack'))).toHaveLength(1);
    await objects.delete(`v1/ac/default/${big.key}`);

    const t1 = Date.now() + 2 * HOUR;
    const plan = await planRemoteGc(tier(objects), { now: t1 });
    expect(plan.repack).toHaveLength(1);
    const r = await executeRemoteGc(tier(objects), plan);
    expect(r).toMatchObject({ repackedPacks: 1, rewrittenTrees: 1 });
    expect(await restores(objects, 'mid', small)).toBe(true);

    const r2 = await executeRemoteGc(tier(objects), await planRemoteGc(tier(objects), { now: t1 + 2 * HOUR }));
    expect(r2.deletedPacks).toBe(1);
    const packs = [...objects.objects.entries()].filter(([k]) => k.endsWith('.pack'));
    expect(packs).toHaveLength(1);
    expect(packs[0]![1].body.length).toBeLessThan(25_000); // only the small output's chunks remain
    expect(await restores(objects, 'after', small)).toBe(true);
  });

  it('expires shared run records older than 30 days, but the newest 5 of each branch', async () => {
    const objects = new MemoryObjectStore();
    const m = await machine('a', objects);
    const day = 86_400_000;
    const now = 100 * day;
    for (const [branch, count] of [['main', 8], ['old-feature', 2]] as const) {
      for (let i = 0; i < count; i++) await m.store.recordRun({ tool: 'nx', namespace: 'default', branch, commit: null, targets: ['build'], startTime: now - i * 10 * day, keys: [] });
    }
    // Object stores date objects by when they were written: backdate them as the runs' start times.
    for (const [key, o] of objects.objects) if (key.startsWith('v1/runs/')) o.mtimeMs = 9_999_999_999_999 - Number(key.split('/').pop()!.slice(0, 13));
    const plan = await planRemoteGc(tier(objects), { now });
    // main: 8 runs 0..70 days old; the newest 5 stay, of the other 3 (50, 60, 70 days) all are past 30 days.
    expect(plan.runs).toHaveLength(3);
    const result = await executeRemoteGc(tier(objects), plan);
    expect(result.deletedRuns).toBe(3);
    const left = [...objects.objects.keys()].filter((k) => k.startsWith('v1/runs/'));
    expect(left).toHaveLength(7);
  });

  it('leaves packs younger than the grace period alone', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', objects);
    const drop = await output(a, 'young', 1);
    await objects.delete(`v1/ac/default/${drop.key}`);
    const plan = await planRemoteGc(tier(objects));
    expect(plan).toMatchObject({ condemn: [], repack: [], deletePacks: [], trees: [] });
  });
});
