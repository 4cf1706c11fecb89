// Two writers of one action key on a shared tier (issue 12: two `cascache serve` replicas, or two CI
// machines, building the same task at once with outputs that differ): write-once must leave exactly
// one entry everywhere, the tier's, and the writer that lost serves the winner too. Real servers: s3rver
// (with S3's conditional PUT, and without it as some S3-protocol servers behave) and the GCS fake.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  computeActionKey,
  GcsObjectStore,
  ingestDirectory,
  LayeredStore,
  materializeToDirectory,
  ObjectAcStore,
  openRemoteTier,
  S3ObjectStore,
  type Digest,
  type LayeredEvent,
  type LocalStore,
  type ObjectStore,
} from '../src';
import { startFakeGcsServer } from './support/fake-gcs-server';
import { S3_CREDENTIALS, startS3Server, TEST_BUCKET } from '../../../tools/s3rver';
import { expectSameFlatTree } from './support/same-tree';
import { closeBeforeRemoval, openTestStore, tempDir } from './support/tmp';

const SECRET = Buffer.alloc(32, 5);
const NS = 'default';

async function writeTree(root: string, seed: string): Promise<void> {
  await mkdir(root, { recursive: true });
  for (let i = 0; i < 3; i++) {
    const parts: Buffer[] = [];
    for (let j = 0; j < 1000; j++) parts.push(createHash('sha256').update(`${seed}/${i}/${j}`).digest());
    await writeFile(join(root, `out${i}.bin`), Buffer.concat(parts));
  }
}

interface Writer {
  name: string;
  local: LocalStore;
  layered: LayeredStore;
  events: LayeredEvent[];
  src: (key: Digest) => string;
}

describe('two writers of one action key on a shared tier', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
  });
  afterEach(() => remove());

  async function writer(name: string, objects: ObjectStore, url: string): Promise<Writer> {
    const local = await openTestStore({ root: join(dir, name), secret: SECRET });
    const events: LayeredEvent[] = [];
    const layered = closeBeforeRemoval(new LayeredStore({ local, remotes: [openRemoteTier({ url }, { objects })], secret: SECRET, warnIntervalMs: 0, onEvent: (e) => events.push(e) }));
    return { name, local, layered, events, src: (key) => join(dir, 'src', name, key.slice(0, 12)) };
  }

  /** Each writer stores its own output under `key` and journals it; nothing is uploaded yet. */
  async function build(w: Writer, key: Digest): Promise<void> {
    await writeTree(w.src(key), `${w.name}/${key}`);
    const r = await ingestDirectory(w.local.blobs, w.src(key));
    await w.local.actionCache.put(NS, key, { manifest: r.digest, size: r.logicalBytes });
    await w.layered.recordUpload({ kind: 'ac', namespace: NS, key });
  }

  /**
   * Exactly one output everywhere: the tier's entry, byte for byte in every local store; every
   * writer but one yielded, and every store restores the tree of the one that did not.
   */
  async function expectOneWinner(writers: Writer[], objects: ObjectStore, key: Digest): Promise<Writer> {
    const onTier = await new ObjectAcStore({ objects }).get(NS, key);
    expect(onTier).not.toBeNull();
    for (const w of writers) expect((await w.local.entries.get(NS, key))?.equals(onTier!)).toBe(true);
    const yielded = writers.filter((w) => w.events.some((e) => e.type === 'yielded' && e.key === key));
    expect(yielded).toHaveLength(writers.length - 1);
    const won = writers.find((w) => !yielded.includes(w))!;
    for (const w of writers) {
      const hit = await w.layered.lookup(NS, key);
      expect(hit?.bytes.equals(onTier!)).toBe(true);
      const out = join(dir, 'out', w.name, key.slice(0, 12));
      await materializeToDirectory(w.local.blobs, hit!.manifest, out);
      await expectSameFlatTree(won.src(key), out);
    }
    return won;
  }

  it('S3 with conditional writes: concurrent uploads of one key leave one winner in the bucket and in both stores', async () => {
    const s3 = await startS3Server([TEST_BUCKET], { conditionalWrites: true });
    try {
      const objects = new S3ObjectStore({ bucket: TEST_BUCKET, prefix: 'race', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS });
      const a = await writer('a', objects, 's3://cascache-test/race');
      const b = await writer('b', objects, 's3://cascache-test/race');
      const winners = new Set<string>();
      for (let round = 0; round < 4; round++) {
        const key = computeActionKey(['race', String(round)]);
        await Promise.all([build(a, key), build(b, key)]);
        const [ra, rb] = await Promise.all([a.layered.drain({ timeoutMs: 30_000 }), b.layered.drain({ timeoutMs: 30_000 })]);
        expect([ra.drained, rb.drained]).toEqual([true, true]);
        winners.add((await expectOneWinner([a, b], objects, key)).name);
      }
      expect(winners.size).toBeGreaterThan(0);
      // The backend was found to honour the condition: no warning about it.
      expect([...a.events, ...b.events].filter((e) => e.type === 'warning')).toEqual([]);
    } finally {
      await s3.close();
    }
  });

  it('S3: the conditional PUT itself is refused with 412 for a key that exists, and putIfAbsent then reports the stored entry', async () => {
    const s3 = await startS3Server([TEST_BUCKET], { conditionalWrites: true });
    try {
      const objects = new S3ObjectStore({ bucket: TEST_BUCKET, prefix: 'cond', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS });
      expect(await objects.put('k', Buffer.from('first'), { ifAbsent: true })).toEqual({ created: true });
      expect(await objects.put('k', Buffer.from('second'), { ifAbsent: true })).toEqual({ created: false });
      expect((await objects.get('k'))?.toString()).toBe('first');
      // A writer whose read came before the other's write (the race's window): its conditional put
      // is what refuses it, and it is told what won.
      const key = computeActionKey(['cond']);
      await new ObjectAcStore({ objects }).putIfAbsent(NS, key, Buffer.from('{"winner":1}'));
      let reads = 0;
      const late: ObjectStore = { name: objects.name, get: (k, r) => (reads++ === 0 ? Promise.resolve(null) : objects.get(k, r)), put: (k, b, o) => objects.put(k, b, o), delete: (k) => objects.delete(k), list: (p) => objects.list(p) };
      const r = await new ObjectAcStore({ objects: late }).putIfAbsent(NS, key, Buffer.from('{"loser":1}'));
      expect(r.created).toBe(false);
      expect(!r.created && r.existing.toString()).toBe('{"winner":1}');
    } finally {
      await s3.close();
    }
  });

  it("the first writer's entry names a tree the tier holds damaged: the second writer's entry replaces it, and both tiers' readers get the second", async () => {
    const s3 = await startS3Server([TEST_BUCKET], { conditionalWrites: true });
    try {
      const objects = new S3ObjectStore({ bucket: TEST_BUCKET, prefix: 'damaged', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS });
      const a = await writer('a', objects, 's3://cascache-test/damaged');
      const b = await writer('b', objects, 's3://cascache-test/damaged');
      const key = computeActionKey(['damaged']);
      await build(a, key);
      expect((await a.layered.drain({ timeoutMs: 30_000 })).drained).toBe(true);
      for await (const o of objects.list('v1/packs/')) {
        const bytes = (await objects.get(o.key))!;
        for (let i = 64; i < bytes.length; i += 4096) bytes[i]! ^= 0xff;
        await objects.put(o.key, bytes);
      }
      await build(b, key);
      expect((await b.layered.drain({ timeoutMs: 30_000 })).drained).toBe(true);
      const onTier = await new ObjectAcStore({ objects }).get(NS, key);
      expect(onTier?.equals((await b.local.entries.get(NS, key))!)).toBe(true);
      expect(b.events.filter((e) => e.type === 'yielded')).toEqual([]);
      const c = await writer('c', objects, 's3://cascache-test/damaged');
      const hit = await c.layered.lookup(NS, key);
      await materializeToDirectory(c.local.blobs, hit!.manifest, join(dir, 'out-c'));
      await expectSameFlatTree(b.src(key), join(dir, 'out-c'));
    } finally {
      await s3.close();
    }
  });

  it('GCS (ifGenerationMatch=0): concurrent uploads of one key leave one winner everywhere', async () => {
    const gcs = await startFakeGcsServer([TEST_BUCKET]);
    try {
      const objects = new GcsObjectStore({ bucket: TEST_BUCKET, prefix: 'race', apiEndpoint: gcs.endpoint });
      const a = await writer('a', objects, 'gs://cascache-test/race');
      const b = await writer('b', objects, 'gs://cascache-test/race');
      for (let round = 0; round < 3; round++) {
        const key = computeActionKey(['gcs-race', String(round)]);
        await Promise.all([build(a, key), build(b, key)]);
        await Promise.all([a.layered.drain({ timeoutMs: 30_000 }), b.layered.drain({ timeoutMs: 30_000 })]);
        await expectOneWinner([a, b], objects, key);
      }
    } finally {
      await gcs.close();
    }
  });

  it('an S3-protocol server that ignores the condition: found out and said once, and the writer that comes second still yields', async () => {
    const s3 = await startS3Server([TEST_BUCKET]);
    try {
      const objects = new S3ObjectStore({ bucket: TEST_BUCKET, prefix: 'plain', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS });
      const a = await writer('a', objects, 's3://cascache-test/plain');
      const b = await writer('b', objects, 's3://cascache-test/plain');
      for (let round = 0; round < 2; round++) {
        const key = computeActionKey(['plain', String(round)]);
        await Promise.all([build(a, key), build(b, key)]);
        expect((await a.layered.drain({ timeoutMs: 30_000 })).drained).toBe(true);
        expect((await b.layered.drain({ timeoutMs: 30_000 })).drained).toBe(true);
        expect((await expectOneWinner([a, b], objects, key)).name).toBe('a');
      }
      const told = a.events.filter((e) => e.type === 'warning' && /ignores conditional writes/.test(e.message));
      expect(told).toHaveLength(1);
      expect(told[0]).toMatchObject({ code: 'E_CONFIG' });
      expect(a.layered.remotes[0]!.entries.conditionalWrites).toBe(false);
    } finally {
      await s3.close();
    }
  });
});
