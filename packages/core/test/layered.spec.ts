// The layered store: two "machines" (separate local stores) sharing remote tiers. Remote faults are
// injected into a memory object store here; the S3 process is killed mid-upload in remote-faults.spec.ts.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import {
  CascacheError,
  computeActionKey,
  decodeBlob,
  encodeBlob,
  ErrorCodes,
  ingestDirectory,
  findRun,
  LayeredStore,
  materializeToDirectory,
  prefetchRun,
  MemoryObjectStore,
  generateSigningKey,
  openRemoteTier,
  Trust,
  S3ObjectStore,
  type LayeredEvent,
  type LocalStore,
  type RemoteTier,
} from '../src';
import { runPrefix } from '../src/remote/runs';
import { expectSameFlatTree } from './support/same-tree';
import { closeBeforeRemoval, openTestStore, tempDir } from './support/tmp';

const SECRET = Buffer.alloc(32, 7);
const NS = 'default';

describe('LayeredStore', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
  });
  afterEach(() => remove());

  function tier(objects: MemoryObjectStore, extra: { readOnly?: boolean; threshold?: number } = {}): RemoteTier {
    return openRemoteTier(
      { url: 's3://unused-bucket/x', readOnly: extra.readOnly, packTargetBytes: 256 * 1024 },
      { objects, breaker: { threshold: extra.threshold ?? 1000, cooldownMs: 60_000 } },
    );
  }

  async function machine(name: string, remotes: RemoteTier[], options: { sync?: boolean; trust?: Trust } = {}) {
    const local = await openTestStore({ root: join(dir, name), secret: SECRET, trust: options.trust });
    const events: LayeredEvent[] = [];
    const waiting: Array<{ type: LayeredEvent['type']; resolve: () => void }> = [];
    const onEvent = (e: LayeredEvent) => {
      events.push(e);
      for (const w of waiting.splice(0)) if (w.type === e.type) w.resolve();
      else waiting.push(w);
    };
    const store = new LayeredStore({ local, remotes, secret: SECRET, trust: options.trust, sync: options.sync, retryBaseMs: 5, retryMaxMs: 20, warnIntervalMs: 0, onEvent });
    closeBeforeRemoval(store);
    /** Resolves on the next event of a type (or at once if one arrived already). */
    const next = (type: LayeredEvent['type']) => new Promise<void>((resolve) => (events.some((e) => e.type === type) ? resolve() : waiting.push({ type, resolve })));
    return { local, store, events, next, warnings: () => events.filter((e) => e.type === 'warning') };
  }

  /** Writes a tree of `files` text files (~20 kB each, seeded) and returns its path. */
  async function tree(name: string, files = 12, seed = name): Promise<string> {
    const root = join(dir, 'src', name);
    await mkdir(root, { recursive: true });
    for (let i = 0; i < files; i++) {
      let text = '';
      for (let j = 0; text.length < 20_000; j++) text += `// ${seed} file ${i} line ${j} ${createHash('md5').update(`${seed}${i}${j}`).digest('hex')}\n`;
      await writeFile(join(root, `f${i}.js`), text);
    }
    return root;
  }

  async function build(local: LocalStore, store: LayeredStore, src: string, task: string, ns = NS) {
    const r = await ingestDirectory(local.blobs, src);
    const key = computeActionKey(['test', task]);
    await local.actionCache.put(ns, key, { manifest: r.digest, size: r.logicalBytes });
    await store.recordUpload({ kind: 'ac', namespace: ns, key });
    return { key, digest: r.digest };
  }


  /**
   * `c` runs the task again (the same output) and uploads it; then a new machine on `remotes` must
   * restore that output whole: how a damaged tier heals.
   */
  async function rebuildThenRestore(c: Awaited<ReturnType<typeof machine>>, remotes: () => RemoteTier[], src: string, task: string, key: string): Promise<void> {
    await build(c.local, c.store, src, task);
    expect((await c.store.drain({ timeoutMs: 30_000 })).drained).toBe(true);
    const fresh = await machine(`fresh-${task}`, remotes());
    const hit = await fresh.store.lookup(NS, key);
    expect(hit).not.toBeNull();
    const out = join(dir, `restored-${task}`);
    await materializeToDirectory(fresh.local.blobs, hit!.manifest, out);
    await expectSameFlatTree(src, out);
  }

  it('reports the same dedup figures for the same uploads, however they are batched', async () => {
    // Three outputs that share most of their chunks: the second and third repeat files of the first.
    const srcs = [await tree('one', 8, 'shared'), await tree('two', 10, 'shared'), await tree('three', 12, 'shared')];
    // One machine uploads each output as it is stored (three batches) ...
    const a = await machine('a', [tier(new MemoryObjectStore())], { sync: true });
    for (const [i, src] of srcs.entries()) await build(a.local, a.store, src, `t${i}`);
    // ... the other journals all three and uploads them in one batch.
    const b = await machine('b', [tier(new MemoryObjectStore())]);
    for (const [i, src] of srcs.entries()) await build(b.local, b.store, src, `t${i}`);
    const report = await b.store.drain({ timeoutMs: 30_000 });
    expect(report.drained).toBe(true);
    expect(b.store.stats.packs).toBe(1);
    expect(a.store.stats.packs).toBe(3);
    // Sent: the distinct chunks, once. Saved: every other chunk of the three outputs.
    expect(b.store.stats.blobsSent).toBe(a.store.stats.blobsSent);
    expect(b.store.stats.bytesDeduplicated).toBe(a.store.stats.bytesDeduplicated);
    expect(b.store.stats.blobsDeduplicated).toBe(a.store.stats.blobsDeduplicated);
    // The three outputs repeat one set of files: every byte of the first two is saved.
    const bytesOf = async (src: string) => (await Promise.all((await readdir(src)).map(async (f) => (await readFile(join(src, f))).length))).reduce((x, y) => x + y, 0);
    expect(b.store.stats.bytesDeduplicated).toBe((await bytesOf(srcs[0]!)) + (await bytesOf(srcs[1]!)));
  });

  it('namespaces with keys: a keyless PR machine reads main from the tier as main signed it; nothing unverified comes back', async () => {
    const objects = new MemoryObjectStore();
    const main = generateSigningKey();
    const trustedKeys = { main: [main.publicKey] };
    const ci = await machine('main-ci', [tier(objects)], { sync: true, trust: new Trust({ signingKey: main.privateKey, trustedKeys }) });
    const src = await tree('app', 4);
    const { key } = await build(ci.local, ci.store, src, 'app', 'main');
    await ci.store.recordRun({ tool: 'nx', namespace: 'main', branch: 'main', commit: null, targets: ['build'], startTime: 1, keys: [key] });
    await ci.store.drain({ timeoutMs: 30_000 });

    // The PR machine holds no secret and no private key: main verifies by key, its own namespace not at all.
    const pr = await machine('pr', [tier(objects)], { trust: new Trust({ trustedKeys }) });
    const found = await findRun(pr.store, { tool: 'nx', branches: ['main'], commit: null });
    expect(found?.run.keys).toEqual([key]);
    const hit = await pr.store.lookup('main', key);
    expect(hit).not.toBeNull();
    // Kept locally as main signed it (a keyless machine cannot sign it again).
    expect(await pr.local.entries.get('main', key)).toEqual(await ci.local.entries.get('main', key));
    await materializeToDirectory(pr.local.blobs, hit!.manifest, join(dir, 'pr-out'));
    await expectSameFlatTree(src, join(dir, 'pr-out'));

    // An entry in the tier for a namespace this machine cannot verify is never read from the tier.
    const prKey = computeActionKey(['test', 'pr-task']);
    const other = await machine('other', [tier(objects)], { sync: true, trust: new Trust({ secret: SECRET }) });
    await build(other.local, other.store, await tree('pr-task', 2), 'pr-task', 'pr-1');
    await other.store.drain({ timeoutMs: 30_000 });
    expect(await pr.store.lookup('pr-1', prKey)).toBeNull();

    // And the keyless machine's own namespace stays on it: nothing of pr-2 reaches the bucket.
    await build(pr.local, pr.store, await tree('pr-own', 2), 'pr-own', 'pr-2');
    await pr.store.recordRun({ tool: 'nx', namespace: 'pr-2', branch: 'pr-2', commit: null, targets: ['build'], startTime: 2, keys: [computeActionKey(['test', 'pr-own'])] });
    await pr.store.drain({ timeoutMs: 30_000 });
    const keys: string[] = [];
    for await (const o of objects.list('')) keys.push(o.key);
    expect(keys.some((k) => k.includes('/ac/pr-1/'))).toBe(true);
    expect(keys.filter((k) => k.includes('/ac/pr-2/') || k.includes(runPrefix('nx', 'pr-2')))).toEqual([]);
  });

  describe('shared run records and prefetch', () => {
    const COMMIT = 'c'.repeat(40);
    async function publishRun(objects: MemoryObjectStore, branch: string, names: string[], startTime: number) {
      const a = await machine(`pub-${branch}-${startTime}`, [tier(objects)], { sync: true });
      const keys = [];
      for (const name of names) keys.push((await build(a.local, a.store, await tree(`${name}-${startTime}`, 4, name), `${name}@${branch}`)).key);
      await a.store.recordRun({ tool: 'nx', namespace: NS, branch, commit: COMMIT, targets: ['build'], startTime, keys });
      return keys;
    }

    it('a second machine finds the newest run of its branch and fetches all it produced before asking', async () => {
      const objects = new MemoryObjectStore();
      await publishRun(objects, 'main', ['old'], 1_000);
      const keys = await publishRun(objects, 'main', ['app', 'lib', 'ui'], 2_000);
      const b = await machine('b', [tier(objects)]);
      // No run on the feature branch yet: the default branch's newest run is the relevant one.
      const found = await findRun(b.store, { tool: 'nx', branches: ['feature/x', 'main'] });
      expect(found?.run).toMatchObject({ branch: 'main', startTime: 2_000, keys });
      const progress: number[] = [];
      const report = await prefetchRun(b.store, found!, { onProgress: (done) => progress.push(done) });
      expect(report).toMatchObject({ entries: 3, local: 0, fetched: 3, missing: 0 });
      expect(report.bytes).toBeGreaterThan(3 * 4 * 20_000 * 0.9);
      expect(progress.sort()).toEqual([1, 2, 3]);
      // The tool's own lookups are now local hits: no remote call at all.
      const gets = objects.calls.get;
      for (const key of keys) expect(await b.local.actionCache.get(NS, key)).not.toBeNull();
      expect(objects.calls.get).toBe(gets);
      // Again: everything is local.
      expect(await prefetchRun(b.store, found!)).toMatchObject({ local: 3, fetched: 0, bytes: 0 });
    });

    it('skips run records whose MAC does not verify: tampered, or signed with another secret', async () => {
      const objects = new MemoryObjectStore();
      await publishRun(objects, 'main', ['app'], 1_000);
      const tampered = await publishRun(objects, 'main', ['lib'], 2_000);
      const newest = [...objects.objects.keys()].filter((k) => k.startsWith('v1/runs/')).sort()[0]!;
      const record = JSON.parse(objects.objects.get(newest)!.body.toString());
      expect(record.keys).toEqual(tampered);
      record.keys = [computeActionKey(['poison'])];
      objects.objects.get(newest)!.body = Buffer.from(JSON.stringify(record));
      const b = await machine('b', [tier(objects)]);
      expect((await findRun(b.store, { tool: 'nx', branches: ['main'] }))?.run.startTime).toBe(1_000);
      const other = new LayeredStore({ local: b.local, remotes: b.store.remotes as RemoteTier[], secret: Buffer.alloc(32, 9) });
      closeBeforeRemoval(other);
      expect(await findRun(other, { tool: 'nx', branches: ['main'] })).toBeNull();
    });
  });

  it('a second machine restores a remote hit without listing the bucket, and keeps it locally', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('app');
    const { key } = await build(a.local, a.store, src, 'app:build');
    expect(await a.store.journal.counts(a.store.remotes[0]!.name)).toEqual({ pending: 0, failed: 0 });

    const b = await machine('b', [tier(objects)]);
    const before = { ...objects.calls };
    const hit = await b.store.lookup(NS, key);
    expect(hit).not.toBeNull();
    expect(objects.calls.list - before.list).toBe(0);
    // One GET for the entry, one for its tree object (manifest and chunk locations), then ranged
    // pack reads: the 12 files' chunks sit in one or two packs, each read in one coalesced request.
    expect(objects.calls.get - before.get).toBeLessThanOrEqual(4);
    const out = join(dir, 'restored');
    await materializeToDirectory(b.local.blobs, hit!.manifest, out);
    await expectSameFlatTree(src, out);
    // Promoted: the next lookup is local only.
    const mid = objects.calls.get;
    expect(await b.store.lookup(NS, key)).not.toBeNull();
    expect(objects.calls.get).toBe(mid);
  });

  it('uploads only the chunks the remote lacks after a one-file change', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('lib', 20);
    await build(a.local, a.store, src, 'v1');
    const first = { ...a.store.stats };
    await writeFile(join(src, 'f3.js'), `${await readFile(join(src, 'f3.js'), 'utf8')}// one more line\n`);
    await build(a.local, a.store, src, 'v2');
    const sent = a.store.stats.bytesSent - first.bytesSent;
    expect(a.store.stats.blobsDeduplicated - first.blobsDeduplicated).toBeGreaterThan(40);
    expect(a.store.stats.blobsSent - first.blobsSent).toBeLessThanOrEqual(4); // the changed chunk(s) and the manifest
    expect(sent).toBeLessThan(first.bytesSent * 0.1);
  });

  it('an identical output under a new key costs the remote one small entry object', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('same', 8);
    await build(a.local, a.store, src, 'k1');
    const before = { sent: a.store.stats.bytesSent, puts: objects.calls.put };
    const { key } = await build(a.local, a.store, src, 'k2'); // e.g. a dependent rebuilt to the same bytes
    const entryBytes = (await a.local.entries.get(NS, key))!.length;
    expect(a.store.stats.bytesSent - before.sent).toBe(entryBytes);
    expect(objects.calls.put - before.puts).toBe(1);
  });

  it('keeps uploads in the journal while the remote is down and sends them after a restart', async () => {
    const objects = new MemoryObjectStore();
    objects.faults = () => {
      throw new CascacheError(ErrorCodes.UNAVAILABLE, 'injected: connection refused');
    };
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('svc');
    const { key } = await build(a.local, a.store, src, 'svc:build');
    const name = a.store.remotes[0]!.name;
    expect(await a.store.journal.counts(name)).toEqual({ pending: 1, failed: 0 });
    expect(a.warnings().map((w) => w.code)).toContain('E_UNAVAILABLE');
    expect(objects.objects.size).toBe(0);
    await a.store.close(); // the process "exits" with the upload pending

    objects.faults = null;
    const again = new LayeredStore({ local: a.local, remotes: [tier(objects)], secret: SECRET });
    closeBeforeRemoval(again);
    const report = await again.drain({ timeoutMs: 30_000 });
    expect(report.drained).toBe(true);
    expect(report.stats.records).toBe(1);

    const b = await machine('b', [tier(objects)]);
    const hit = await b.store.lookup(NS, key);
    const out = join(dir, 'out');
    await materializeToDirectory(b.local.blobs, hit!.manifest, out);
    await expectSameFlatTree(src, out);
  });

  it('a drain gives up on a tier that is down once its breaker opens again, and says why', async () => {
    const objects = new MemoryObjectStore();
    objects.faults = () => {
      throw new CascacheError(ErrorCodes.UNAVAILABLE, 'injected: connect ECONNREFUSED 127.0.0.1:9');
    };
    const a = await machine('a', [tier(objects, { threshold: 3 })]);
    await build(a.local, a.store, await tree('down'), 'down:build');
    const name = a.store.remotes[0]!.name;
    // A deadline no test would wait for: the breaker's verdict ends the drain, not the clock.
    const report = await a.store.drain({ timeoutMs: 3_600_000 });
    expect(report.drained).toBe(false);
    expect(report.pending[name]).toBe(1);
    expect(report.unreachable[name]).toContain('ECONNREFUSED');
    // The wait at the end of a build trusts the open breaker: no further attempt at all.
    const calls = JSON.stringify(objects.calls);
    const trusted = await a.store.drain({ timeoutMs: 3_600_000, resetBreakers: false });
    expect(trusted.unreachable[name]).toContain('ECONNREFUSED');
    expect(JSON.stringify(objects.calls)).toBe(calls);
    // Back up: the next drain resets the breaker and sends it.
    objects.faults = null;
    const again = await a.store.drain({ timeoutMs: 3_600_000 });
    expect(again).toMatchObject({ drained: true, unreachable: {} });
  });

  it('a tier that accepts and never answers costs one lookup deadline, then is skipped', async () => {
    const hung: Socket[] = [];
    const server = createNetServer((socket) => hung.push(socket));
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
    try {
      const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const objects = new S3ObjectStore({ bucket: 'hung-bucket', endpoint, forcePathStyle: true, credentials: { accessKeyId: 'k', secretAccessKey: 's' }, requestTimeoutMs: 60_000 });
      const remote = openRemoteTier({ url: 's3://hung-bucket/x' }, { objects, breaker: { threshold: 3, cooldownMs: 60_000 } });
      const local = await openTestStore({ root: join(dir, 'hung'), secret: SECRET });
      const store = new LayeredStore({ local, remotes: [remote], secret: SECRET, lookupTimeoutMs: 300, warnIntervalMs: 0 });
      closeBeforeRemoval(store);
      // Tasks looked up one after another, as a build does: only the first one waits.
      for (let i = 0; i < 6; i++) expect(await store.lookup(NS, computeActionKey(['hung', String(i)]))).toBeNull();
      expect(remote.breaker.isOpen).toBe(true);
      expect(remote.breaker.lastFailure).toContain('no answer within 300 ms');
      expect(hung.length).toBe(1); // one connection: the others never left the process
    } finally {
      for (const s of hung) s.destroy();
      server.close();
    }
  });

  it('the write-behind worker retries with backoff until the remote answers', async () => {
    const objects = new MemoryObjectStore();
    let failuresLeft = 5;
    objects.faults = (op) => {
      if (op === 'put' && failuresLeft-- > 0) throw new CascacheError(ErrorCodes.UNAVAILABLE, 'injected 503');
    };
    const a = await machine('a', [tier(objects)]);
    a.store.start();
    const uploaded = a.next('uploaded');
    const src = await tree('worker');
    const { key } = await build(a.local, a.store, src, 'w');
    await uploaded;
    expect(failuresLeft).toBeLessThan(0);
    const b = await machine('b', [tier(objects)]);
    expect(await b.store.lookup(NS, key)).not.toBeNull();
  });

  it('sets a record aside on a permanent failure instead of retrying it forever', async () => {
    const objects = new MemoryObjectStore();
    objects.faults = () => {
      throw new CascacheError(ErrorCodes.CONFIG, 'injected: AccessDenied');
    };
    const a = await machine('a', [tier(objects)]);
    await build(a.local, a.store, await tree('denied'), 'd');
    const report = await a.store.drain({ timeoutMs: 5_000 });
    const name = a.store.remotes[0]!.name;
    expect(report.pending[name]).toBe(0);
    expect(report.failed[name]).toBe(1);
    expect(a.warnings().some((w) => w.code === 'E_CONFIG' && /set aside/.test(w.message))).toBe(true);
  });

  it('skips a failing remote after the breaker opens: one warning, fast misses, no build failure', async () => {
    const objects = new MemoryObjectStore();
    objects.faults = () => {
      throw new CascacheError(ErrorCodes.UNAVAILABLE, 'injected timeout');
    };
    const events: string[] = [];
    const remote = openRemoteTier({ url: 's3://unused-bucket/x' }, { objects, breaker: { threshold: 2, cooldownMs: 60_000, onOpen: (s) => events.push(`open ${s}`) } });
    const b = await machine('b', [remote]);
    for (let i = 0; i < 10; i++) expect(await b.store.lookup(NS, computeActionKey(['k', String(i)]))).toBeNull();
    expect(events).toEqual(['open memory://objects']);
    expect(objects.calls.get).toBe(2); // then the breaker answered without the network
  });

  it('a tampered AC entry in the bucket is a miss with a warning', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const { key } = await build(a.local, a.store, await tree('t'), 't');
    const acKey = `v1/ac/${NS}/${key}`;
    const entry = JSON.parse(objects.objects.get(acKey)!.body.toString()) as { size: number };
    entry.size += 1; // keeps the old signature
    objects.objects.get(acKey)!.body = Buffer.from(JSON.stringify(entry));
    const b = await machine('b', [tier(objects)]);
    expect(await b.store.lookup(NS, key)).toBeNull();
    expect(b.warnings().some((w) => /bad-signature|malformed/.test(w.message))).toBe(true);
    expect(await b.local.actionCache.get(NS, key)).toBeNull();
  });

  it('an upload replaces a tampered entry in the tier, and never a valid one', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('heal', 2);
    const r = await ingestDirectory(a.local.blobs, src);
    const key = computeActionKey(['test', 'heal']);
    await objects.put(`v1/ac/${NS}/${key}`, Buffer.from('{"forged":true}')); // planted before the real upload
    await a.local.actionCache.put(NS, key, { manifest: r.digest, size: r.logicalBytes });
    await a.store.recordUpload({ kind: 'ac', namespace: NS, key });
    const b = await machine('b', [tier(objects)]);
    expect(await b.store.lookup(NS, key)).not.toBeNull();
    // A valid entry already there (another writer's) stays: keys are write-once.
    const c = await machine('c', [tier(objects)], { sync: true });
    const r2 = await ingestDirectory(c.local.blobs, await tree('heal-other', 1));
    await c.local.actionCache.put(NS, key, { manifest: r2.digest, size: r2.logicalBytes });
    await c.store.recordUpload({ kind: 'ac', namespace: NS, key });
    expect(JSON.parse(objects.objects.get(`v1/ac/${NS}/${key}`)!.body.toString()).manifest).toBe(r.digest);
  });

  it('a pack with flipped bytes is refetched from the next tier, or is a miss', async () => {
    const first = new MemoryObjectStore('memory://first');
    const second = new MemoryObjectStore('memory://second');
    const a = await machine('a', [tier(first), tier(second)], { sync: true });
    const src = await tree('flip');
    const { key } = await build(a.local, a.store, src, 'flip');
    for (const [k, o] of first.objects) if (k.endsWith('.pack')) o.body[Math.floor(o.body.length / 2)]! ^= 0xff;

    const b = await machine('b', [tier(first), tier(second)]);
    const hit = await b.store.lookup(NS, key);
    expect(hit).not.toBeNull();
    const out = join(dir, 'out');
    await materializeToDirectory(b.local.blobs, hit!.manifest, out);
    await expectSameFlatTree(src, out);
    expect(b.events.some((e) => e.type === 'promoted' && e.tier === 'memory://second')).toBe(true);

    const c = await machine('c', [tier(first)]);
    expect(await c.store.lookup(NS, key)).toBeNull();
    expect(await c.local.actionCache.get(NS, key)).toBeNull();

    // c runs the task and uploads its output: the damaged chunks are sent again, not deduplicated
    // against the copies that failed, and the tier serves the output whole to a new machine.
    const sentBefore = c.store.stats.blobsSent;
    await rebuildThenRestore(c, () => [tier(first)], src, 'flip', key);
    expect(c.store.stats.blobsSent).toBeGreaterThan(sentBefore);
  });

  it('a tree object with swapped chunk locations is a miss, and the next upload of it rewrites it', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('swap');
    const { key, digest } = await build(a.local, a.store, src, 'swap');
    const stored = [...objects.objects].find(([k]) => k.endsWith(`/trees/${digest}`))?.[1];
    expect(stored).toBeDefined();
    const doc = JSON.parse(decodeBlob(stored!.body).toString('utf8'));
    // Two rows of different lengths change places: each chunk now points at the other's frame.
    const j = doc.chunks.findIndex((r: number[]) => r[2] !== doc.chunks[0][2]);
    expect(j).toBeGreaterThan(0);
    [doc.chunks[0], doc.chunks[j]] = [doc.chunks[j], doc.chunks[0]];
    stored!.body = encodeBlob(Buffer.from(JSON.stringify(doc)));

    const c = await machine('c', [tier(objects)]);
    expect(await c.store.lookup(NS, key)).toBeNull();
    await rebuildThenRestore(c, () => [tier(objects)], src, 'swap', key);
  });

  it('a remote hit replaces a local entry whose blobs were evicted', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects)], { sync: true });
    const src = await tree('evicted', 4);
    const { key } = await build(a.local, a.store, src, 'ev');
    const b = await machine('b', [tier(objects)]);
    // b holds an entry for the key with another manifest whose blobs are gone (say, evicted).
    const other = await ingestDirectory(b.local.blobs, await tree('other', 1));
    await b.local.actionCache.put(NS, key, { manifest: other.digest, size: 1 });
    for (const d of [other.digest, ...other.manifest.entries.flatMap((e) => (e.type === 'file' ? e.chunks : []))]) await b.local.blobs.delete(d);
    const hit = await b.store.lookup(NS, key);
    expect(hit).not.toBeNull();
    await materializeToDirectory(b.local.blobs, hit!.manifest, join(dir, 'out'));
    await expectSameFlatTree(src, join(dir, 'out'));
    expect((await b.local.actionCache.get(NS, key))!.entry.manifest).toBe(hit!.entry.manifest);
  });

  it('refuses remote tiers without a signing secret (entries from a shared tier must be verified)', async () => {
    const local = await openTestStore({ root: join(dir, 'unsigned'), secret: null });
    expect(() => new LayeredStore({ local, remotes: [tier(new MemoryObjectStore())], secret: null })).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });

  it('a read-only tier is read but never written', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', [tier(objects, { readOnly: true })], { sync: true });
    await build(a.local, a.store, await tree('ro'), 'ro');
    expect(objects.calls.put).toBe(0);
    expect(await readdir(join(dir, 'a', 'v1')).then((n) => n.includes('journal'))).toBe(false);
  });
});
