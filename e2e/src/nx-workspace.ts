/**
 * Builds a real Nx workspace in a temp directory: 12 package.json projects with a dependency graph
 * and real build scripts, nx 24 from the registry, and this repo's packages from npm pack tarballs.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

export const NX_VERSION = '24.0.6';

/** Projects and what they depend on (libs first). 12 projects, 4 levels deep. */
export const GRAPH: Record<string, string[]> = {
  'lib-core': [],
  'lib-util': ['lib-core'],
  'lib-format': ['lib-core'],
  'lib-data': ['lib-util', 'lib-format'],
  'lib-ui-base': [],
  'lib-ui': ['lib-ui-base', 'lib-format'],
  'lib-api': ['lib-data'],
  'lib-i18n': [],
  'app-web': ['lib-ui', 'lib-api', 'lib-i18n'],
  'app-admin': ['lib-ui', 'lib-data'],
  'app-cli': ['lib-util', 'lib-i18n'],
  'app-worker': ['lib-api'],
};

/** A project and everything that depends on it, transitively, sorted. */
export function dependentsOf(project: string): string[] {
  const out = new Set([project]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, deps] of Object.entries(GRAPH)) if (!out.has(p) && deps.some((d) => out.has(d))) grew = out.add(p).size > 0;
  }
  return [...out].sort();
}

/**
 * Output shapes. `small` (tests, demo): ~13 kB per project. `large` (bench): ~30 MB in all, of which
 * app-web 20 MB with a 15 MB vendor bundle that no source change touches, as in a real web app.
 * `tsc` (bench): what `tsc` emits, ~240 small `.js`, `.d.ts` and `.js.map` files per project.
 */
export type WorkspaceShape = 'small' | 'large' | 'tsc';

const SHAPES: Record<WorkspaceShape, { vendorBytes: Record<string, number>; appBytes: number; tscModules: number }> = {
  small: { vendorBytes: {}, appBytes: 0, tscModules: 0 },
  large: { vendorBytes: { 'app-web': 15_000_000 }, appBytes: 900_000, tscModules: 0 },
  tsc: { vendorBytes: {}, appBytes: 0, tscModules: 80 },
};

/**
 * The build every project runs: bundles its sources and its dependencies' outputs into dist/, with
 * the shapes a cache must keep (executable bit, symlink, empty dir, unicode name), and logs the run.
 * Generated code (the `large` and `tsc` shapes) comes from a PRNG seeded by the project's name: it
 * compresses like real JavaScript (~4-6x) and does not change when a source does.
 */
const buildScript = (shape: WorkspaceShape): string => `const SHAPE = ${JSON.stringify(SHAPES[shape])};
const fs = require('fs'); const path = require('path');
const root = process.cwd(); const name = path.basename(root);
fs.appendFileSync(path.join(root, '..', '..', 'build-log.txt'), name + '\\n');
const deps = JSON.parse(fs.readFileSync('package.json', 'utf8')).nx.implicitDependencies || [];
fs.rmSync('dist', { recursive: true, force: true });
fs.mkdirSync('dist/empty', { recursive: true });
fs.mkdirSync('dist/assets/ünï cødé', { recursive: true });
const sources = fs.readdirSync('src').sort().map((f) => '// ' + f + '\\n' + fs.readFileSync(path.join('src', f), 'utf8'));
const depCode = deps.map((d) => fs.readFileSync(path.join('..', d, 'dist', 'index.js'), 'utf8').slice(0, 20000));
// Like a real bundle: the project's modules, then vendored code that does not change with them.
let bundle = '/* ' + name + ' */\\n' + sources.join('\\n');
for (let i = 0; i < 40; i++) {
  bundle += '\\n// vendor chunk ' + i + '\\n';
  for (let j = 0; j < 60; j++) bundle += 'function vendor_' + i + '_' + j + '(a, b) { return a.map((x) => x * ' + j + ' + b).filter(Boolean); }\\n';
}
fs.writeFileSync('dist/index.js', bundle + '\\n' + depCode.join('\\n'));
fs.writeFileSync('dist/index.d.ts', 'export declare const name: string;\\n');
fs.writeFileSync('dist/run.sh', '#!/bin/sh\\nnode "$(dirname "$0")/index.js"\\n'); fs.chmodSync('dist/run.sh', 0o755);
fs.symlinkSync('index.js', 'dist/latest.js');
fs.writeFileSync('dist/assets/ünï cødé/notes with spaces.txt', 'built ' + name + '\\n');
const WORDS = 'value options state props context result index items element config handler request response buffer stream module exports require promise resolve reject callback listener event target source output input render update effect memo store action reducer dispatch selector theme style layout router route params query cache entry'.split(' ');
const seedOf = (s) => { let h = 2166136261; for (const c of s) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0; return h || 1; };
function generate(seed, bytes) {
  let x = seedOf(seed); const out = []; let n = 0;
  const next = () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  while (n < bytes) {
    const a = WORDS[next() % WORDS.length], b = WORDS[next() % WORDS.length], c = WORDS[next() % WORDS.length];
    const line = 'function ' + a + '_' + (next() % 99991) + '(' + b + ', ' + c + ') { if (!' + b + ') return ' + c + '.' + a + '(' + (next() % 1000) + '); return ' + b + '.' + c + ' ?? ' + JSON.stringify(a + '-' + (next() % 997)) + '; }\\n';
    out.push(line); n += line.length;
  }
  return out.join('');
}
if (SHAPE.vendorBytes[name]) fs.writeFileSync('dist/vendor.js', generate('vendor ' + name, SHAPE.vendorBytes[name]));
if (SHAPE.appBytes) fs.writeFileSync('dist/app.js', generate('app ' + name, name === 'app-web' ? 5 * SHAPE.appBytes : SHAPE.appBytes));
for (let i = 0; i < SHAPE.tscModules; i++) {
  const code = generate(name + ' module ' + i, 1500 + (seedOf(name + i) % 2500));
  fs.mkdirSync('dist/lib/' + (i % 8), { recursive: true });
  const base = 'dist/lib/' + (i % 8) + '/m' + i;
  fs.writeFileSync(base + '.js', '"use strict";\\nObject.defineProperty(exports, "__esModule", { value: true });\\n' + code + '//# sourceMappingURL=m' + i + '.js.map\\n');
  fs.writeFileSync(base + '.d.ts', code.split('\\n').filter(Boolean).slice(0, 12).map((l) => 'export declare ' + l.slice(0, l.indexOf(')') + 1) + ': unknown;').join('\\n') + '\\n');
  fs.writeFileSync(base + '.js.map', JSON.stringify({ version: 3, file: 'm' + i + '.js', sourceRoot: '', sources: ['../../../src/m' + i + '.ts'], names: [], mappings: generate('map ' + name + i, 600 + (seedOf(name) % 400)).replace(/[^A-Za-z0-9;,]/g, '').slice(0, 900) }));
}
console.log('built ' + name + ' (' + bundle.length + ' bytes)');
`;

function sourceFile(project: string, i: number): string {
  const lines = [`// ${project} module ${i}`];
  for (let j = 0; j < 120; j++) lines.push(`export function ${project.replace(/-/g, '_')}_${i}_${j}(value) { return value * ${j} + ${i}; /* ${'x'.repeat(j % 30)} */ }`);
  return `${lines.join('\n')}\n`;
}

export interface Workspace {
  dir: string;
  nx(args: string[], env?: NodeJS.ProcessEnv): SpawnSyncReturns<string>;
  buildLog(): string[];
  clearBuildLog(): void;
}

/** Writes the workspace files (no install); `shape` sets the size and kind of outputs. */
export function writeWorkspace(dir: string, pluginOptions: Record<string, unknown> | null, shape: WorkspaceShape = 'small'): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'e2e-workspace', private: true, workspaces: ['packages/*'], allowScripts: { 'zstd-napi': true, nx: true } }, null, 2));
  writeFileSync(join(dir, 'build.js'), buildScript(shape));
  const nxJson: Record<string, unknown> = {
    $schema: './node_modules/nx/schemas/nx-schema.json',
    namedInputs: { default: ['{projectRoot}/src/**/*', '{projectRoot}/package.json', '{workspaceRoot}/build.js'] },
    targetDefaults: { build: { cache: true, dependsOn: ['^build'], outputs: ['{projectRoot}/dist'], inputs: ['default', '^default'] } },
    ...(pluginOptions ? { plugins: [{ plugin: '@cascache/nx', options: pluginOptions }] } : {}),
  };
  writeFileSync(join(dir, 'nx.json'), JSON.stringify(nxJson, null, 2));
  writeFileSync(join(dir, '.gitignore'), 'node_modules\ndist\n.nx\n');
  for (const [project, deps] of Object.entries(GRAPH)) {
    const p = join(dir, 'packages', project);
    mkdirSync(join(p, 'src'), { recursive: true });
    writeFileSync(join(p, 'package.json'), JSON.stringify({ name: project, version: '1.0.0', private: true, scripts: { build: 'node ../../build.js' }, nx: { implicitDependencies: deps } }, null, 2));
    for (let i = 0; i < 4; i++) writeFileSync(join(p, 'src', `m${i}.js`), sourceFile(project, i));
  }
}

export function openWorkspace(dir: string): Workspace {
  return {
    dir,
    nx(args, env = {}) {
      const r = spawnSync(join(dir, 'node_modules', '.bin', 'nx'), args, {
        cwd: dir,
        encoding: 'utf8',
        env: {
          ...cleanEnv(),
          NX_TUI: 'false',
          NX_INTERACTIVE: 'false',
          NX_NO_CLOUD: 'true',
          NX_DAEMON: 'false',
          ...env,
        },
        timeout: 300_000,
      });
      if (r.status !== 0) throw new Error(`nx ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
      return r;
    },
    buildLog() {
      const p = join(dir, 'build-log.txt');
      return existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter(Boolean).sort() : [];
    },
    clearBuildLog() {
      writeFileSync(join(dir, 'build-log.txt'), '');
    },
  };
}

/** What {@link buildThenRestoreAfterReset} saw. */
export interface RestoreRun {
  /** stdout of the first `nx run-many -t build` (every task runs) and of the one after `nx reset`. */
  first: string;
  second: string;
  /** The outputs the build wrote, and what the second run left in their place. */
  built: Record<string, string>;
  restored: Record<string, string>;
  /** Tasks whose build script ran in the second run (none when every output was restored). */
  ranAgain: string[];
}

/**
 * The main job as a user sees it on a fresh clone: build everything, then `nx reset`, delete the
 * outputs and build again, so every output must come from cascache.
 */
export function buildThenRestoreAfterReset(ws: Workspace): RestoreRun {
  const first = ws.nx(['run-many', '-t', 'build']).stdout;
  const built = snapshotOutputs(ws.dir);
  ws.nx(['reset']);
  removeOutputs(ws.dir);
  ws.clearBuildLog();
  const second = ws.nx(['run-many', '-t', 'build']).stdout;
  return { first, second, built, restored: snapshotOutputs(ws.dir), ranAgain: ws.buildLog() };
}

/**
 * The environment a user's shell would have: without cascache settings from the machine running the
 * tests, without the NX_* variables of the Nx task running these tests (`--skip-nx-cache` exports
 * NX_SKIP_NX_CACHE, which would silently turn the inner workspace's cache off), and without the
 * `npm_config_*` variables `npm test` exports from this repo's .npmrc.
 */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (k.startsWith('CASCACHE_') || k.startsWith('NX_') || /^npm_(config|lifecycle|package)_/i.test(k)) delete env[k];
  }
  return env;
}

/** npm install of nx and the given tarballs into the workspace. */
export function install(dir: string, tarballs: string[]): void {
  installOnce(dir, [`nx@${NX_VERSION}`, ...tarballs]);
}

/**
 * `npm install <specs>` in `dir`, done for real once per distinct input (the specs, the tarballs'
 * bytes, the workspace's package.json) and copied after that: the native dependencies compile for
 * minutes on a machine without prebuilt binaries, and every e2e suite installs the same set. The
 * copy is what npm made (node_modules with its relative workspace links, package.json and lock).
 */
export function installOnce(dir: string, specs: string[]): void {
  const h = createHash('sha256').update(readFileSync(join(dir, 'package.json')));
  // A tarball counts by name and bytes, not by path: every suite packs into its own temp directory.
  for (const s of specs) h.update(`\0${existsSync(s) ? basename(s) : s}\0`).update(existsSync(s) ? readFileSync(s) : '');
  const cache = join(tmpdir(), 'cascache-e2e-installs', h.digest('hex').slice(0, 24));
  const files = ['node_modules', 'package.json', 'package-lock.json'];
  if (!existsSync(join(cache, 'complete'))) {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...specs], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'], env: cleanEnv() });
    const tmp = `${cache}.${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    for (const f of files) if (existsSync(join(dir, f))) cpSync(join(dir, f), join(tmp, f), { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(tmp, 'complete'), '');
    try {
      renameSync(tmp, cache);
    } catch {
      // Another process installed the same set first (or left an incomplete copy): keep a complete one.
      if (!existsSync(join(cache, 'complete'))) {
        rmSync(cache, { recursive: true, force: true });
        renameSync(tmp, cache);
      } else rmSync(tmp, { recursive: true, force: true });
    }
    return;
  }
  for (const f of files) if (existsSync(join(cache, f))) cpSync(join(cache, f), join(dir, f), { recursive: true, verbatimSymlinks: true });
}

/** Everything observable about the outputs: type, mode, digest or link target, per path. */
export function snapshotOutputs(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (abs: string, rel: string): void => {
    for (const name of readdirSync(abs).sort()) {
      const a = join(abs, name);
      const r = `${rel}/${name}`;
      const st = lstatSync(a);
      const mode = (st.mode & 0o777).toString(8);
      if (st.isSymbolicLink()) out[r] = `link -> ${readlinkSync(a)}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${mode}`;
        walk(a, r);
      } else out[r] = `file ${mode} ${createHash('sha256').update(readFileSync(a)).digest('hex')}`;
    }
  };
  for (const project of Object.keys(GRAPH)) {
    const d = join(dir, 'packages', project, 'dist');
    if (existsSync(d)) walk(d, `${project}/dist`);
  }
  return out;
}

export function tempWorkspaceDir(prefix = 'cascache-nx-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Deletes every project's dist/, as a fresh checkout has none. */
export function removeOutputs(dir: string): void {
  for (const p of Object.keys(GRAPH)) rmSync(join(dir, 'packages', p, 'dist'), { recursive: true, force: true });
}

/** Stops the agent a store's agent.json names, if any (tests and tools must not leave it running). */
export function stopAgent(storeDir: string): void {
  let pid: number;
  try {
    pid = JSON.parse(readFileSync(join(storeDir, 'agent.json'), 'utf8')).pid;
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // no agent, or already gone
  }
  // It closes its store on the way out (the index's last updates); callers delete the store next.
  // The agent is detached, so no exit event reaches us: look every 10 ms, for at most 10 s.
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (const end = Date.now() + 10_000; Date.now() < end; Atomics.wait(pause, 0, 0, 10)) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
  }
}

/** The one-line source change the tests, bench and demo make: in lib-core, a leaf every app depends on. */
export function changeOneLine(dir: string): string {
  const file = join(dir, 'packages/lib-core/src/m2.js');
  writeFileSync(file, readFileSync(file, 'utf8').replace('return value * 7 + 2;', 'return value * 7 + 3;'));
  return file;
}

/**
 * A second clone of a workspace: its sources and config, without outputs, Nx state, store or build
 * log, sharing the first clone's node_modules.
 */
export function cloneWorkspace(from: string, to: string): void {
  cpSync(from, to, { recursive: true, filter: (src) => !/\/(node_modules|\.nx|dist|\.cascache)$/.test(src) && !src.endsWith('build-log.txt') });
  symlinkSync(join(from, 'node_modules'), join(to, 'node_modules'), 'dir');
}
