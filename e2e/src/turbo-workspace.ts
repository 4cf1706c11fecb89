/**
 * A real Turborepo workspace: the same 12 projects, graph and build script as the Nx workspace
 * (nx-workspace.ts), with npm-workspace `dependencies` for turbo's `^build`, a `turbo.json`, and
 * turbo from the registry. With `nxPlugin` it is one repo that runs both tools on one store.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanEnv, GRAPH, installOnce, NX_VERSION, removeOutputs, writeWorkspace, type WorkspaceShape } from './nx-workspace';

export const TURBO_VERSION = '2.11.11';

export interface TurboWorkspaceOptions {
  /** Also configure the Nx plugin with these options (a repo that uses both tools). */
  nxPlugin?: Record<string, unknown> | null;
  /** Size and kind of outputs (nx-workspace.ts). Default `small`. */
  shape?: WorkspaceShape;
}

/** Writes the workspace files (no install) and commits them to a new git repository on `main`. */
export function writeTurboWorkspace(dir: string, options: TurboWorkspaceOptions = {}): void {
  writeWorkspace(dir, options.nxPlugin ?? null, options.shape ?? 'small');
  const rootPkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
  const npmVersion = execFileSync('npm', ['--version'], { encoding: 'utf8', env: cleanEnv() }).trim();
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ ...rootPkg, packageManager: `npm@${npmVersion}` }, null, 2));
  for (const [project, deps] of Object.entries(GRAPH)) {
    const file = join(dir, 'packages', project, 'package.json');
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...pkg, dependencies: Object.fromEntries(deps.map((d) => [d, '1.0.0'])) }, null, 2));
  }
  setSignature(dir, false);
  writeFileSync(join(dir, '.gitignore'), 'node_modules\ndist\n.nx\n.turbo\n.cascache\nbuild-log.txt\n');
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, stdio: 'ignore', env: cleanEnv() });
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('-c', 'user.email=e2e@cascache.dev', '-c', 'user.name=e2e', 'commit', '-q', '-m', 'workspace');
}

/** Turns turbo's artifact signing (`remoteCache.signature`) on or off in turbo.json. */
export function setSignature(dir: string, on: boolean): void {
  const turboJson = {
    $schema: 'https://turborepo.com/schema.json',
    globalDependencies: ['build.js'],
    ...(on ? { remoteCache: { signature: true } } : {}),
    tasks: { build: { dependsOn: ['^build'], outputs: ['dist/**'] } },
  };
  writeFileSync(join(dir, 'turbo.json'), JSON.stringify(turboJson, null, 2));
}

/** npm install of turbo (and nx, for the plugin) and the given tarballs. */
export function installTurbo(dir: string, tarballs: string[]): void {
  installOnce(dir, [`turbo@${TURBO_VERSION}`, `nx@${NX_VERSION}`, ...tarballs]);
}

/** Removes every output and turbo's own cache and logs, as on a fresh clone. */
export function removeTurboState(dir: string): void {
  removeOutputs(dir);
  rmSync(join(dir, '.turbo'), { recursive: true, force: true });
  for (const p of Object.keys(GRAPH)) rmSync(join(dir, 'packages', p, '.turbo'), { recursive: true, force: true });
}

/**
 * `cascache turbo [flags] -- turbo run build` in the workspace, as a user runs it; throws when the
 * command fails. stdout and stderr are joined (turbo prints to stdout, cascache its summary to stderr).
 */
export function cascacheTurbo(dir: string, flags: string[] = [], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> & { output: string } {
  return runChecked(dir, join(dir, 'node_modules', '.bin', 'cascache'), ['turbo', ...flags, '--', join(dir, 'node_modules', '.bin', 'turbo'), 'run', 'build'], env);
}

/** `turbo run build` alone (pointed at another cache through `TURBO_API` & co. in `env`). */
export function plainTurbo(dir: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> & { output: string } {
  return runChecked(dir, join(dir, 'node_modules', '.bin', 'turbo'), ['run', 'build'], env);
}

function runChecked(dir: string, command: string, args: string[], env: NodeJS.ProcessEnv): SpawnSyncReturns<string> & { output: string } {
  const r = spawnSync(command, args, {
    cwd: dir,
    encoding: 'utf8',
    env: { ...cleanEnv(), TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1', TURBO_NO_UPDATE_NOTIFIER: '1', TURBO_UI: 'false', ...env },
    timeout: 300_000,
  });
  // turbo colours its output under CI (letter by letter in "FULL TURBO"): compare plain text.
  const output = `${r.stdout}\n${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, '');
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${r.status}):\n${output}`);
  return Object.assign(r, { output });
}
