// The HTTP tier: core's HttpTierClient against this package's chunk API on a real listening server.
// The BlobStore conformance suite runs against it; then two machines share a team server.
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  computeActionKey,
  digestOf,
  encodeBlob,
  encodeFrameRecord,
  FRAME_STREAM_TYPE,
  ingestDirectory,
  LayeredStore,
  materializeToDirectory,
  openLocalStore,
  openRemoteTier,
  type HttpBlobStore,
  type LocalStore,
  type RemoteTier,
} from '@cascache/core';
import { blobStoreConformance } from '../../core/test/support/conformance';
import { createServer, type CascacheServer } from '../src';

const SECRET = Buffer.alloc(32, 6);
const RW = 'rw-token-0123456789';
const RO = 'ro-token-0123456789';
const ADMIN = 'admin-token-0123456789';

async function teamServer(): Promise<{ url: string; store: LocalStore; close: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'cascache-team-'));
  const store = await openLocalStore({ root: dir, secret: SECRET });
  const server: CascacheServer = createServer({
    blobs: store.blobs,
    actionCache: store.actionCache,
    tokens: { readWrite: [RW], readOnly: [RO], admin: [ADMIN] },
    chunkApi: { blobs: store.blobs, entries: store.entries, roots: store.roots },
  });
  await server.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  return { url, store, close: async () => (await server.close(), await rm(dir, { recursive: true, force: true })) };
}

blobStoreConformance('http tier (chunk API of a real server)', async () => {
  const team = await teamServer();
  const tier = openRemoteTier({ url: `${team.url}/`, token: RW });
  return {
    store: tier.blobs,
    corrupt: async (d) => {
      const path = team.store.blobs.pathOf(d);
      const bytes = await readFile(path);
      bytes[bytes.length - 1]! ^= 0xff;
      await writeFile(path, bytes);
    },
    cleanup: team.close,
  };
});

describe('two machines share a team server as an HTTP tier', () => {
  let dir: string;
  let team: Awaited<ReturnType<typeof teamServer>>;
  const layers: LayeredStore[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-http-tier-'));
    team = await teamServer();
  });
  afterEach(async () => {
    await Promise.all(layers.splice(0).map((l) => l.close()));
    await team.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function machine(name: string, token: string): Promise<{ local: LocalStore; layered: LayeredStore; tier: RemoteTier; warnings: string[] }> {
    const local = await openLocalStore({ root: join(dir, name), secret: SECRET });
    const tier = openRemoteTier({ url: team.url, token });
    const warnings: string[] = [];
    const layered = new LayeredStore({ local, remotes: [tier], secret: SECRET, sync: true, onEvent: (e) => e.type === 'warning' && warnings.push(`${e.code} ${e.message}`) });
    layers.push(layered);
    return { local, layered, tier, warnings };
  }

  it('uploads only missing chunks and restores on another machine; a read-only token reads but cannot write', async () => {
    const src = join(dir, 'src');
    await mkdir(src, { recursive: true });
    for (let i = 0; i < 6; i++) await writeFile(join(src, `f${i}.js`), `export const f${i} = ${JSON.stringify('y'.repeat(20_000 + i))};\n`);
    const a = await machine('a', RW);
    const r = await ingestDirectory(a.local.blobs, src);
    const key = computeActionKey(['http', 'one']);
    await a.local.actionCache.put('default', key, { manifest: r.digest, size: r.logicalBytes });
    await a.layered.recordUpload({ kind: 'ac', namespace: 'default', key });
    expect(a.warnings).toEqual([]);
    expect(a.layered.stats).toMatchObject({ records: 1 });
    expect(await team.store.entries.get('default', key)).not.toBeNull();
    // Range reads of one blob: exactly the bytes asked for.
    const chunk = r.manifest.entries.find((e) => e.type === 'file' && e.size > 10_000);
    const d = chunk && chunk.type === 'file' ? chunk.chunks[0]! : '';
    const whole = (await team.store.blobs.getBuffer(d))!;
    const part = await (a.tier.blobs as HttpBlobStore).getRange(d, 100, 50);
    expect(part!.equals(whole.subarray(100, 150))).toBe(true);

    const b = await machine('b', RO);
    const hit = await b.layered.lookup('default', key);
    expect(hit).not.toBeNull();
    await materializeToDirectory(b.local.blobs, hit!.manifest, join(dir, 'out'));
    for (let i = 0; i < 6; i++) expect(await readFile(join(dir, 'out', `f${i}.js`), 'utf8')).toBe(await readFile(join(src, `f${i}.js`), 'utf8'));

    // The read-only machine's own upload is refused by the server and set aside, not retried forever.
    await writeFile(join(src, 'f0.js'), 'changed');
    const r2 = await ingestDirectory(b.local.blobs, src);
    const key2 = computeActionKey(['http', 'two']);
    await b.local.actionCache.put('default', key2, { manifest: r2.digest, size: r2.logicalBytes });
    await b.layered.recordUpload({ kind: 'ac', namespace: 'default', key: key2 });
    expect(b.warnings.some((w) => w.startsWith('E_CONFIG') && /set aside/.test(w))).toBe(true);
    expect(await team.store.entries.get('default', key2)).toBeNull();
  });

  it('keeps entries write-once for read-write tokens: replacing a servable entry or deleting one takes an admin token', async () => {
    const key = computeActionKey(['test', 'write-once']);
    const other = await openLocalStore({ root: join(dir, 'signer'), secret: SECRET });
    const entryFor = async (ns: string, manifest: string): Promise<Buffer> => {
      await other.actionCache.put(ns, key, { manifest, size: 1 });
      const bytes = (await other.entries.get(ns, key))!;
      await other.entries.delete(ns, key);
      return bytes;
    };
    const served = await entryFor('default', digestOf('the output main built'));
    const poison = await entryFor('default', digestOf('a poisoned output'));
    const url = `${team.url}/cas/v1/ac/default/${key}`;
    const put = (bytes: Buffer | string, token: string, replace = false) =>
      fetch(`${url}${replace ? '?replace=1' : ''}`, { method: 'PUT', body: bytes, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' } });
    expect((await put(served, RW)).status).toBe(201);
    expect((await put('garbage', RW, true)).status).toBe(400); // not an entry anyone could serve
    expect((await put(await entryFor('default', digestOf('x')), RW).then((r) => r.status))).toBe(409);
    const replaced = await put(poison, RW, true);
    expect(replaced.status).toBe(409);
    expect(Buffer.from(await replaced.arrayBuffer())).toEqual(served);
    expect((await fetch(url, { method: 'DELETE', headers: { authorization: `Bearer ${RW}` } })).status).toBe(403);
    expect(await team.store.entries.get('default', key)).toEqual(served);

    // An entry readers can never serve (tampered in the store) may be replaced by any writer: that heals it.
    await team.store.entries.replace('default', key, Buffer.from('{"tampered":true}'));
    expect((await put(served, RW, true)).status).toBe(201);
    expect(await team.store.entries.get('default', key)).toEqual(served);
    // An admin token may do both.
    expect((await put(poison, ADMIN, true)).status).toBe(201);
    expect((await fetch(url, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(204);
    other.close();
  });

  it('rejects a frame that does not match its digest and stores nothing', async () => {
    const body = encodeFrameRecord(digestOf('claimed'), encodeBlob(Buffer.from('actual bytes')));
    const res = await fetch(`${team.url}/cas/v1/blobs`, { method: 'POST', body, headers: { authorization: `Bearer ${RW}`, 'content-type': FRAME_STREAM_TYPE } });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toBe('E_INTEGRITY');
    expect((await team.store.blobs.has([digestOf('claimed'), digestOf('actual bytes')])).size).toBe(0);
    // The batch-read route is the literal path /cas/v1/blobs:read, not a parameter after "blobs".
    expect((await fetch(`${team.url}/cas/v1/blobsXYZ`, { method: 'POST', body: '{}', headers: { authorization: `Bearer ${RW}`, 'content-type': 'application/json' } })).status).toBe(404);
    const unauth = await fetch(`${team.url}/cas/v1/missing`, { method: 'POST', body: JSON.stringify({ digests: [] }), headers: { 'content-type': 'application/json' } });
    expect(unauth.status).toBe(401);
  });
});
