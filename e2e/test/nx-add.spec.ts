/**
 * `nx add @cascache/nx` for real: our packages published to a local Verdaccio registry, a fresh
 * workspace that installs through it, and Nx's own `add` command installing the plugin and running
 * its init generator. Then the main job works with no other setup.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { NX_VERSION, cleanEnv, openWorkspace, removeOutputs, stopAgent, tempWorkspaceDir, writeWorkspace, type Workspace } from '../src/nx-workspace';
import { packAll } from '../src/pack';
import { startRegistry, type Registry } from '../src/registry';

describe('nx add @cascache/nx through a real registry', () => {
  let registry: Registry;
  let ws: Workspace;
  const dirs: string[] = [];

  beforeAll(async () => {
    const t = packAll();
    const regDir = tempWorkspaceDir('cascache-registry-');
    dirs.push(regDir);
    registry = await startRegistry(regDir);
    for (const tgz of [t.core, t.server, t.nx, t.cli]) registry.publish(tgz);
    const dir = tempWorkspaceDir('cascache-nx-add-');
    dirs.push(dir);
    writeWorkspace(dir, null);
    registry.use(dir);
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `nx@${NX_VERSION}`], {
      cwd: dir,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    ws = openWorkspace(dir);
  });

  afterAll(() => {
    stopAgent(join(ws.dir, '.cascache'));
    registry?.stop();
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('installs the plugin, runs init, and the next run caches through cascache', () => {
    const add = ws.nx(['add', '@cascache/nx']);
    expect(add.stdout + add.stderr).toContain('cascache: nx.json: added @cascache/nx to "plugins"');
    const nxJson = JSON.parse(readFileSync(join(ws.dir, 'nx.json'), 'utf8'));
    expect(nxJson.plugins).toContainEqual({ plugin: '@cascache/nx', options: { signingSecretEnv: 'CASCACHE_SECRET', readOnly: false, tiers: [] } });
    expect(readFileSync(join(ws.dir, '.gitignore'), 'utf8').split('\n')).toContain('.cascache');
    expect(JSON.parse(readFileSync(join(ws.dir, 'package.json'), 'utf8')).devDependencies?.['@cascache/nx'] ?? JSON.parse(readFileSync(join(ws.dir, 'package.json'), 'utf8')).dependencies?.['@cascache/nx']).toBeDefined();

    const first = ws.nx(['run-many', '-t', 'build']);
    expect(first.stdout).toMatch(/cascache: 12 tasks, 0 from cascache, 12 run/);
    ws.nx(['reset']);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    const second = ws.nx(['run-many', '-t', 'build']);
    expect(second.stdout).toMatch(/cascache: 12 tasks, 12 from cascache, 0 run/);
    expect(ws.buildLog()).toEqual([]);
    expect(existsSync(join(ws.dir, '.cascache', 'v1', 'store.json'))).toBe(true);

    // Running the generator again changes nothing and says so.
    const again = ws.nx(['g', '@cascache/nx:init']);
    expect(again.stdout + again.stderr).toContain('cascache: already set up; nothing changed.');
  });
});
