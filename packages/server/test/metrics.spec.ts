// GET /metrics over a real listening server (listen(), as serve and the agent): the counters follow
// what happened, the store gauges equal the index, labels stay bounded, and the route needs a token
// where tokens are configured.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { readAll } from '@cascache/core';
import { listen, type Listening } from '../src';
import { MAX_NAMESPACE_LABELS } from '../src/metrics';

async function nxBody(text: string): Promise<Buffer> {
  const pack = tarStream.pack();
  pack.entry({ name: 'dist/a.js' }, text);
  pack.entry({ name: 'terminalOutput' }, 'ok\n');
  const code = Buffer.alloc(4);
  pack.entry({ name: 'code' }, code);
  pack.finalize();
  return gzipSync(await readAll(pack as unknown as AsyncIterable<Uint8Array>, 1 << 28));
}

/** Samples of the text exposition: `name{labels}` -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

describe('GET /metrics', () => {
  let dir: string;
  let l: Listening;
  const TOKEN = 'metrics-test-token-0123456789';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-metrics-'));
    l = await listen({ storeDir: dir, host: '127.0.0.1', port: 0, tokens: { readWrite: [TOKEN] }, secret: Buffer.alloc(32, 4), logger: false });
  });
  afterEach(async () => {
    await l.server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const auth = { authorization: `Bearer ${TOKEN}` };
  const scrape = async () => {
    const r = await fetch(`${l.url}/metrics`, { headers: auth });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return samples(await r.text());
  };

  it('counts lookups, uploads and bytes as they happen, by route pattern, and reads the store from its index', async () => {
    const body = await nxBody('export const a = 1;\n'.repeat(4000));
    expect((await fetch(`${l.url}/v1/cache/11`, { headers: auth })).status).toBe(404);
    expect((await fetch(`${l.url}/v1/cache/11`, { method: 'PUT', body, headers: auth })).status).toBe(200);
    const got = await fetch(`${l.url}/v1/cache/11`, { headers: auth });
    const served = Buffer.from(await got.arrayBuffer());
    expect((await fetch(`${l.url}/v1/cache/12`, { method: 'PUT', body, headers: auth })).status).toBe(200); // same content: all dedup

    const m = await scrape();
    expect(m.get('cascache_lookups_total{tool="nx",namespace="default",result="miss"}')).toBe(1);
    expect(m.get('cascache_lookups_total{tool="nx",namespace="default",result="hit"}')).toBe(1);
    expect(m.get('cascache_uploads_total{tool="nx",namespace="default",outcome="stored"}')).toBe(2);
    expect(m.get('cascache_received_bytes_total{tool="nx"}')).toBe(2 * body.length);
    expect(m.get('cascache_served_bytes_total{tool="nx"}')).toBe(served.length);
    const stored = m.get('cascache_stored_bytes_total{tool="nx"}')!;
    expect(stored).toBeGreaterThan(0);
    expect(m.get('cascache_deduplicated_bytes_total{tool="nx"}')).toBe(2 * body.length - stored);
    // Route patterns, never the URL: two hashes are one series.
    expect(m.get('cascache_http_requests_total{protocol="nx",route="/v1/cache/:hash",method="PUT",status="200"}')).toBe(2);
    expect(m.get('cascache_http_request_duration_seconds_count{protocol="nx",route="/v1/cache/:hash",method="GET"}')).toBe(2);
    expect([...m.keys()].some((k) => k.includes('/v1/cache/11'))).toBe(false);
    const c = l.store.index!.counts();
    expect(m.get('cascache_store_entries')).toBe(c.entries);
    expect(m.get('cascache_store_blobs')).toBe(c.blobs);
    expect(m.get('cascache_store_stored_bytes')).toBe(c.storedBytes);
    expect(m.get('cascache_store_logical_bytes')).toBe(c.logicalBytes);
  });

  it(`keeps namespace labels to ${MAX_NAMESPACE_LABELS} values, the rest as other`, async () => {
    for (let i = 0; i < MAX_NAMESPACE_LABELS + 8; i++) expect((await fetch(`${l.url}/v8/artifacts/h${i}?slug=team-${i}`, { headers: auth })).status).toBe(404);
    const m = await scrape();
    const teams = [...m.keys()].filter((k) => k.startsWith('cascache_lookups_total{tool="turbo"'));
    expect(teams).toHaveLength(MAX_NAMESPACE_LABELS + 1);
    expect(m.get('cascache_lookups_total{tool="turbo",namespace="other",result="miss"}')).toBe(8);
  });

  it('needs a token where tokens are configured', async () => {
    expect((await fetch(`${l.url}/metrics`)).status).toBe(401);
  });
});
