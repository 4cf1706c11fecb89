import { request as httpRequest } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { CascacheError, computeActionKey, ErrorCodes, generateSigningKey, openLocalStore, readAll, StoreIndex, Trust, type LocalStore } from '@cascache/core';
import { createServer, listen, type CascacheServer, type ServerOptions, type UploadEvent } from '../src';
import { unservableLine } from '../src/agent-control';

type Entry = { header: Partial<tarStream.Header> & { name: string }; body?: string | Buffer };

async function tarGz(entries: Entry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    if (e.body === undefined) pack.entry(e.header);
    else pack.entry(e.header, e.body);
  }
  pack.finalize();
  return gzipSync(await readAll(pack as unknown as AsyncIterable<Uint8Array>, 1 << 28));
}

function code(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** A body shaped like the one Nx's client builds: outputs, then terminalOutput and code. */
const nxBody = (files: Entry[] = [{ header: { name: 'dist/libs/a/index.js' }, body: 'export const a = 1;\n' }]) =>
  tarGz([...files, { header: { name: 'terminalOutput' }, body: '> built a\n' }, { header: { name: 'code' }, body: code(0) }]);

async function untar(gz: Buffer): Promise<Record<string, string>> {
  const extract = tarStream.extract();
  Readable.from([gunzipSync(gz)]).pipe(extract as unknown as NodeJS.WritableStream);
  const out: Record<string, string> = {};
  for await (const e of extract) {
    const body = await readAll(e as unknown as AsyncIterable<Uint8Array>, 1 << 28);
    out[e.header.name] = e.header.type === 'symlink' ? `-> ${e.header.linkname}` : e.header.type === 'directory' ? 'dir' : body.toString('base64');
  }
  return out;
}

describe('Nx self-hosted cache API over a real listening server', () => {
  let dir: string;
  let store: LocalStore;
  let server: CascacheServer;
  let base: string;
  let uploads: UploadEvent[];
  let waiters: Array<(e: UploadEvent) => void>;

  async function start(extra: Partial<ServerOptions> = {}): Promise<void> {
    server = createServer({
      blobs: store.blobs,
      actionCache: store.actionCache,
      onUpload: (e) => {
        uploads.push(e);
        waiters.shift()?.(e);
      },
      ...extra,
    });
    await server.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  }
  const nextUpload = () => new Promise<UploadEvent>((resolve) => waiters.push(resolve));

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-server-'));
    store = await openLocalStore({ root: dir, secret: Buffer.alloc(32, 3) });
    uploads = [];
    waiters = [];
  });
  afterEach(async () => {
    await server.close();
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Responses with their bodies read, so no connection is left busy. */
  type Res = { status: number; body: Buffer; headers: Headers; json: () => Promise<any> };
  const done = async (p: Promise<Response>): Promise<Res> => {
    const r = await p;
    const body = Buffer.from(await r.arrayBuffer());
    return { status: r.status, body, headers: r.headers, json: async () => JSON.parse(body.toString()) };
  };
  const put = (hash: string, body: Buffer, token?: string) =>
    done(fetch(`${base}/v1/cache/${hash}`, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) } }));
  const get = (hash: string, token?: string) => done(fetch(`${base}/v1/cache/${hash}`, { headers: token ? { authorization: `Bearer ${token}` } : {} }));

  it('stores a PUT and serves it back as a gzip tar with the same files, terminalOutput and code', async () => {
    await start();
    const files: Entry[] = [
      { header: { name: 'dist/libs/a/', type: 'directory', mode: 0o755 } },
      { header: { name: 'dist/libs/a/index.js', mode: 0o644 }, body: 'export const a = 1;\n'.repeat(1000) },
      { header: { name: 'dist/libs/a/bin.sh', mode: 0o755 }, body: '#!/bin/sh\n' },
      { header: { name: 'dist/libs/a/empty/', type: 'directory', mode: 0o700 } },
      { header: { name: 'dist/libs/a/link.js', type: 'symlink', linkname: 'index.js' } },
      { header: { name: 'dist/libs/a/ünï cødé.txt' }, body: 'ü' },
    ];
    const body = await nxBody(files);
    const res = await put('12345678901234567890', body);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ stored: true, bytesReceived: body.length });
    const back = await get('12345678901234567890');
    expect(back.status).toBe(200);
    expect(back.headers.get('content-type')).toBe('application/octet-stream');
    const gz = back.body;
    expect(await untar(gz)).toEqual(await untar(body));
  });

  it('has what a PUT stored in the store index before it answers (a reader in another process sees it at once)', async () => {
    const token = 'w'.repeat(32);
    const l = await listen({ storeDir: dir, host: '127.0.0.1', port: 0, tokens: { readWrite: [token] }, secret: Buffer.alloc(32, 3), logger: false });
    server = l.server;
    base = l.url;
    const reader = StoreIndex.open(dir).index; // its own connection, as `cascache stats` would have
    try {
      const before = reader.counts();
      expect((await put('12345678901234567890', await nxBody(), token)).status).toBe(200);
      const after = reader.counts();
      expect(after.entries).toBe(before.entries + 1);
      expect(after.blobs).toBeGreaterThan(before.blobs);
    } finally {
      reader.close();
    }
  });

  it('answers 404 for an unknown hash and 400 for a malformed one', async () => {
    await start();
    expect((await get('999')).status).toBe(404);
    expect((await get('abc')).status).toBe(400);
    expect((await get('12%2F..%2F3')).status).toBe(400);
    expect((await put('-1', await nxBody())).status).toBe(400);
  });

  it('is write-once: a second PUT of a hash is 409 and the first content stays', async () => {
    await start();
    expect((await put('42', await nxBody())).status).toBe(200);
    const other = await nxBody([{ header: { name: 'dist/evil.js' }, body: 'evil' }]);
    expect((await put('42', other)).status).toBe(409);
    expect(Object.keys(await untar((await get('42')).body))).toContain('dist/libs/a/index.js');
  });

  it('heals: an entry whose chunk is gone is a miss, and the next PUT of that hash repairs or replaces it', async () => {
    await start({ hotBodies: { dir: join(dir, 'v1', 'hot'), maxBytes: 1 << 24 } });
    const files: Entry[] = [{ header: { name: 'dist/libs/a/index.js' }, body: Array.from({ length: 4000 }, (_, i) => `export const v${i} = ${i};`).join('\n') }];
    const body = await nxBody(files);
    expect((await put('77', body)).status).toBe(200);
    // One chunk of the stored output is lost (quarantined after damage, say).
    const hit = await store.actionCache.get('default', computeActionKey(['nx', 'default', '77']));
    const file = hit!.manifest.entries.find((e) => e.type === 'file');
    const chunk = file?.type === 'file' ? file.chunks[1]! : '';
    expect(await store.blobs.deleteMany([chunk])).toEqual(new Set([chunk]));
    expect((await get('77')).status).toBe(404);
    // The same output again: the missing chunk is stored again and the entry serves (409: it existed).
    expect((await put('77', body)).status).toBe(409);
    const back = await get('77');
    expect(back.status).toBe(200);
    expect(await untar(back.body)).toEqual(await untar(body));

    // Different bytes for a hash whose entry cannot be served replace it.
    expect((await put('78', body)).status).toBe(200);
    expect((await get('78')).status).toBe(200); // now also a hot body
    const hit78 = await store.actionCache.get('default', computeActionKey(['nx', 'default', '78']));
    const f78 = hit78!.manifest.entries.find((e) => e.type === 'file');
    await store.blobs.deleteMany([f78?.type === 'file' ? f78.chunks[0]! : '']);
    const other = await nxBody([{ header: { name: 'dist/libs/a/index.js' }, body: 'rebuilt, not byte-identical\n' }]);
    expect((await put('78', other)).status).toBe(200);
    expect(await untar((await get('78')).body)).toEqual(await untar(other));
    // A servable entry stays write-once.
    expect((await put('78', body)).status).toBe(409);
  });

  it('answers a chunk damaged in the middle of a body as a miss, never a 200 that ends early (Nx fails the run on one)', async () => {
    const spoolDir = join(dir, 'spool');
    await start({ spoolDir });
    // ~1.5 MB of text that does not repeat: many chunks, so the damaged one is far past the first bytes.
    const text = Array.from({ length: 40_000 }, (_, i) => `export const v${i} = "${randomBytes(8).toString('hex')}";`).join('\n');
    const body = await nxBody([{ header: { name: 'dist/big.js' }, body: text }]);
    expect((await put('91', body)).status).toBe(200);
    const whole = await get('91');
    expect(await untar(whole.body)).toEqual(await untar(body));

    const hit = await store.actionCache.get('default', computeActionKey(['nx', 'default', '91']));
    const file = hit!.manifest.entries.find((e) => e.type === 'file');
    const chunks = file?.type === 'file' ? file.chunks : [];
    expect(chunks.length).toBeGreaterThan(8);
    const loc = store.blobs.locationOf(chunks[Math.floor(chunks.length * 0.75)]!)!;
    const bytes = await readFile(loc.file);
    bytes[loc.offset + loc.length - 1] ^= 0x01; // the frame's last payload byte
    await writeFile(loc.file, bytes);

    const damaged = await get('91');
    expect(damaged.status).toBe(404);
    expect(damaged.body.toString()).toContain('not found');
    // The same output again repairs the quarantined chunk, and the hash serves whole again.
    expect((await put('91', body)).status).toBe(409);
    const repaired = await get('91');
    expect(repaired.status).toBe(200);
    expect(await untar(repaired.body)).toEqual(await untar(body));
    // Bodies are assembled in the spool dir and nothing is left there.
    expect(await readdir(spoolDir)).toEqual([]);
  });

  it('says how many entries did not verify with a new secret, and replaces each when its task is uploaded again', async () => {
    // Written with one secret (an earlier setup)...
    await start();
    const body = await nxBody();
    for (const h of ['501', '502']) expect((await put(h, body)).status).toBe(200);
    await server.close();
    store.close();
    // ...read with another: misses, counted for the run's summary, and each PUT replaces its entry.
    const l = await listen({ storeDir: dir, host: '127.0.0.1', port: 0, secret: Buffer.alloc(32, 9), logger: false });
    server = l.server;
    base = l.url;
    store = l.store;
    const since = Date.now();
    expect((await get('501')).status).toBe(404);
    expect((await get('502')).status).toBe(404);
    const report = await (await fetch(`${base}/_cascache/report`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ hashes: ['501', '502'], since }) })).json();
    expect(report.unservable).toEqual({ 'bad-signature': 2 });
    expect(unservableLine(report.unservable)).toMatch(/^cascache: 2 stored entries did not verify with this CASCACHE_SECRET and were not used: use one CASCACHE_SECRET on every machine/);
    expect((await put('501', body)).status).toBe(200);
    expect((await get('501')).status).toBe(200);
    expect(unservableLine({ 'chunks-missing': 3 })).toBeNull();
    expect(unservableLine({ malformed: 1 })).toContain('1 damaged entry was not used');
  });

  it('never answers Nx with a status that fails its run: a store that fails is a miss on GET and 200 "not stored" on PUT', async () => {
    // Nx 24's client fails the whole run on any GET status but 200/404 and any PUT status but 200/409.
    const broken = new Proxy(store.actionCache, {
      get(target, prop, receiver) {
        if (prop === 'get' || prop === 'put') return async () => { throw new CascacheError(ErrorCodes.IO, 'EIO: i/o error, read'); };
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    await start({ actionCache: broken });
    const up = await put('31', await nxBody());
    expect([up.status, await up.json()]).toEqual([200, { stored: false, error: 'E_IO' }]);
    expect((await get('31')).status).toBe(404);
  });

  it('lets exactly one of two concurrent PUTs of a hash win', async () => {
    await start();
    const statuses = (await Promise.all([put('7', await nxBody()), put('7', await nxBody())])).map((r) => r.status).sort();
    expect(statuses).toEqual([200, 409]);
  });

  it('enforces tokens: 401 without or with a wrong token, 403 for a read-only writer', async () => {
    await start({ tokens: { readWrite: ['rw-secret'], readOnly: ['ro-secret'] } });
    expect((await put('1', await nxBody())).status).toBe(401);
    expect((await put('1', await nxBody(), 'nope')).status).toBe(401);
    expect((await put('1', await nxBody(), 'ro-secret')).status).toBe(403);
    expect((await get('1', 'ro-secret')).status).toBe(404);
    expect((await put('1', await nxBody(), 'rw-secret')).status).toBe(200);
    expect((await get('1')).status).toBe(401);
    expect((await get('1', 'ro-secret')).status).toBe(200);
    expect((await done(fetch(`${base}/healthz`, { headers: { authorization: 'Bearer wrong' } }))).status).toBe(401);
    expect((await done(fetch(`${base}/healthz`))).status).toBe(200);
  });

  it.each([
    ['an absolute path', [{ header: { name: '/etc/x' }, body: 'x' }]],
    ['a .. path', [{ header: { name: '../../x' }, body: 'x' }]],
    ['a symlink out of the root', [{ header: { name: 'l', type: 'symlink' as const, linkname: '../../../etc' } }]],
    ['a file through a symlink', [{ header: { name: 'l', type: 'symlink' as const, linkname: 'd' } }, { header: { name: 'l/x' }, body: 'x' }]],
  ])('rejects %s with 400 and stores no entry', async (_, files) => {
    await start();
    const res = await put('5', await nxBody(files as Entry[]));
    expect(res.status).toBe(400);
    expect((await res.json()).error).toBe('E_BAD_INPUT');
    expect((await get('5')).status).toBe(404);
  });

  it('rejects truncated and corrupt gzip, a body without code, and a decompression bomb', async () => {
    await start();
    const good = await nxBody();
    expect((await put('6', good.subarray(0, good.length - 20))).status).toBe(400);
    const corrupt = Buffer.from(good);
    corrupt[30] ^= 0xff;
    expect((await put('6', corrupt)).status).toBe(400);
    expect((await put('6', await tarGz([{ header: { name: 'a.js' }, body: 'a' }]))).status).toBe(400);
    const bomb = await tarGz([{ header: { name: 'zeros.bin' }, body: Buffer.alloc(64 * 1024 * 1024) }]);
    const res = await put('6', bomb);
    expect(res.status).toBe(400);
    expect((await res.json()).message).toContain('decompression bomb');
    expect((await get('6')).status).toBe(404);
  });

  it('enforces configured size limits with 400', async () => {
    await start({ limits: { maxFileBytes: 10 } });
    expect((await put('8', await nxBody())).status).toBe(400);
  });

  it('leaves no entry when the client disconnects mid-upload', async () => {
    await start();
    const body = await nxBody([{ header: { name: 'big.bin' }, body: Buffer.from('x'.repeat(5_000_000)) }]);
    const done = nextUpload();
    const port = new URL(base).port;
    const req = httpRequest({ host: '127.0.0.1', port, method: 'PUT', path: '/v1/cache/77', headers: { 'content-length': body.length } });
    req.on('error', () => undefined);
    req.write(body.subarray(0, 2000), () => req.destroy());
    const event = await done;
    expect(event.outcome).toBe('rejected');
    expect((await get('77')).status).toBe(404);
  });

  it('takes only u64 hashes, and never echoes a long or unknown URL back', async () => {
    await start();
    expect((await get('18446744073709551615')).status).toBe(404); // u64 max: a valid miss
    for (const h of ['18446744073709551616', '99999999999999999999', '1'.repeat(30)]) {
      const r = await get(h);
      expect(r.status).toBe(400);
      expect(r.body.toString()).not.toContain(h);
    }
    const long = '7'.repeat(5000);
    const tooLong = await get(long);
    expect(tooLong.status).toBe(414);
    expect(tooLong.body.toString()).not.toContain(long.slice(0, 100));
    const unknown = await done(fetch(`${base}/nowhere/${long}`));
    expect(unknown.status).toBe(404);
    expect(unknown.body.toString()).toBe('{"error":"not found"}');
  });

  it('cuts an upload whose body stalls, and stores nothing of it', async () => {
    await start({ uploadIdleTimeoutMs: 300 });
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    socket.write('PUT /v1/cache/88 HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: 100000\r\n\r\n');
    socket.write((await nxBody()).subarray(0, 20)); // then nothing more
    socket.on('error', () => undefined);
    await once(socket, 'close'); // the server closes it; without the bound Node waits 300 s
    expect((await get('88')).status).toBe(404);
    let blobs = 0;
    for await (const _ of store.blobs.list()) blobs++;
    expect(blobs).toBe(0);
  });

  it('closes the connection after rejecting an upload, so no socket lingers half-closed', async () => {
    await start();
    const hostile = await nxBody([{ header: { name: '../x' }, body: 'x' }]);
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    socket.write(`PUT /v1/cache/89 HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: ${hostile.length}\r\n\r\n`);
    socket.write(hostile);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    // Ends from the server's side at once; a kept-alive socket would end only after 72 s.
    const ended = await Promise.race([once(socket, 'end').then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000).unref())]);
    expect(ended).toBe(true);
    const response = Buffer.concat(chunks).toString();
    expect(response).toMatch(/^HTTP\/1.1 400/);
    expect(response.toLowerCase()).toContain('connection: close');
    socket.destroy();
  });

  it('reports per-hash activity for the plugin summary', async () => {
    await start();
    const body = await nxBody();
    await put('100', body);
    await get('100');
    await get('101');
    const r = await done(fetch(`${base}/_cascache/report`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ hashes: ['100', '101', '102'] }) }));
    expect(await r.json()).toMatchObject({ hashes: 2, hits: 1, misses: 1, stored: 1, bytesReceived: body.length });
    const later = Date.now() + 1;
    const none = await done(fetch(`${base}/_cascache/report`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ hashes: ['100'], since: later }) }));
    expect(await none.json()).toMatchObject({ hashes: 0, hits: 0, stored: 0, bytesReceived: 0 });
  });

  describe('namespaces and scoped tokens', () => {
    const main = generateSigningKey();
    const scoped = [
      { token: 'main-ci', name: 'main-ci', read: ['main'], write: 'main' },
      { token: 'pr-1', name: 'pr-1', read: ['main'], write: 'pr-1' },
      { token: 'reader', read: ['main'] },
    ];

    it('a PR token reads main then its own namespace and writes only its own: its upload of a hash never answers main', async () => {
      store.close();
      // The team server signs what it accepts; its token scopes are what keep a PR out of main.
      store = await openLocalStore({ root: dir, secret: null, trust: new Trust({ signingKey: main.privateKey, trustedKeys: { '*': [main.publicKey] } }) });
      await start({ tokens: { scoped }, deferIngest: { spoolDir: join(dir, 'spool') }, hotBodies: { dir: join(dir, 'hot'), maxBytes: 1 << 30 } });
      const poison = await nxBody([{ header: { name: 'dist/a.js' }, body: 'poisoned();\n'.repeat(500) }]);
      const good = await nxBody([{ header: { name: 'dist/a.js' }, body: 'good();\n'.repeat(500) }]);

      let stored = nextUpload();
      expect((await put('4242', poison, 'pr-1')).status).toBe(200);
      expect(await stored).toMatchObject({ outcome: 'stored' });
      expect((await get('4242', 'pr-1')).body.equals(poison)).toBe(true); // its own, from its hot body
      expect((await get('4242', 'main-ci')).status).toBe(404);
      expect((await get('4242', 'reader')).status).toBe(404);
      expect((await put('4242', good, 'reader')).status).toBe(403);

      stored = nextUpload();
      expect((await put('4242', good, 'main-ci')).status).toBe(200); // not a 409: another namespace
      await stored;
      for (const token of ['main-ci', 'reader', 'pr-1']) expect((await get('4242', token)).body.equals(good)).toBe(true);

      // Main first, then the PR uploads the same hash: main's hot body is not the PR's.
      stored = nextUpload();
      expect((await put('4343', good, 'main-ci')).status).toBe(200);
      await stored;
      stored = nextUpload();
      expect((await put('4343', poison, 'pr-1')).status).toBe(200);
      await stored;
      for (const token of ['main-ci', 'reader', 'pr-1']) expect((await get('4343', token)).body.equals(good)).toBe(true);
      // The writer is the token's name, covered by the signature.
      const entry = await store.actionCache.peek('main', computeActionKey(['nx', 'main', '4242']));
      expect(entry?.writer).toBe('main-ci');
    });

    it('keeps a scoped token to its namespaces on the chunk and turbo APIs too', async () => {
      store.close();
      store = await openLocalStore({ root: dir, secret: null, trust: new Trust({ signingKey: main.privateKey, trustedKeys: { '*': [main.publicKey] } }) });
      await start({ tokens: { scoped }, chunkApi: { blobs: store.blobs, entries: store.entries, roots: store.roots } });
      const auth = (token: string) => ({ authorization: `Bearer ${token}` });
      const key = computeActionKey(['nx', 'main', '1']);
      expect((await done(fetch(`${base}/cas/v1/ac/main/${key}`, { method: 'PUT', body: '{}', headers: auth('pr-1') }))).status).toBe(403);
      expect((await done(fetch(`${base}/cas/v1/ac/pr-2/${key}`, { headers: auth('pr-1') }))).status).toBe(403);
      expect((await done(fetch(`${base}/cas/v1/ac/main/${key}`, { headers: auth('pr-1') }))).status).toBe(404);
      expect((await done(fetch(`${base}/cas/v1/blobs/${'a'.repeat(64)}`, { method: 'DELETE', headers: auth('pr-1') }))).status).toBe(403);
      const turboPut = (team: string, token: string) =>
        done(fetch(`${base}/v8/artifacts/abc123?slug=${team}`, { method: 'PUT', body: Buffer.from('x'), headers: { ...auth(token), 'content-type': 'application/octet-stream' } }));
      expect((await turboPut('main', 'pr-1')).status).toBe(403);
      expect((await done(fetch(`${base}/v8/artifacts/abc123?slug=pr-2`, { headers: auth('pr-1') }))).status).toBe(403);
    });
  });

  describe('with deferIngest (the agent)', () => {
    /** The real store's blobs, with puts held until `open()`: shows what happens before a body is stored. */
    function gatedBlobs() {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const blobs = Object.create(store.blobs) as typeof store.blobs;
      blobs.put = async (...args: Parameters<typeof store.blobs.put>) => {
        await gate;
        return store.blobs.put(...args);
      };
      return { blobs, open };
    }

    it('answers a PUT once the body is on disk; a GET meanwhile waits for it and gets the same files', async () => {
      const { blobs, open } = gatedBlobs();
      const spoolDir = join(dir, 'spool');
      await start({ blobs, deferIngest: { spoolDir } });
      const body = await nxBody([{ header: { name: 'dist/a.js' }, body: 'export const a = 1;\n'.repeat(2000) }]);
      const res = await put('555', body);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ stored: true, deferred: true });
      expect(uploads).toEqual([]); // nothing stored yet: the gate is shut
      const second = await put('555', body);
      expect(second.status).toBe(409); // write-once holds while the first is being stored
      let got = false;
      const back = get('555').then((r) => ((got = true), r));
      const stored = nextUpload();
      open();
      expect(await stored).toMatchObject({ hash: '555', outcome: 'stored', deferred: true, bytesReceived: body.length });
      const r = await back;
      expect(got).toBe(true);
      expect(r.status).toBe(200);
      expect(await untar(r.body)).toEqual(await untar(body));
      expect(await readdir(spoolDir)).toEqual([]); // the spooled body is gone once stored
    });

    it('drops a hostile body after answering it: no entry, the event says why, the spool is empty', async () => {
      const spoolDir = join(dir, 'spool');
      await start({ deferIngest: { spoolDir } });
      const evil = await nxBody([{ header: { name: '../outside.js' }, body: 'evil' }]);
      const rejected = nextUpload();
      expect((await put('666', evil)).status).toBe(200);
      expect(await rejected).toMatchObject({ hash: '666', outcome: 'rejected', code: 'E_BAD_INPUT', deferred: true });
      expect((await get('666')).status).toBe(404);
      expect(await readdir(spoolDir)).toEqual([]);
    });

    it('reports figures after waiting for bodies still being stored, and says how many still are', async () => {
      const { blobs, open } = gatedBlobs();
      await start({ blobs, deferIngest: { spoolDir: join(dir, 'spool') } });
      const body = await nxBody();
      expect((await put('777', body)).status).toBe(200);
      const report = (waitMs: number) =>
        done(fetch(`${base}/_cascache/report`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ hashes: ['777'], waitMs }) })).then((r) => r.json());
      expect(await report(0)).toMatchObject({ pending: 1, stored: 0, bytesReceived: 0 });
      const later = report(60_000);
      open();
      expect(await later).toMatchObject({ pending: 0, stored: 1, bytesReceived: body.length });
    });
  });

  describe('with hot bodies', () => {
    const hotDir = () => join(dir, 'hot');
    const hotFiles = async () => (await readdir(hotDir())).filter((f) => f.endsWith('.body'));

    it('serves back the very bytes Nx sent once they are stored (the agent), with their length', async () => {
      await start({ deferIngest: { spoolDir: join(dir, 'spool') }, hotBodies: { dir: hotDir(), maxBytes: 1 << 30 } });
      const body = await nxBody([{ header: { name: 'dist/a.js' }, body: 'export const a = 1;\n'.repeat(3000) }]);
      const stored = nextUpload();
      expect((await put('901', body)).status).toBe(200);
      await stored;
      const back = await get('901');
      expect(back.status).toBe(200);
      expect(back.body.equals(body)).toBe(true);

      expect(await hotFiles()).toHaveLength(1);
    });

    it('keeps a body it built for a GET and answers the next GET from it, byte-identical', async () => {
      await start({ hotBodies: { dir: hotDir(), maxBytes: 1 << 30 } });
      const body = await nxBody();
      expect((await put('902', body)).status).toBe(200);
      const first = await get('902');
      expect(await untar(first.body)).toEqual(await untar(body));
      expect(await hotFiles()).toHaveLength(1);
      const second = await get('902');
      expect(second.body.equals(first.body)).toBe(true);

    });

    it('rebuilds a damaged hot body from the chunks, and never serves one whose entry is gone', async () => {
      await start({ hotBodies: { dir: hotDir(), maxBytes: 1 << 30 } });
      const body = await nxBody();
      expect((await put('903', body)).status).toBe(200);
      await get('903');
      const [file] = await hotFiles();
      const bytes = await readFile(join(hotDir(), file!));
      bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0xff;
      await writeFile(join(hotDir(), file!), bytes);
      const back = await get('903');
      expect(back.status).toBe(200);
      expect(await untar(back.body)).toEqual(await untar(body));
      // The entry goes (invalidation, GC, eviction): its body is not served any more.
      await store.actionCache.delete('default', computeActionKey(['nx', 'default', '903']));
      expect((await get('903')).status).toBe(404);
    });

    it('stays within its bound, least recently used out', async () => {
      // Five bodies of ~5.3 kB (incompressible) and room for four.
      const bodies = await Promise.all([0, 1, 2, 3, 4].map(() => nxBody([{ header: { name: 'dist/x.bin' }, body: randomBytes(5_000) }])));
      expect(Math.max(...bodies.map((b) => b.length))).toBeLessThan(5_700);
      await start({ hotBodies: { dir: hotDir(), maxBytes: 4 * 5_700 } });
      for (const [i, b] of bodies.entries()) expect((await put(String(910 + i), b)).status).toBe(200);
      for (const h of ['910', '911', '912', '913', '910', '914']) expect((await get(h)).status).toBe(200); // 910 used again before 914 came
      const kept = (await hotFiles()).map((f) => f.split('.')[0]);
      expect(kept.sort()).toEqual(['nx-910', 'nx-912', 'nx-913', 'nx-914']);
    });
  });
});
