// Two servers (two machines' agents) with separate local stores behind one remote tier: a PUT on
// one is uploaded write-behind (flush waits for it); a GET on the other is served from the remote.
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { CascacheError, ErrorCodes, LayeredStore, MemoryObjectStore, openLocalStore, openRemoteTier, readAll } from '@cascache/core';
import { createServer, type CascacheServer } from '../src';
import { uploadLine } from '../src/agent-control';

const SECRET = Buffer.alloc(32, 4);

async function nxBody(text: string): Promise<Buffer> {
  const pack = tarStream.pack();
  pack.entry({ name: 'dist/app/main.js' }, text);
  pack.entry({ name: 'terminalOutput' }, '> built\n');
  const code = Buffer.alloc(4);
  pack.entry({ name: 'code' }, code);
  pack.finalize();
  return gzipSync(await readAll(pack as unknown as AsyncIterable<Uint8Array>, 1 << 28));
}

describe('createServer with remote tiers', () => {
  let dir: string;
  const servers: CascacheServer[] = [];
  const layers: LayeredStore[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-server-tiers-'));
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await Promise.all(layers.splice(0).map((l) => l.close()));
    await rm(dir, { recursive: true, force: true });
  });

  async function machine(name: string, objects: MemoryObjectStore): Promise<string> {
    const store = await openLocalStore({ root: join(dir, name), secret: SECRET });
    const layered = new LayeredStore({ local: store, remotes: [openRemoteTier({ url: 's3://team-bucket/nx' }, { objects })], secret: SECRET });
    layered.start();
    layers.push(layered);
    const server = createServer({ blobs: store.blobs, actionCache: store.actionCache, layered });
    await server.listen({ host: '127.0.0.1', port: 0 });
    servers.push(server);
    return `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  }

  it('a PUT on one machine is a hit on another after flush; the bytes come back identical', async () => {
    const objects = new MemoryObjectStore();
    const a = await machine('a', objects);
    const b = await machine('b', objects);
    const text = 'export const main = () => 42;\n'.repeat(2000);
    expect((await fetch(`${a}/v1/cache/123`, { method: 'PUT', body: await nxBody(text) })).status).toBe(200);
    const flushed = await (await fetch(`${a}/_cascache/flush`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ timeoutMs: 10_000 }) })).json();
    expect(flushed).toMatchObject({ drained: true, stats: { records: 1, packs: 1 } });
    expect(flushed.stats.bytesSent).toBeGreaterThan(0);
    expect(flushed.stats.bytesSent).toBeLessThan(text.length / 5);

    const res = await fetch(`${b}/v1/cache/123`);
    expect(res.status).toBe(200);
    const extract = tarStream.extract();
    extract.end(gunzipSync(Buffer.from(await res.arrayBuffer())));
    const files: Record<string, string> = {};
    for await (const e of extract) files[e.header.name] = (await readAll(e as unknown as AsyncIterable<Uint8Array>, 1 << 28)).toString();
    expect(files['dist/app/main.js']).toBe(text);
    expect(files.terminalOutput).toBe('> built\n');
    expect((await fetch(`${b}/v1/cache/999`)).status).toBe(404);
  });

  it('a dead remote turns lookups into misses (404) and keeps PUTs working', async () => {
    const objects = new MemoryObjectStore();
    objects.faults = () => {
      throw Object.assign(new Error('down'), {});
    };
    const a = await machine('a', objects);
    expect((await fetch(`${a}/v1/cache/5`)).status).toBe(404);
    expect((await fetch(`${a}/v1/cache/5`, { method: 'PUT', body: await nxBody('x') })).status).toBe(200);
    expect((await fetch(`${a}/v1/cache/5`)).status).toBe(200);
    const flushed = await (await fetch(`${a}/_cascache/flush`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ timeoutMs: 50 }) })).json();
    expect(flushed.drained).toBe(false);
  });

  it('a flush ends at once on a tier that refuses connections, and a report counts set-aside uploads', async () => {
    const post = async (base: string, path: string, body: unknown) => (await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json();
    const refusing = new MemoryObjectStore();
    refusing.faults = () => {
      throw new CascacheError(ErrorCodes.UNAVAILABLE, 'connect ECONNREFUSED 127.0.0.1:9');
    };
    const a = await machine('a', refusing);
    expect((await fetch(`${a}/v1/cache/6`, { method: 'PUT', body: await nxBody('y') })).status).toBe(200);
    // A CI wait of two minutes ends on the breaker's verdict, with the reason.
    const flushed = await post(a, '/_cascache/flush', { timeoutMs: 120_000 });
    expect(flushed).toMatchObject({ drained: false, unreachable: { 'memory://objects': expect.stringContaining('ECONNREFUSED') } });
    expect(uploadLine(flushed).split('\n')[1]).toBe('cascache: gave up waiting on memory://objects: it is unreachable (connect ECONNREFUSED 127.0.0.1:9); its uploads stay journaled');

    // Access denied is permanent: the upload is set aside, and every run's report says so.
    const denying = new MemoryObjectStore();
    denying.faults = () => {
      throw new CascacheError(ErrorCodes.CONFIG, 'AccessDenied');
    };
    const b = await machine('b', denying);
    expect((await fetch(`${b}/v1/cache/7`, { method: 'PUT', body: await nxBody('z') })).status).toBe(200);
    expect((await post(b, '/_cascache/flush', { timeoutMs: 120_000 })).failed).toEqual({ 'memory://objects': 1 });
    expect((await post(b, '/_cascache/report', { hashes: ['7'] })).setAside).toBe(1);
  });
});
