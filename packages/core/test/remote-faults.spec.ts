// Remote faults against real processes and sockets: the S3 server killed mid-upload and restarted,
// injected 500s from the GCS fake, and a server that accepts connections and never answers.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  computeActionKey,
  decodeBlob,
  ErrorCodes,
  GcsObjectStore,
  ingestDirectory,
  LayeredStore,
  materializeToDirectory,
  openRemoteTier,
  S3ObjectStore,
  type ByteRange,
  type LayeredEvent,
  type ObjectStore,
} from '../src';
import { startFakeGcsServer } from './support/fake-gcs-server';
import { S3_CREDENTIALS, startS3Server, TEST_BUCKET } from '../../../tools/s3rver';
import { startShapingProxy } from '../../../e2e/src/shaping-proxy';
import { expectSameFlatTree } from './support/same-tree';
import { openTestStore, tempDir } from './support/tmp';

const SECRET = Buffer.alloc(32, 9);
const NS = 'default';

async function writeTree(root: string, seed: string, files: number): Promise<void> {
  await mkdir(root, { recursive: true });
  for (let i = 0; i < files; i++) {
    const parts: Buffer[] = [];
    for (let j = 0; j < 2000; j++) parts.push(createHash('sha256').update(`${seed}/${i}/${j}`).digest());
    await writeFile(join(root, `blob${i}.bin`), Buffer.concat(parts)); // 64 kB of incompressible bytes
  }
}

describe('remote faults', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
  });
  afterEach(() => remove());

  it('S3 killed mid-upload and restarted: every upload completes afterwards, nothing lost or corrupt', async () => {
    const s3 = await startS3Server();
    try {
      const objects = new S3ObjectStore({ bucket: TEST_BUCKET, prefix: 'ci', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS, maxAttempts: 1, connectTimeoutMs: 500, requestTimeoutMs: 2000 });
      // Kill the server the moment the second pack upload starts, while its body is on the wire.
      let packPuts = 0;
      let killed: Promise<void> | null = null;
      const killing: ObjectStore = {
        name: objects.name,
        get: (k: string, r?: ByteRange) => objects.get(k, r),
        put: (k: string, b: Buffer, o?: { ifAbsent?: boolean }) => {
          if (k.endsWith('.pack') && ++packPuts === 2) killed = s3.kill();
          return objects.put(k, b, o);
        },
        delete: (k: string) => objects.delete(k),
        list: (p: string) => objects.list(p),
      };
      const events: LayeredEvent[] = [];
      const local = await openTestStore({ root: join(dir, 'a'), secret: SECRET });
      const tierA = openRemoteTier({ url: 's3://cascache-test/ci', packTargetBytes: 128 * 1024 }, { objects: killing, breaker: { threshold: 1000 } });
      const a = new LayeredStore({ local, remotes: [tierA], secret: SECRET, retryBaseMs: 10, retryMaxMs: 50, warnIntervalMs: 0, onEvent: (e) => events.push(e) });
      a.start();
      const keys: Array<{ key: string; src: string }> = [];
      for (let t = 0; t < 4; t++) {
        const src = join(dir, 'src', `t${t}`);
        await writeTree(src, `tree${t}`, 6);
        const r = await ingestDirectory(local.blobs, src);
        const key = computeActionKey(['fault', String(t)]);
        await local.actionCache.put(NS, key, { manifest: r.digest, size: r.logicalBytes });
        await a.recordUpload({ kind: 'ac', namespace: NS, key });
        keys.push({ key, src });
      }
      while (!killed) await new Promise((r) => setImmediate(r));
      await killed;
      const down = await a.drain({ timeoutMs: 300 });
      expect(down.drained).toBe(false);
      expect(events.some((e) => e.type === 'warning' && e.code === ErrorCodes.UNAVAILABLE)).toBe(true);

      await s3.restart();
      const report = await a.drain({ timeoutMs: 60_000 });
      await a.close();
      expect(report.drained).toBe(true);
      expect(Object.values(report.failed)).toEqual([0]);

      // Every pack in the bucket is whole: each indexed frame decodes to its digest.
      const plain = new S3ObjectStore({ bucket: TEST_BUCKET, prefix: 'ci', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3_CREDENTIALS });
      let frames = 0;
      for await (const o of plain.list('v1/index/')) {
        const idx = JSON.parse(decodeBlob((await plain.get(o.key))!).toString()) as { pack: string; blobs: Array<[string, number, number]> };
        const pack = (await plain.get(`v1/packs/${idx.pack}.pack`))!;
        for (const [d, off, len] of idx.blobs) {
          decodeBlob(pack.subarray(off, off + len), d);
          frames++;
        }
      }
      expect(frames).toBeGreaterThan(24);

      // A second machine restores all four trees from S3 alone.
      const localB = await openTestStore({ root: join(dir, 'b'), secret: SECRET });
      const b = new LayeredStore({ local: localB, remotes: [openRemoteTier({ url: 's3://cascache-test/ci' }, { objects: plain })], secret: SECRET });
      for (const { key, src } of keys) {
        const hit = await b.lookup(NS, key);
        expect(hit).not.toBeNull();
        const out = join(dir, 'out', key.slice(0, 8));
        await materializeToDirectory(localB.blobs, hit!.manifest, out);
        await expectSameFlatTree(src, out);
      }
      await b.close();
    } finally {
      await s3.close();
    }
  });

  it('injected 500s from GCS keep the upload journaled until the server recovers', async () => {
    const gcs = await startFakeGcsServer([TEST_BUCKET]);
    try {
      const objects = new GcsObjectStore({ bucket: TEST_BUCKET, prefix: 'p', apiEndpoint: gcs.endpoint, maxAttempts: 1 });
      const local = await openTestStore({ root: join(dir, 'a'), secret: SECRET });
      const events: LayeredEvent[] = [];
      const a = new LayeredStore({ local, remotes: [openRemoteTier({ url: 'gs://cascache-test/p' }, { objects })], secret: SECRET, sync: true, retryBaseMs: 5, warnIntervalMs: 0, onEvent: (e) => events.push(e) });
      const src = join(dir, 'src');
      await writeTree(src, 'gcs', 3);
      const r = await ingestDirectory(local.blobs, src);
      const key = computeActionKey(['gcs']);
      await local.actionCache.put(NS, key, { manifest: r.digest, size: r.logicalBytes });
      gcs.failNext(1000, 500);
      await a.recordUpload({ kind: 'ac', namespace: NS, key });
      expect(events.find((e) => e.type === 'warning')).toMatchObject({ code: ErrorCodes.UNAVAILABLE });
      expect((await a.drain({ timeoutMs: 50 })).drained).toBe(false);
      gcs.failNext(0, 500);
      expect((await a.drain({ timeoutMs: 10_000 })).drained).toBe(true);
      const localB = await openTestStore({ root: join(dir, 'b'), secret: SECRET });
      const b = new LayeredStore({ local: localB, remotes: [openRemoteTier({ url: 'gs://cascache-test/p' }, { objects })], secret: SECRET });
      const hit = await b.lookup(NS, key);
      await materializeToDirectory(localB.blobs, hit!.manifest, join(dir, 'out'));
      await expectSameFlatTree(src, join(dir, 'out'));
      await Promise.all([a.close(), b.close()]);
    } finally {
      await gcs.close();
    }
  });

  it('a server that accepts and never answers times out as E_UNAVAILABLE, and the lookup is a miss', async () => {
    const sockets: Socket[] = [];
    const server: Server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const objects = new S3ObjectStore({ bucket: TEST_BUCKET, endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, credentials: S3_CREDENTIALS, maxAttempts: 1, requestTimeoutMs: 300 });
      await expect(objects.get('v1/anything')).rejects.toMatchObject({ code: ErrorCodes.UNAVAILABLE, retryable: true });
      const local = await openTestStore({ root: join(dir, 'c'), secret: SECRET });
      const events: LayeredEvent[] = [];
      const c = new LayeredStore({ local, remotes: [openRemoteTier({ url: 's3://cascache-test' }, { objects })], secret: SECRET, onEvent: (e) => events.push(e) });
      expect(await c.lookup(NS, computeActionKey(['nothing']))).toBeNull();
      expect(events.some((e) => e.type === 'warning' && e.code === ErrorCodes.UNAVAILABLE)).toBe(true);
      await c.close();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('S3 behind a link that cuts a download mid-body: the read is asked again and returns the whole object', async () => {
    const s3 = await startS3Server();
    // Downloads of 100 KiB: the second crosses 150 KiB served and is cut there, ~50 KiB into its body;
    // its second ask ends at ~250 KiB; a third download crosses 300 KiB.
    const link = await startShapingProxy(Number(new URL(s3.endpoint).port), { cutEveryBytes: 150 * 1024 });
    try {
      const options = { bucket: TEST_BUCKET, prefix: 'cut', forcePathStyle: true, credentials: S3_CREDENTIALS, connectTimeoutMs: 500, requestTimeoutMs: 2000 };
      const direct = new S3ObjectStore({ ...options, endpoint: s3.endpoint });
      const body = Buffer.alloc(100 * 1024);
      for (let i = 0; i < body.length; i += 32) createHash('sha256').update(`cut ${i}`).digest().copy(body, i);
      await direct.put('v1/packs/p.pack', body);
      const flaky = new S3ObjectStore({ ...options, endpoint: link.endpoint });
      expect((await flaky.get('v1/packs/p.pack'))!.equals(body)).toBe(true);
      expect((await flaky.get('v1/packs/p.pack'))!.equals(body)).toBe(true);
      expect(link.stats().cut).toBe(1);
      // With one attempt there is no second ask: the cut read is E_UNAVAILABLE (a miss for the caller).
      const once = new S3ObjectStore({ ...options, endpoint: link.endpoint, maxAttempts: 1 });
      await expect(once.get('v1/packs/p.pack')).rejects.toMatchObject({ code: ErrorCodes.UNAVAILABLE }); // ~250 KiB served: crosses 300 KiB
      expect(link.stats().cut).toBe(2);
    } finally {
      await link.close();
      await s3.close();
    }
  });
});
