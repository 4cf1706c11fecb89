/**
 * `npm run add-to -- <workspace>`: the documented way from a clone into an existing Nx workspace
 * until the packages are on the registry. It packs, installs and runs init for real; the next run
 * caches through cascache and a full restore after `nx reset` is byte-identical.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NX_VERSION, buildThenRestoreAfterReset, installOnce, openWorkspace, stopAgent, tempWorkspaceDir, writeWorkspace, cleanEnv } from '../src/nx-workspace';
import { REPO } from '../src/pack';

const TOOL = join(REPO, 'tools', 'add-to-workspace.mjs');

describe('npm run add-to: from a clone into an existing workspace', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) stopAgent(join(d, '.cascache'));
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A workspace with nx installed and no cascache, as a user has before trying it. */
  function workspace(): string {
    const dir = tempWorkspaceDir('cascache-add-to-');
    dirs.push(dir);
    writeWorkspace(dir, null);
    // The user's own package.json, with no approvals for our native builds yet.
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    delete pkg.allowScripts;
    writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
    installOnce(dir, [`nx@${NX_VERSION}`]);
    return dir;
  }

  it('refuses a pnpm workspace in one line and changes nothing', () => {
    const dir = workspace();
    writeFileSync(join(dir, 'pnpm-lock.yaml'), "lockfileVersion: '9.0'\n");
    const before = readFileSync(join(dir, 'package.json'), 'utf8');
    const r = spawnSync(process.execPath, [TOOL, '--skip-build', dir], { encoding: 'utf8', env: cleanEnv() });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^add-to: pnpm workspaces: this script installs tarballs with npm only; pnpm installs the published packages with `nx add @cascache\/nx`/)]);
    expect(readFileSync(join(dir, 'package.json'), 'utf8')).toBe(before);
    expect(existsSync(join(dir, '.cascache-packages'))).toBe(false);
  });

  it('packs, installs and runs init in an npm workspace; the next runs cache through cascache', () => {
    const dir = workspace();
    execFileSync(process.execPath, [TOOL, '--skip-build', dir], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    expect(readdirSync(join(dir, '.cascache-packages')).sort()).toEqual([expect.stringMatching(/^cascache-.*\.tgz$/), expect.stringMatching(/^cascache-core-/), expect.stringMatching(/^cascache-nx-/), expect.stringMatching(/^cascache-server-/)]);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    expect(pkg.allowScripts).toEqual({ 'zstd-napi': true });
    expect(pkg.devDependencies['zstd-napi']).toBeDefined(); // the faster zstd, @cascache/core's optional peer
    expect(pkg.devDependencies['@cascache/nx']).toMatch(/^file:\.cascache-packages\/cascache-nx-.*\.tgz$/);
    expect(JSON.parse(readFileSync(join(dir, 'nx.json'), 'utf8')).plugins).toContainEqual({ plugin: '@cascache/nx', options: { signingSecretEnv: 'CASCACHE_SECRET', readOnly: false, tiers: [] } });

    const ws = openWorkspace(dir);
    const r = buildThenRestoreAfterReset(ws);
    expect(r.first).toMatch(/cascache: 12 tasks, 0 from cascache, 12 run/);
    expect(r.second).toMatch(/cascache: 12 tasks, 12 from cascache, 0 run/);
    expect(r.ranAgain).toEqual([]);
    expect(r.restored).toEqual(r.built);
    expect(readFileSync(join(dir, '.cascache', 'agent.log'), 'utf8')).toContain('zstd: zstd-napi');
  });
});
