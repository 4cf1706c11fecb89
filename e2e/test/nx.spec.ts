/**
 * The main job, end to end: real nx 24 in a fresh workspace with 12 projects, our packages installed
 * from npm pack tarballs, the plugin starting a real agent.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { openLocalStore } from '@cascache/core';
import { ARTIFACTS, chromiumPath } from '../src/browser';
import { GRAPH, changeOneLine, dependentsOf, cleanEnv, cloneWorkspace, install, openWorkspace, removeOutputs, snapshotOutputs, stopAgent, tempWorkspaceDir, writeWorkspace, type Workspace } from '../src/nx-workspace';
import { packAll } from '../src/pack';

const ALL = Object.keys(GRAPH).sort();
function summary(stdout: string): { tasks: number; fromCascache: number; ran: number; received: number; stored: number } {
  const line = stdout.split('\n').find((l) => l.startsWith('cascache: '));
  if (!line) throw new Error(`no cascache summary line in:\n${stdout}`);
  const num = (re: RegExp): number => Number(re.exec(line)?.[1] ?? NaN);
  const bytes = (re: RegExp): number => {
    const m = re.exec(line);
    if (!m) return NaN;
    const unit = { B: 1, kB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 }[m[2] as 'B'];
    return Number(m[1]) * unit;
  };
  return {
    tasks: num(/(\d+) tasks/),
    fromCascache: num(/(\d+) from cascache/),
    ran: num(/(\d+) run/),
    received: bytes(/received ([\d.]+) (B|kB|MB|GB) of outputs/),
    stored: bytes(/stored ([\d.]+) (B|kB|MB|GB) new/),
  };
}

describe('Nx remote caching through cascache (real nx, real agent)', () => {
  let ws: Workspace;
  let storeDir: string;
  let first: Record<string, string>;
  const cleanups: string[] = [];

  beforeAll(() => {
    const t = packAll();
    const dir = tempWorkspaceDir();
    cleanups.push(dir);
    writeWorkspace(dir, { idleTimeoutMs: 300_000 });
    install(dir, [t.core, t.server, t.nx, t.cli]);
    ws = openWorkspace(dir);
    storeDir = join(dir, '.cascache');
  });

  afterAll(() => {
    stopAgent(storeDir);
    try {
      ws.nx(['daemon', '--stop']);
    } catch {
      /* no daemon */
    }
    // CASCACHE_E2E_KEEP=1 keeps the workspaces (and the agent log) for debugging.
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of cleanups) rmSync(d, { recursive: true, force: true });
  });

  it('1. a first run builds everything and stores every output', () => {
    const r = ws.nx(['run-many', '-t', 'build']);
    expect(ws.buildLog()).toEqual(ALL);
    expect(summary(r.stdout)).toMatchObject({ tasks: 12, fromCascache: 0, ran: 12 });
    expect(existsSync(join(storeDir, 'agent.json'))).toBe(true);
    const entries = readdirSync(join(storeDir, 'v1', 'ac', 'default')).flatMap((s) => readdirSync(join(storeDir, 'v1', 'ac', 'default', s)));
    expect(entries).toHaveLength(12);
    first = snapshotOutputs(ws.dir);
    // per project: dist, index.js, index.d.ts, run.sh, latest.js, empty/, assets/, assets/ünï cødé/, its file
    expect(Object.keys(first)).toHaveLength(12 * 8);
  });

  it('2. after nx reset and deleting every output, everything is restored from cascache, byte for byte', () => {
    ws.nx(['reset']);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    const r = ws.nx(['run-many', '-t', 'build'], { NX_PERF_LOGGING: 'true' });
    expect(ws.buildLog()).toEqual([]);
    // The plugin's worker process starts once: the one that loaded it serves the task hooks too.
    expect(`${r.stdout}${r.stderr}`.match(/start-plugin-worker:@cascache\/nx'/g)).toHaveLength(1);
    // This run only downloaded: the summary counts this run's uploads, not earlier ones.
    expect(summary(r.stdout)).toMatchObject({ tasks: 12, fromCascache: 12, ran: 0, received: 0, stored: 0 });
    expect(snapshotOutputs(ws.dir)).toEqual(first);
  });

  it('3. a one-line change in a leaf library rebuilds only it and its dependents, and stores little', () => {
    changeOneLine(ws.dir);
    ws.clearBuildLog();
    const r = ws.nx(['run-many', '-t', 'build']);
    first = snapshotOutputs(ws.dir);
    const changed = dependentsOf('lib-core');
    expect(ws.buildLog()).toEqual(changed);
    const s = summary(r.stdout);
    expect(s).toMatchObject({ tasks: 12, ran: changed.length, fromCascache: 0 });
    expect(s.received).toBeGreaterThan(0);
    // Nx sent whole tar.gz bodies; cascache kept only the chunks that changed.
    expect(s.stored).toBeLessThan(s.received * 0.2);
  });

  it('4. a second clone pointing at the same store restores everything on its first run', () => {
    const clone = tempWorkspaceDir('cascache-nx-clone-');
    cleanups.push(clone);
    cloneWorkspace(ws.dir, clone);
    const b = openWorkspace(clone);
    const r = b.nx(['run-many', '-t', 'build'], { CASCACHE_DIR: storeDir });
    expect(b.buildLog()).toEqual([]);
    expect(summary(r.stdout)).toMatchObject({ tasks: 12, fromCascache: 12, ran: 0 });
    expect(snapshotOutputs(clone)).toEqual(first);
    expect(existsSync(join(clone, '.cascache'))).toBe(false);
  });

  it('5. works with the Nx daemon on as well', () => {
    ws.nx(['reset']);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    const runsDir = join(storeDir, 'v1', 'runs');
    const before = new Set(readdirSync(runsDir));
    const r = ws.nx(['run-many', '-t', 'build'], { NX_DAEMON: 'true' });
    expect(ws.buildLog()).toEqual([]);
    expect(r.stdout.match(/\[remote cache\]/g)).toHaveLength(12);
    expect(snapshotOutputs(ws.dir)).toEqual(first);
    // With the daemon, Nx runs postTasksExecution inside the daemon, whose output never reaches this
    // terminal; the run is still recorded in the store.
    const added = readdirSync(runsDir).filter((f) => !before.has(f));
    expect(added).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(runsDir, added[0]!), 'utf8')).summary).toMatchObject({ tasks: 12, fromCascache: 12, ran: 0 });
  });

  it('6. cascache stats reads the index the agent kept current, with hits and time saved per run', () => {
    const cascache = (...args: string[]) => {
      const r = spawnSync(join(ws.dir, 'node_modules', '.bin', 'cascache'), [...args, '--store-dir', storeDir], { cwd: ws.dir, encoding: 'utf8', env: cleanEnv() });
      if (r.status !== 0) throw new Error(`cascache ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
      return r;
    };
    const r = cascache('stats', '--json');
    // The agent (still running) and the plugin's run records kept the index current: nothing to rebuild.
    expect(r.stderr).not.toContain('rebuilt');
    const stats = JSON.parse(r.stdout);
    const acFiles = readdirSync(join(storeDir, 'v1', 'ac', 'default')).flatMap((sh) => readdirSync(join(storeDir, 'v1', 'ac', 'default', sh)));
    expect(stats.store.acEntries).toBe(acFiles.length);
    const changed = dependentsOf('lib-core').length;
    // Runs 1-5 (the clone's run used this store too): 36 tasks served by cascache, 12 + `changed` built.
    expect(stats.tools[0]).toMatchObject({ tool: 'nx', runs: 5, hits: 36, misses: 12 + changed });
    expect(stats.tools[0].savedMs).toBeGreaterThan(0);
    // What the agent wrote incrementally equals a rebuild from the files.
    expect(cascache('verify', '--rebuild-index').stdout).toContain('no problems found');
    expect(JSON.parse(cascache('stats', '--json').stdout)).toEqual(stats);
  });

  it('7. a chunk damaged on disk costs its task the hit, never the run, and that task\'s upload repairs it', async () => {
    // Nx 24 fails the whole run on a body that ends early, so the agent must find the damage first.
    stopAgent(storeDir);
    const store = await openLocalStore({ root: storeDir, secret: null, index: false });
    // Each project's output and its chunks; one chunk of one bundle is damaged, and every project
    // whose output holds that chunk (bundles share their dependencies' code) loses its hit.
    const chunksOf = new Map<string, Set<string>>();
    let indexChunk: string | undefined;
    for await (const { namespace, key } of store.entries.list()) {
      const hit = await store.actionCache.get(namespace, key);
      const files = (hit?.manifest.entries ?? []).filter((e) => e.type === 'file');
      const project = files.map((f) => /^packages\/([^/]+)\/dist\//.exec(f.path)?.[1]).find(Boolean);
      if (project) chunksOf.set(project, new Set(files.flatMap((f) => (f.type === 'file' ? f.chunks : []))));
      const index = files.find((f) => f.path === 'packages/lib-util/dist/index.js');
      if (index?.type === 'file') indexChunk = index.chunks[index.chunks.length - 1];
    }
    expect([...chunksOf.keys()].sort()).toEqual(ALL);
    const chunk = indexChunk!;
    const loc = store.blobs.locationOf(chunk)!;
    const bytes = readFileSync(loc.file);
    bytes[loc.offset + loc.length - 1]! ^= 0x01; // the frame's last payload byte
    writeFileSync(loc.file, bytes);
    store.close();
    const damaged = ALL.filter((p) => chunksOf.get(p)!.has(chunk));
    expect(damaged).toContain('lib-util');
    expect(damaged.length).toBeLessThan(ALL.length);
    // The agent also keeps recent bodies whole, verified against their names: damage those too.
    const hot = join(storeDir, 'v1', 'hot');
    for (const name of readdirSync(hot).filter((n) => n.endsWith('.body'))) {
      const body = readFileSync(join(hot, name));
      body[body.length - 1]! ^= 0x01;
      writeFileSync(join(hot, name), body);
    }

    ws.nx(['reset']);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    const r = ws.nx(['run-many', '-t', 'build']);
    expect(ws.buildLog()).toEqual(damaged);
    expect(summary(r.stdout)).toMatchObject({ tasks: 12, fromCascache: 12 - damaged.length, ran: damaged.length });
    expect(snapshotOutputs(ws.dir)).toEqual(first);

    ws.nx(['reset']);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    expect(summary(ws.nx(['run-many', '-t', 'build']).stdout)).toMatchObject({ tasks: 12, fromCascache: 12, ran: 0 });
    expect(snapshotOutputs(ws.dir)).toEqual(first);
  });
  it('8. cascache dashboard draws the same figures as cascache stats, in a real Chromium, with no console errors', async () => {
    const bin = join(ws.dir, 'node_modules', '.bin', 'cascache');
    const stats = JSON.parse(execFileSync(bin, ['stats', '--json', '--store-dir', storeDir], { cwd: ws.dir, encoding: 'utf8', env: cleanEnv() }));
    const server = spawn(bin, ['dashboard', '--port', '0', '--store-dir', storeDir], { cwd: ws.dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: server.stdout! }).once('line', resolve);
        server.once('exit', (code) => reject(new Error(`cascache dashboard exited with ${code}`)));
      });
      const browser = await chromium.launch({ executablePath: chromiumPath() });
      try {
        const page = await browser.newPage({ viewport: { width: 1240, height: 1100 } });
        const problems: string[] = [];
        page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
        page.on('pageerror', (e) => problems.push(e.message));
        page.on('requestfailed', (r) => problems.push(`${r.url()} failed`));
        await page.goto(url);
        await page.waitForSelector('body[data-state="ready"]');
        const value = (selector: string) => page.$eval(selector, (el) => (el as HTMLElement).dataset.value);
        // The tiles and every tool row are the stats' own numbers.
        expect(Number(await value('#entries'))).toBe(stats.store.acEntries);
        expect(Number(await value('#stored'))).toBe(stats.store.storedBytes);
        // Each cell's raw value; the tool's name is its text; a figure the store does not know has none.
        const tools = await page.$$eval('#tools tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td, i) => (i === 0 ? td.textContent : (td.dataset.value ?? null)))));
        expect(tools).toEqual(stats.tools.map((t: Record<string, number | string | null>) => [t.tool, t.runs, t.hits, t.localHits, t.misses, t.hitRate, t.savedMs].map((v) => (v === null ? null : String(v)))));
        const looked = stats.tools.reduce((n: number, t: Record<string, number>) => n + t.hits + t.localHits + t.misses, 0);
        const served = stats.tools.reduce((n: number, t: Record<string, number>) => n + t.hits + t.localHits, 0);
        expect(Number(await value('#hit-rate'))).toBeCloseTo(served / looked, 10);
        const runs = await page.$$eval('#runs tbody tr', (rows) => rows.map((r) => Number((r.children[1] as HTMLElement).dataset.value)));
        expect(runs).toEqual(stats.runs.map((r: { startTime: number }) => r.startTime));
        const misses = await page.$$eval('#misses tbody tr', (rows) => rows.map((r) => r.children[0]!.textContent));
        expect(misses).toEqual(stats.topMisses.map((t: { task: string }) => t.task));
        expect(await page.$$eval('canvas', (cs) => cs.map((c) => (c as HTMLCanvasElement).width > 0))).toEqual([true, true]);
        expect(problems).toEqual([]);
        mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
      } finally {
        await browser.close();
      }
    } finally {
      server.kill('SIGTERM');
    }
  });
});
