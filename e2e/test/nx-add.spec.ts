/**
 * `nx add @cascache/nx` for real, on every Nx major the plugin supports: our packages published to a
 * local Verdaccio registry, a fresh workspace per major that installs through it, and Nx's own `add`
 * command installing the plugin and running its init generator. Then a full restore after `nx reset`,
 * byte-identical, with no other setup.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { NX_VERSION, buildThenRestoreAfterReset, cleanEnv, openWorkspace, stopAgent, tempWorkspaceDir, writeWorkspace } from '../src/nx-workspace';
import { registryWithOurPackages, type Registry } from '../src/registry';

/**
 * The newest release of each supported major (the plugin's peer range, `nx >=21 <25`). `npm test`
 * runs the three newest majors; `npm run test:nx-matrix` (CASCACHE_NX_MATRIX=full) all of them. Each
 * costs ~3 min here, most of it compiling the two native dependencies (issue 14). An older Nx is
 * refused by the range, and by the plugin at run time in one line (packages/nx/test/hooks.spec.ts).
 */
const NX_MATRIX = [...(process.env.CASCACHE_NX_MATRIX === 'full' ? ['21.6.4'] : []), '22.6.1', '23.3.2', NX_VERSION];

/** Every version of `nx` in an `npm ls --json` tree, deduplicated and sorted. */
function nxVersions(node: { dependencies?: Record<string, { version?: string }> }): string[] {
  const found = new Set<string>();
  const walk = (n: { dependencies?: Record<string, { version?: string }> }): void => {
    for (const [name, dep] of Object.entries(n.dependencies ?? {})) {
      if (name === 'nx' && dep.version) found.add(dep.version);
      walk(dep as typeof n);
    }
  };
  walk(node);
  return [...found].sort();
}

describe('nx add @cascache/nx through a real registry', () => {
  let registry: Registry;
  const dirs: string[] = [];
  const stores: string[] = [];

  beforeAll(async () => {
    registry = await registryWithOurPackages(dirs);
  });

  afterAll(() => {
    for (const s of stores) stopAgent(s);
    registry?.stop();
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it.each(NX_MATRIX)('Nx %s: installs the plugin with its matching peers, runs init, and restores every output after nx reset', (version) => {
    const dir = tempWorkspaceDir(`cascache-nx-add-${version}-`);
    dirs.push(dir);
    stores.push(join(dir, '.cascache'));
    writeWorkspace(dir, null);
    registry.use(dir);
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `nx@${version}`], { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    const ws = openWorkspace(dir);

    const add = ws.nx(['add', '@cascache/nx']);
    expect(add.stdout + add.stderr).toContain('cascache: nx.json: added @cascache/nx to "plugins"');
    const nxJson = JSON.parse(readFileSync(join(dir, 'nx.json'), 'utf8'));
    expect(nxJson.plugins).toContainEqual({ plugin: '@cascache/nx', options: { signingSecretEnv: 'CASCACHE_SECRET', readOnly: false, tiers: [] } });
    expect(readFileSync(join(dir, '.gitignore'), 'utf8').split('\n')).toContain('.cascache');
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    expect(pkg.devDependencies?.['@cascache/nx'] ?? pkg.dependencies?.['@cascache/nx']).toBeDefined();
    // The workspace's Nx is the one everything runs on: the install did not bring a second nx.
    const tree = JSON.parse(execFileSync('npm', ['ls', 'nx', '--all', '--json'], { cwd: dir, env: cleanEnv(), encoding: 'utf8' }));
    expect(nxVersions(tree)).toEqual([version]);

    const r = buildThenRestoreAfterReset(ws);
    expect(r.first).toMatch(/cascache: 12 tasks, 0 from cascache, 12 run/);
    expect(r.second).toMatch(/cascache: 12 tasks, 12 from cascache, 0 run/);
    expect(r.ranAgain).toEqual([]);
    expect(r.restored).toEqual(r.built);
    expect(existsSync(join(dir, '.cascache', 'v1', 'store.json'))).toBe(true);

    // Running the generator again changes nothing and says so.
    const again = ws.nx(['g', '@cascache/nx:init']);
    expect(again.stdout + again.stderr).toContain('cascache: already set up; nothing changed.');
  });
});
