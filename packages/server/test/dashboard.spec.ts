// The dashboard's routes on a real listening server (listen(), as serve): the page and its files are
// served with a strict CSP and need no token; its data needs a read token and equals the store's
// report. The page itself is driven in a real Chromium by the e2e suite (e2e/test/nx.spec.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recordRun, storeReport, storeStats } from '@cascache/core';
import { listen, listenDashboard, type Listening } from '../src';

describe('the dashboard routes', () => {
  let dir: string;
  let l: Listening;
  const TOKEN = 'dashboard-test-token-0123456789';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascache-dashboard-'));
    l = await listen({ storeDir: dir, host: '127.0.0.1', port: 0, tokens: { readOnly: [TOKEN] }, secret: null, logger: false });
  });
  afterEach(async () => {
    await l.server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the page and its files without a token, under a CSP that allows only its own scripts', async () => {
    const page = await fetch(`${l.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await page.text();
    for (const src of html.match(/\/dashboard\/[\w.]+/g)!) {
      const r = await fetch(`${l.url}${src}`);
      expect([src, r.status]).toEqual([src, 200]);
      expect((await r.arrayBuffer()).byteLength).toBeGreaterThan(100);
    }
    expect((await fetch(`${l.url}/dashboard/..%2Fpackage.json`)).status).toBe(404);
    expect((await fetch(`${l.url}/dashboard/constructor`)).status).toBe(404);
  });

  it("answers its data only with a token, and the data is the store's report", async () => {
    const t = 1_700_000_000_000;
    await recordRun(dir, { tool: 'nx', startTime: t, tasks: [{ id: 'a:build', hash: 'h', status: 'success', ms: 900 }] });
    await recordRun(dir, { tool: 'nx', startTime: t + 1, tasks: [{ id: 'a:build', hash: 'h', status: 'remote-cache' }] });
    expect((await fetch(`${l.url}/_cascache/dashboard`)).status).toBe(401);
    const r = await fetch(`${l.url}/_cascache/dashboard`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(r.status).toBe(200);
    const data = await r.json();
    const expected = storeReport(l.store.index, await storeStats(l.store), { runs: 50, topMisses: 10 });
    expect({ store: data.store, tools: data.tools, runs: data.runs, topMisses: data.topMisses }).toEqual(JSON.parse(JSON.stringify(expected)));
    expect(data.tools[0]).toMatchObject({ tool: 'nx', hits: 1, misses: 1, savedMs: 900 });
    expect(data).toMatchObject({ storeDir: dir, signing: 'none', tiers: [] });
  });

  it('refuses to serve a local store beyond loopback (it has no tokens)', async () => {
    await expect(listenDashboard(l.store, { host: '0.0.0.0', port: 0 })).rejects.toMatchObject({ code: 'E_CONFIG' });
  });
});
