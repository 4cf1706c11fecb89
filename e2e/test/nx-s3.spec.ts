/**
 * Two clones, separate local stores, one S3 (a real s3rver process): real nx 24 with the plugin's
 * `tiers` option. Clone A builds and (as a CI job) waits for its uploads, its run record among them;
 * clone B's first run prefetches A's run and restores everything from S3; after a one-line change in
 * A, the bytes A uploads are measured and reported.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { S3ObjectStore } from '@cascache/core';
import { join } from 'node:path';
import { changeOneLine, cloneWorkspace, install, openWorkspace, snapshotOutputs, stopAgent, tempWorkspaceDir, writeWorkspace, type Workspace } from '../src/nx-workspace';
import { packAll } from '../src/pack';
import { startS3Server, type S3Server } from '../../tools/s3rver';

const BUCKET = 'cascache-e2e';
const SECRET = 'e2e-shared-signing-secret-0123456789abcdef';

/** `cascache: uploaded 41.2 kB to remote tiers (1 pack); dedup saved 3.1 MB; nothing pending`. */
function uploadLine(stdout: string): { uploaded: number; dedupSaved: number; drained: boolean } {
  const line = stdout.split('\n').find((l) => l.startsWith('cascache: uploaded'));
  if (!line) throw new Error(`no upload line in:\n${stdout}`);
  const bytes = (re: RegExp): number => {
    const m = re.exec(line)!;
    return Number(m[1]) * { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[m[2] as 'B'];
  };
  return { uploaded: bytes(/uploaded ([\d.]+) (B|kB|MB|GB)/), dedupSaved: bytes(/dedup saved ([\d.]+) (B|kB|MB|GB)/), drained: line.includes('nothing pending') };
}

function received(stdout: string): number {
  const m = /received ([\d.]+) (B|kB|MB|GB) of outputs/.exec(stdout)!;
  return Number(m[1]) * { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[m[2] as 'B'];
}

/** Every object in the e2e bucket: key -> size. */
async function bucket(): Promise<Map<string, number>> {
  const store = new S3ObjectStore({ bucket: BUCKET, endpoint: s3Endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const out = new Map<string, number>();
  for await (const o of store.list('')) out.set(o.key, o.size);
  return out;
}
let s3Endpoint = '';

describe('two clones share one S3 tier (real nx, real agents, s3rver)', () => {
  let s3: S3Server;
  let a: Workspace;
  let b: Workspace;
  const dirs: string[] = [];
  let env: Record<string, string>;

  beforeAll(async () => {
    s3 = await startS3Server([BUCKET]);
    s3Endpoint = s3.endpoint;
    const t = packAll();
    const dirA = tempWorkspaceDir('cascache-s3-a-');
    const dirB = tempWorkspaceDir('cascache-s3-b-');
    dirs.push(dirA, dirB);
    writeWorkspace(dirA, { idleTimeoutMs: 300_000, tiers: [`s3://${BUCKET}/team?endpoint=${encodeURIComponent(s3.endpoint)}&forcePathStyle=true`] });
    install(dirA, [t.core, t.server, t.nx, t.cli]);
    // A git repository on branch main: run records name the branch and commit they built.
    const git = (...args: string[]) => execFileSync('git', ['-c', 'user.email=e2e@cascache.invalid', '-c', 'user.name=e2e', ...args], { cwd: dirA, stdio: 'ignore' });
    git('init', '-q', '-b', 'main');
    git('add', '-A');
    git('commit', '-qm', 'e2e workspace');
    rmSync(dirB, { recursive: true, force: true });
    cloneWorkspace(dirA, dirB);
    // Two machines: each clone gets its own home, or Nx 24 would share its local cache between
    // clones of one repository (~/.nx/<repo>/cache) and B would never ask cascache.
    const home = () => {
      const h = tempWorkspaceDir('cascache-home-');
      dirs.push(h);
      return { HOME: h };
    };
    const envA = home();
    const envB = home();
    const ws = (w: Workspace, extra: Record<string, string>): Workspace => ({ ...w, nx: (args, e = {}) => w.nx(args, { ...extra, ...e }) });
    a = ws(openWorkspace(dirA), envA);
    b = ws(openWorkspace(dirB), envB);
    env = { CI: 'true', CASCACHE_SECRET: SECRET, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  });

  afterAll(async () => {
    for (const d of dirs) stopAgent(join(d, '.cascache'));
    await s3?.close();
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  let outputsA: Record<string, string>;

  it('clone A builds everything; the CI run ends with every upload sent', () => {
    const r = a.nx(['run-many', '-t', 'build'], env);
    expect(a.buildLog()).toHaveLength(12);
    const up = uploadLine(r.stdout);
    expect(up.drained).toBe(true);
    expect(up.uploaded).toBeGreaterThan(10_000);
    outputsA = snapshotOutputs(a.dir);
  });

  it("A's run is shared in the bucket: its branch, commit and the 12 entries it produced", async () => {
    const runs = [...(await bucket()).keys()].filter((k) => k.startsWith('team/v1/runs/nx/'));
    expect(runs).toHaveLength(1);
  });

  it("clone B's first run prefetches A's run and restores all 12 outputs from S3, byte for byte, building nothing", async () => {
    const r = b.nx(['run-many', '-t', 'build'], env);
    expect(b.buildLog()).toEqual([]);
    expect(r.stdout).toMatch(/12 tasks, 12 from cascache/);
    expect(snapshotOutputs(b.dir)).toEqual(outputsA);
    // B's agent found A's run on main (same commit) and fetched what it lists, as Nx asked or before.
    const info = JSON.parse(readFileSync(join(b.dir, '.cascache', 'agent.json'), 'utf8'));
    let state: { running: boolean; report: Record<string, unknown> | null } = { running: true, report: null };
    for (const end = Date.now() + 30_000; state.running && Date.now() < end; ) {
      state = (await (await fetch(`http://127.0.0.1:${info.port}/_cascache/prefetch`, { headers: { authorization: `Bearer ${info.token}` } })).json()) as typeof state;
      if (state.running) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(state.report).toMatchObject({ entries: 12, missing: 0, run: { branch: 'main', commit: expect.stringMatching(/^[0-9a-f]{40}$/) } });
    expect((state.report!.local as number) + (state.report!.fetched as number)).toBe(12);
  });

  it('after a one-line change in A, A uploads only what changed (measured and reported)', async () => {
    const before = await bucket();
    changeOneLine(a.dir);
    a.clearBuildLog();
    const r = a.nx(['run-many', '-t', 'build'], env);
    expect(a.buildLog()).toHaveLength(10);
    const up = uploadLine(r.stdout);
    const body = received(r.stdout);
    // eslint-disable-next-line no-console
    console.log(`one-line change: A uploaded ${up.uploaded} B to S3 for ${body} B of Nx tar.gz bodies (${((100 * up.uploaded) / body).toFixed(1)}%); dedup saved ${up.dedupSaved} B`);
    const after = await bucket();
    const added = [...after].filter(([k]) => !before.has(k));
    const byKind = new Map<string, { n: number; bytes: number }>();
    for (const [k, size] of added) {
      const kind = k.split('/')[2]!;
      const e = byKind.get(kind) ?? { n: 0, bytes: 0 };
      byKind.set(kind, { n: e.n + 1, bytes: e.bytes + size });
    }
    // eslint-disable-next-line no-console
    console.log(`new objects: ${[...byKind].map(([k, v]) => `${k}: ${v.n} objects, ${v.bytes} B`).join('; ')}`);
    expect(up.drained).toBe(true);
    expect(up.uploaded).toBeLessThan(body * 0.1);
    expect(up.dedupSaved).toBeGreaterThan(up.uploaded);
  });
});
