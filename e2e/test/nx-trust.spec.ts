/**
 * Cache poisoning from a pull-request build, with real nx 24, real agents and one S3 (s3rver).
 *
 * The attacker is a PR job that holds everything a shared-secret cache hands CI: bucket credentials
 * and CASCACHE_SECRET. It builds the commit main is about to build, with outputs it poisoned (an
 * environment variable Nx does not hash), and writes them into namespace `main`, configuring its own
 * agent to trust the secret there. Side by side:
 * - a reader that trusts the secret (what any shared-secret cache does) restores the poison;
 * - with `trustedKeys: {main: [main CI's key]}` in nx.json, main's CI and every reader ignore the
 *   forged entries (and say so), main's CI builds and signs its own, and readers with no secret at
 *   all restore main's outputs byte for byte; the PR's own namespace serves the PR only.
 * Then key rotation: main CI signs with a new key while readers trust both.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { generateSigningKey } from '@cascache/core';
import { changeOneLine, cloneWorkspace, install, openWorkspace, removeOutputs, snapshotOutputs, stopAgent, tempWorkspaceDir, writeWorkspace, type Workspace } from '../src/nx-workspace';
import { packAll } from '../src/pack';
import { startS3Server, type S3Server } from '../../tools/s3rver';

const BUCKET = 'cascache-trust';
const SECRET = 'e2e-shared-signing-secret-0123456789abcdef';

describe('a PR build cannot poison main (real nx, Ed25519 keys, namespaces, s3rver)', () => {
  let s3: S3Server;
  const dirs: string[] = [];
  const clones = new Map<string, Workspace>();
  const mainKey = generateSigningKey();
  const nextKey = generateSigningKey();
  let base: Record<string, string>;

  /** A machine: its own clone, its own HOME (Nx's local cache), its own store. */
  function machine(name: string): Workspace {
    const known = clones.get(name);
    if (known) return known;
    const dir = tempWorkspaceDir(`cascache-trust-${name}-`);
    const home = tempWorkspaceDir('cascache-home-');
    dirs.push(dir, home);
    rmSync(dir, { recursive: true, force: true });
    cloneWorkspace(dirs[0]!, dir);
    const w = openWorkspace(dir);
    const ws: Workspace = { ...w, nx: (args, env = {}) => w.nx(args, { HOME: home, ...env }) };
    clones.set(name, ws);
    return ws;
  }
  const run = (w: Workspace, env: Record<string, string>) => w.nx(['run-many', '-t', 'build'], { ...base, ...env });
  /** From the summary line: tasks served by cascache and tasks run. */
  const counts = (stdout: string): { fromCascache: number; ran: number } => {
    const m = /cascache: 12 tasks, (\d+) from cascache, (?:\d+ from Nx's local cache, )?(\d+) run/.exec(stdout);
    if (!m) throw new Error(`no summary line in:\n${stdout}`);
    return { fromCascache: Number(m[1]), ran: Number(m[2]) };
  };

  beforeAll(async () => {
    s3 = await startS3Server([BUCKET]);
    const t = packAll();
    const origin = tempWorkspaceDir('cascache-trust-origin-');
    dirs.push(origin);
    // Every clone trusts main CI's key for `main` and reads it first; that is all nx.json says.
    writeWorkspace(origin, {
      idleTimeoutMs: 300_000,
      tiers: [`s3://${BUCKET}/team?endpoint=${encodeURIComponent(s3.endpoint)}&forcePathStyle=true`],
      trustedKeys: { main: [mainKey.publicKey] },
      readNamespaces: ['main'],
    });
    // The attacker's lever: an output that depends on something Nx does not hash.
    appendFileSync(join(origin, 'build.js'), "if (process.env.E2E_POISON) fs.writeFileSync('dist/index.js', 'stealCredentials();\\n');\n");
    install(origin, [t.core, t.server, t.nx, t.cli]);
    const git = (...args: string[]) => execFileSync('git', ['-c', 'user.email=e2e@cascache.invalid', '-c', 'user.name=e2e', ...args], { cwd: origin, stdio: 'ignore' });
    git('init', '-q', '-b', 'main');
    git('add', '-A');
    git('commit', '-qm', 'e2e workspace');
    base = { CI: 'true', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  });

  afterAll(async () => {
    for (const d of dirs) stopAgent(join(d, '.cascache'));
    await s3?.close();
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  let poisoned: Record<string, string>;
  let good: Record<string, string>;

  it('the attacker, holding the secret and the bucket, writes poisoned outputs into main signed with the secret', () => {
    const pr = machine('attacker');
    // It overrides the keys nx.json trusts, so its own agent signs `main` entries with the secret.
    const r = run(pr, { CASCACHE_SECRET: SECRET, CASCACHE_TRUSTED_KEYS: '{}', CASCACHE_NAMESPACE: 'main', E2E_POISON: '1' });
    expect(counts(r.stdout)).toEqual({ fromCascache: 0, ran: 12 });
    expect(r.stdout).toMatch(/cascache: uploaded .*nothing pending/);
    poisoned = snapshotOutputs(pr.dir);
    expect(poisoned['app-web/dist/index.js']).toBeDefined();
  });

  it('side by side: a reader that trusts the shared secret (any shared-secret cache) restores the poison', () => {
    const victim = machine('hmac-reader');
    const r = run(victim, { CASCACHE_SECRET: SECRET, CASCACHE_TRUSTED_KEYS: '{}' });
    expect(counts(r.stdout)).toEqual({ fromCascache: 12, ran: 0 });
    expect(victim.buildLog()).toEqual([]);
    expect(snapshotOutputs(victim.dir)).toEqual(poisoned);
  });

  it("main's CI, which trusts only its key for main, ignores the forged entries, says so, builds, and signs its own", () => {
    const ci = machine('main-ci');
    const r = run(ci, { CASCACHE_SECRET: SECRET, CASCACHE_SIGNING_KEY: mainKey.privateKey, CASCACHE_NAMESPACE: 'main' });
    expect(counts(r.stdout)).toEqual({ fromCascache: 0, ran: 12 });
    expect(r.stdout).toMatch(/cascache: 12 stored entries were signed by no key trusted for their namespace and not used/);
    expect(r.stdout).toMatch(/cascache: uploaded .*nothing pending/);
    good = snapshotOutputs(ci.dir);
    expect(good['app-web/dist/index.js']).not.toEqual(poisoned['app-web/dist/index.js']);
    expect(Object.keys(good).sort()).toEqual(Object.keys(poisoned).sort());
  });

  it("a developer with no secret and no key restores main's outputs byte for byte; the forged entries are never served", () => {
    const dev = machine('dev');
    const r = run(dev, {});
    expect(counts(r.stdout)).toEqual({ fromCascache: 12, ran: 0 });
    expect(dev.buildLog()).toEqual([]);
    expect(snapshotOutputs(dev.dir)).toEqual(good);
  });

  it("a PR build reads main, writes only its own namespace, and its poisoned upload reaches no one else", () => {
    const pr = machine('pr-1');
    changeOneLine(pr.dir); // its own change: lib-core and its 9 dependents rebuild
    const env = { CASCACHE_SECRET: SECRET, CASCACHE_NAMESPACE: 'pr-1', E2E_POISON: '1' };
    expect(counts(run(pr, env).stdout)).toEqual({ fromCascache: 2, ran: 10 });
    const prOutputs = snapshotOutputs(pr.dir);
    // Its next run, after `nx reset`, is served whole: 2 from main, 10 from its own namespace.
    removeOutputs(pr.dir);
    pr.nx(['reset']);
    pr.clearBuildLog();
    expect(counts(run(pr, env).stdout)).toEqual({ fromCascache: 12, ran: 0 });
    expect(snapshotOutputs(pr.dir)).toEqual(prOutputs);
    // Main never sees pr-1: after `nx reset`, main's CI is still served main's own outputs.
    const ci = machine('main-ci');
    removeOutputs(ci.dir);
    ci.nx(['reset']);
    ci.clearBuildLog();
    const again = run(ci, { CASCACHE_SECRET: SECRET, CASCACHE_SIGNING_KEY: mainKey.privateKey, CASCACHE_NAMESPACE: 'main' });
    expect(counts(again.stdout)).toEqual({ fromCascache: 12, ran: 0 });
    expect(snapshotOutputs(ci.dir)).toEqual(good);
  });

  it('a reader whose trusted key for main is not the signer gets misses and a warning, never the build failing', () => {
    const stranger = machine('stranger');
    const r = run(stranger, { CASCACHE_TRUSTED_KEYS: JSON.stringify({ main: [generateSigningKey().publicKey] }) });
    expect(counts(r.stdout)).toEqual({ fromCascache: 0, ran: 12 });
    expect(r.stdout).toMatch(/signed by no key trusted for their namespace and not used/);
    expect(snapshotOutputs(stranger.dir)).toEqual(good);
  });

  it('rotates keys: main CI signs with a new key while readers trust both, and readers get both', () => {
    const ci = machine('main-ci');
    changeOneLine(ci.dir);
    ci.clearBuildLog();
    const both = JSON.stringify({ main: [mainKey.publicKey, nextKey.publicKey] });
    const r = run(ci, { CASCACHE_SECRET: SECRET, CASCACHE_SIGNING_KEY: nextKey.privateKey, CASCACHE_TRUSTED_KEYS: both, CASCACHE_NAMESPACE: 'main' });
    expect(counts(r.stdout).ran).toBe(10);
    const rotated = snapshotOutputs(ci.dir);
    const reader = machine('rotating-reader');
    changeOneLine(reader.dir);
    const back = run(reader, { CASCACHE_TRUSTED_KEYS: both });
    expect(counts(back.stdout)).toEqual({ fromCascache: 12, ran: 0 });
    expect(snapshotOutputs(reader.dir)).toEqual(rotated);
  });
});
