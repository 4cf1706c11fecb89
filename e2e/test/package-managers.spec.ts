/**
 * pnpm and yarn workspaces get cascache the way npm ones do: `nx add @cascache/nx` through a real
 * registry (Verdaccio, serving our packages from npm pack tarballs), then a full restore after
 * `nx reset`, byte-identical. Each package manager's CLI comes from the npm registry and runs with
 * its default settings: nothing of ours is approved, overridden or configured. The workspace's own
 * approval of Nx's postinstall is there, as in any pnpm Nx workspace; ours need none (issue 14):
 * without zstd-napi, which compiles on install and is an optional peer, cascache uses the prebuilt
 * @toondepauw/node-zstd, and the agent log says so.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { buildThenRestoreAfterReset, cleanEnv, NX_VERSION, openWorkspace, stopAgent, tempWorkspaceDir, writeWorkspace } from '../src/nx-workspace';
import { registryWithOurPackages, type Registry } from '../src/registry';

/** The newest releases on the registry when this was written (2026-12-02). */
const PNPM_VERSION = '12.23.0';
const YARN_VERSION = '4.18.1';

describe('pnpm and yarn workspaces: nx add @cascache/nx with default settings, then a full restore', () => {
  let registry: Registry;
  let binDir: string;
  const dirs: string[] = [];
  const stores: string[] = [];

  beforeAll(async () => {
    registry = await registryWithOurPackages(dirs);
    const tools = tempWorkspaceDir('cascache-pm-tools-');
    dirs.push(tools);
    writeFileSync(join(tools, 'package.json'), '{"private":true}');
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `pnpm@${PNPM_VERSION}`, `@yarnpkg/cli-dist@${YARN_VERSION}`], { cwd: tools, env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    binDir = join(tools, 'node_modules', '.bin');
  });

  afterAll(() => {
    for (const s of stores) stopAgent(s);
    registry?.stop();
    if (process.env.CASCACHE_E2E_KEEP !== '1') for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** The environment with this suite's pnpm and yarn first on PATH (Nx's `add` runs them by name). */
  const env = (): NodeJS.ProcessEnv => ({ ...cleanEnv(), PATH: `${binDir}${delimiter}${process.env.PATH ?? ''}` });
  const run = (dir: string, cmd: string, args: string[]): void => {
    const r = spawnSync(join(binDir, cmd), args, { cwd: dir, env: env(), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  };

  /** The e2e workspace, set up for `manager` and installed with nx through the test registry. */
  function workspace(manager: 'pnpm' | 'yarn'): string {
    const dir = tempWorkspaceDir(`cascache-${manager}-`);
    dirs.push(dir);
    stores.push(join(dir, '.cascache'));
    writeWorkspace(dir, null);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    delete pkg.allowScripts; // npm's approvals: not read by pnpm or yarn, and not ours to need
    if (manager === 'pnpm') {
      delete pkg.workspaces;
      writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
      // The workspace's own decision about Nx's postinstall (pnpm 11 and later fail an install with an
      // undecided build script). Nothing about ours: they have none.
      writeFileSync(join(dir, 'pnpm-workspace.yaml'), "packages:\n  - 'packages/*'\nallowBuilds:\n  nx: true\n");
      registry.use(dir);
      run(dir, 'pnpm', ['add', '-D', '-w', `nx@${NX_VERSION}`]);
    } else {
      writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
      // Nx runs on node_modules (create-nx-workspace writes this for yarn berry); the registry is the
      // test's. Our packages were published to it seconds ago, and yarn 4 holds back versions younger
      // than its age gate (npmMinimalAgeGate): they are exempted, as a registry release older than
      // the gate would be anyway. yarn's global folder (its metadata cache, keyed by package name, with
      // tarball URLs of the registry it came from) is the workspace's own: each run's registry is new.
      writeFileSync(
        join(dir, '.yarnrc.yml'),
        `nodeLinker: node-modules\nnpmRegistryServer: "${registry.url}"\nunsafeHttpWhitelist:\n  - 127.0.0.1\nenableTelemetry: false\nglobalFolder: "${join(dir, '.yarn-global')}"\nnpmPreapprovedPackages:\n  - "@cascache/*"\n  - cascache\n`,
      );
      writeFileSync(join(dir, 'yarn.lock'), '');
      run(dir, 'yarn', ['add', '-D', `nx@${NX_VERSION}`]);
    }
    return dir;
  }

  it.each(['pnpm', 'yarn'] as const)('%s: installs with no approval of ours, runs init, and restores every output after nx reset', (manager) => {
    const dir = workspace(manager);
    const plain = openWorkspace(dir);
    // Nx runs package scripts and `add` through the workspace's package manager, found on PATH.
    const ws = { ...plain, nx: (args: string[]) => plain.nx(args, { PATH: env().PATH }) };
    const add = ws.nx(['add', '@cascache/nx']);
    expect(add.stdout + add.stderr).toContain('cascache: nx.json: added @cascache/nx to "plugins"');
    expect(JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).devDependencies['@cascache/nx']).toBeDefined();
    expect(readFileSync(join(dir, manager === 'pnpm' ? 'pnpm-lock.yaml' : 'yarn.lock'), 'utf8')).toContain('@toondepauw/node-zstd');

    const r = buildThenRestoreAfterReset(ws);
    expect(r.first).toMatch(/cascache: 12 tasks, 0 from cascache, 12 run/);
    expect(r.second).toMatch(/cascache: 12 tasks, 12 from cascache, 0 run/);
    expect(r.ranAgain).toEqual([]);
    expect(r.restored).toEqual(r.built);
    expect(readFileSync(join(dir, '.cascache', 'agent.log'), 'utf8')).toContain('zstd: @toondepauw/node-zstd');
  });
});
