import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi';
import { openLocalStore, readAll, type LocalStore } from '@cascache/core';
import { createServer, type CascacheServer, type ServerOptions } from '../src';

type Entry = { header: Partial<tarStream.Header> & { name: string }; body?: string | Buffer };

async function tar(entries: Entry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    if (e.body === undefined) pack.entry(e.header);
    else pack.entry(e.header, e.body);
  }
  pack.finalize();
  return readAll(pack as unknown as AsyncIterable<Uint8Array>, 1 << 28);
}

/** A body shaped like turbo's: outputs relative to the repo root plus the task log, zstd-compressed. */
async function turboBody(text = 'export const a = 1;\n', extra: Entry[] = []): Promise<Buffer> {
  return Buffer.from(
    zstdCompress(
      await tar([
        { header: { name: 'packages/a/dist/', type: 'directory', mode: 0o755 } },
        { header: { name: 'packages/a/dist/index.js', mode: 0o644 }, body: text },
        { header: { name: 'packages/a/dist/cli', mode: 0o755 }, body: '#!/usr/bin/env node\n' },
        { header: { name: 'packages/a/dist/latest.js', type: 'symlink', linkname: 'index.js' } },
        { header: { name: 'packages/a/.turbo/turbo-build.log' }, body: '> a@1.0.0 build\n' },
        ...extra,
      ]),
    ),
  );
}

/** name -> content (base64), `-> target` for links, `dir`; plus modes. */
async function untarZst(body: Buffer): Promise<Record<string, string>> {
  const extract = tarStream.extract();
  Readable.from([Buffer.from(zstdDecompress(body))]).pipe(extract as unknown as NodeJS.WritableStream);
  const out: Record<string, string> = {};
  for await (const e of extract) {
    const bytes = await readAll(e as unknown as AsyncIterable<Uint8Array>, 1 << 28);
    const name = e.header.name.replace(/\/$/, '');
    out[name] = e.header.type === 'symlink' ? `-> ${e.header.linkname}` : e.header.type === 'directory' ? 'dir' : `${(e.header.mode ?? 0).toString(8)} ${bytes.toString('utf8')}`;
  }
  return out;
}

const RW = 'turbo-rw-token';
const RO = 'turbo-ro-token';
const HASH = '0123456789abcdef';

describe('Turborepo v8 remote cache API over a real listening server', () => {
  let dir: string;
  let store: LocalStore;
  let server: CascacheServer;
  let base: string;

  async function start(extra: Partial<ServerOptions> = {}): Promise<void> {
    server = createServer({
      blobs: store.blobs,
      actionCache: store.actionCache,
      tokens: { readWrite: [RW], readOnly: [RO] },
      ...extra,
    });
    await server.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  }
  const call = (method: string, path: string, init: { body?: Buffer | string; headers?: Record<string, string>; token?: string } = {}) =>
    fetch(`${base}${path}`, {
      method,
      body: init.body,
      headers: { authorization: `Bearer ${init.token ?? RW}`, ...(init.body ? { 'content-type': 'application/octet-stream' } : {}), ...init.headers },
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-turbo-'));
    store = await openLocalStore({ root: dir, secret: Buffer.alloc(32, 5) });
  });
  afterEach(async () => {
    await server.close();
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stores an artifact and serves it back as tar.zst with its duration; status, HEAD and query agree', async () => {
    await start();
    expect(await (await call('GET', '/v8/artifacts/status?slug=team1')).json()).toEqual({ status: 'enabled' });
    expect((await call('GET', `/v8/artifacts/${HASH}?slug=team1`)).status).toBe(404);
    const body = await turboBody();
    const put = await call('PUT', `/v8/artifacts/${HASH}?slug=team1`, { body, headers: { 'x-artifact-duration': '1234' } });
    expect(put.status).toBe(202);
    expect(await put.json()).toEqual({ urls: [`team1/${HASH}`] });

    const get = await call('GET', `/v8/artifacts/${HASH}?slug=team1`);
    expect(get.status).toBe(200);
    expect(get.headers.get('x-artifact-duration')).toBe('1234');
    expect(get.headers.get('x-artifact-tag')).toBeNull();
    expect(await untarZst(Buffer.from(await get.arrayBuffer()))).toEqual(await untarZst(body));

    const head = await call('HEAD', `/v8/artifacts/${HASH}?slug=team1`);
    expect(head.status).toBe(200);
    expect(head.headers.get('x-artifact-duration')).toBe('1234');
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    const q = await call('POST', '/v8/artifacts?slug=team1', { body: JSON.stringify({ hashes: [HASH, 'fedcba9876543210'] }), headers: { 'content-type': 'application/json' } });
    const answer = (await q.json()) as Record<string, { size: number; taskDurationMs: number } | null>;
    expect(answer.fedcba9876543210).toBeNull();
    expect(answer[HASH]).toEqual({ size: expect.any(Number), taskDurationMs: 1234 });
    expect(answer[HASH]!.size).toBeGreaterThan(0);
  });

  it('keeps teams apart, keys write-once, read-only tokens read-only, and rejects hostile bodies storing nothing', async () => {
    await start();
    expect((await call('PUT', `/v8/artifacts/${HASH}?slug=team1`, { body: await turboBody() })).status).toBe(202);
    expect((await call('GET', `/v8/artifacts/${HASH}?slug=team2`)).status).toBe(404);
    expect((await call('GET', `/v8/artifacts/${HASH}?teamId=team1`)).status).toBe(200); // teamId when there is no slug
    expect((await call('PUT', `/v8/artifacts/${HASH}?slug=team1`, { body: await turboBody('changed') })).status).toBe(409);
    expect((await call('PUT', `/v8/artifacts/1111111111111111?slug=team1`, { body: await turboBody(), token: RO })).status).toBe(403);
    expect((await call('GET', `/v8/artifacts/${HASH}?slug=team1`, { token: RO })).status).toBe(200);
    expect((await call('GET', `/v8/artifacts/${HASH}?slug=team1`, { token: 'wrong' })).status).toBe(401);
    expect((await call('GET', `/v8/artifacts/bad.hash?slug=team1`)).status).toBe(400);
    expect((await call('GET', `/v8/artifacts/${HASH}?slug=../x`)).status).toBe(400);
    expect((await call('PUT', `/v8/artifacts/2222222222222222?slug=team1`, { body: await turboBody('x', []), headers: { 'x-artifact-duration': 'soon' } })).status).toBe(400);

    const blobs = async () => {
      const all: string[] = [];
      for await (const b of store.blobs.list()) all.push(b.digest);
      return all.sort();
    };
    const before = await blobs();
    const big = Array.from({ length: 30_000 }, (_, i) => `line ${i}`).join('\n');
    const hostile = Buffer.from(zstdCompress(await tar([{ header: { name: 'dist/big.js' }, body: big }, { header: { name: '../escape' }, body: 'x' }])));
    const res = await call('PUT', `/v8/artifacts/3333333333333333?slug=team1`, { body: hostile });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('E_BAD_INPUT');
    expect((await call('GET', `/v8/artifacts/3333333333333333?slug=team1`)).status).toBe(404);
    // Nothing of the rejected upload stays behind: not even the 300 kB file before the bad entry.
    expect(await blobs()).toEqual(before);
    const notZstd = await call('PUT', `/v8/artifacts/4444444444444444?slug=team1`, { body: gzipSync(Buffer.from('not zstd')) });
    expect(notZstd.status).toBe(400);
  });

  it('returns a signed artifact byte for byte with its tag, and a damaged one as a miss', async () => {
    await start();
    const body = await turboBody('signed content\n'.repeat(5000));
    const tag = 'dGFnLW92ZXItdGhlLWV4YWN0LWJ5dGVz';
    expect((await call('PUT', `/v8/artifacts/${HASH}?slug=team1`, { body, headers: { 'x-artifact-tag': tag, 'x-artifact-duration': '7' } })).status).toBe(202);
    const get = await call('GET', `/v8/artifacts/${HASH}?slug=team1`);
    expect(get.headers.get('x-artifact-tag')).toBe(tag);
    expect(Buffer.from(await get.arrayBuffer())).toEqual(body);

    // Flip one byte of every chunk file the store holds: the answer must be a miss, not a cut body.
    for await (const b of store.blobs.list()) {
      const file = store.blobs.fileOf(b.digest)!;
      const bytes = await readFile(file);
      bytes[bytes.length - 1] ^= 0x01;
      await writeFile(file, bytes);
    }
    const damaged = await call('GET', `/v8/artifacts/${HASH}?slug=team1`);
    expect(damaged.status).toBe(404);
  });

  it('deduplicates identical outputs across Nx and Turborepo', async () => {
    await start();
    const shared = Array.from({ length: 4000 }, (_, i) => `export const v${i} = ${i * 7};`).join('\n');
    const nx = await tar([
      { header: { name: 'dist/libs/a/index.js' }, body: shared },
      { header: { name: 'terminalOutput' }, body: 'built' },
      { header: { name: 'code' }, body: Buffer.alloc(4) },
    ]);
    const nxPut = await call('PUT', '/v1/cache/123456789', { body: gzipSync(nx) });
    expect(nxPut.status).toBe(200);
    const nxStored = ((await nxPut.json()) as { bytesStored: number }).bytesStored;
    const turbo = Buffer.from(zstdCompress(await tar([{ header: { name: 'packages/a/dist/index.js' }, body: shared }])));
    expect((await call('PUT', `/v8/artifacts/${HASH}?slug=team1`, { body: turbo })).status).toBe(202);
    const report = (await (await call('POST', '/_cascache/report', { body: JSON.stringify({ prefix: 'turbo:team1:' }), headers: { 'content-type': 'application/json' } })).json()) as {
      stored: number;
      bytesStored: number;
      tasks: Array<{ id: string; stored: number }>;
    };
    expect(report.stored).toBe(1);
    expect(report.tasks).toEqual([expect.objectContaining({ id: `turbo:team1:${HASH}`, stored: 1 })]);
    // Only a new manifest: the file's chunks were stored by the Nx upload.
    expect(report.bytesStored).toBeLessThan(nxStored / 10);
  });

  it('counts turbo-local hits from events, and ignores what it saw itself', async () => {
    await start();
    const events = [
      { sessionId: 's', source: 'LOCAL', event: 'HIT', hash: HASH, duration: 5 },
      { sessionId: 's', source: 'REMOTE', event: 'MISS', hash: 'aaaaaaaaaaaaaaaa' },
      { nonsense: true },
    ];
    expect((await call('POST', '/v8/artifacts/events?slug=team1', { body: JSON.stringify(events), headers: { 'content-type': 'application/json' } })).status).toBe(200);
    const report = (await (await call('POST', '/_cascache/report', { body: JSON.stringify({ prefix: 'turbo:team1:' }), headers: { 'content-type': 'application/json' } })).json()) as { localHits: number; misses: number };
    expect(report).toMatchObject({ localHits: 1, misses: 0 });
    expect((await call('POST', '/v8/artifacts/events?slug=team1', { body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(400);
  });

  it('stores behind the answer on the agent, and a GET waits for it', async () => {
    await start({ deferIngest: { spoolDir: join(dir, 'v1', 'tmp') }, hotBodies: { dir: join(dir, 'v1', 'hot'), maxBytes: 1 << 24 } });
    const body = await turboBody();
    expect((await call('PUT', `/v8/artifacts/${HASH}?slug=team1`, { body, headers: { 'x-artifact-duration': '9' } })).status).toBe(202);
    const get = await call('GET', `/v8/artifacts/${HASH}?slug=team1`);
    expect(get.status).toBe(200);
    expect(get.headers.get('x-artifact-duration')).toBe('9');
    // The hot body is what turbo sent, byte for byte.
    expect(Buffer.from(await get.arrayBuffer())).toEqual(body);
  });
});
