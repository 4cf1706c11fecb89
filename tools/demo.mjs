// @ts-check
/**
 * `npm run demo`: the main job, end to end, on a real Nx workspace.
 *
 * Packs this repo's packages, creates a 12-project Nx 24 workspace in a temp directory with the
 * @cascache/nx plugin, and shows: a first build storing every output; after `nx reset` and deleting
 * every output, everything restored from cascache byte for byte with no build run; a one-line change
 * storing only the chunks that changed; a second clone on the same store restoring everything; and
 * `cascache stats`: the store and what Nx got from it, read from the index the agent kept.
 * Takes about a minute (most of it npm install). Needs `npm run setup` first.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import e2ePack from '../e2e/dist/pack.js';

const { changeOneLine, cloneWorkspace, install, openWorkspace, removeOutputs, snapshotOutputs, stopAgent, tempWorkspaceDir, writeWorkspace } = e2eWorkspace;
const digest = (/** @type {unknown} */ v) => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);
const cascacheLine = (/** @type {string} */ out) => out.split('\n').find((l) => l.startsWith('cascache: ')) ?? '(no cascache summary line)';

const dir = tempWorkspaceDir('cascache-demo-');
const clone = tempWorkspaceDir('cascache-demo-clone-');
const store = join(dir, '.cascache');
try {
  console.log(`creating a 12-project Nx ${e2eWorkspace.NX_VERSION} workspace with @cascache/nx in ${dir} (npm pack + npm install)...`);
  const t = e2ePack.packAll();
  writeWorkspace(dir, {});
  install(dir, [t.core, t.server, t.nx, t.cli]);
  const ws = openWorkspace(dir);
  /** @param {string} title @param {() => import('node:child_process').SpawnSyncReturns<string>} run */
  const step = (title, run) => {
    ws.clearBuildLog();
    const t0 = performance.now();
    const r = run();
    const ms = performance.now() - t0;
    const built = ws.buildLog();
    console.log(`\n${title}\n  ${cascacheLine(r.stdout)}\n  builds run: ${built.length ? built.join(', ') : 'none'} (${ms.toFixed(0)} ms)`);
  };

  step('1. first build: every task runs, every output is stored', () => ws.nx(['run-many', '-t', 'build']));
  const before = snapshotOutputs(dir);
  ws.nx(['reset']);
  removeOutputs(dir);
  step('2. after nx reset and deleting every dist/: everything comes back from cascache', () => ws.nx(['run-many', '-t', 'build']));
  const after = snapshotOutputs(dir);
  console.log(`  outputs byte-identical (content, modes, symlinks, empty dirs, unicode names): ${digest(before) === digest(after) ? 'yes' : 'NO'} (${Object.keys(after).length} entries)`);

  changeOneLine(dir);
  step('3. one line changed in lib-core: it and its dependents rebuild; only changed chunks are stored', () => ws.nx(['run-many', '-t', 'build']));

  cloneWorkspace(dir, clone);
  const b = openWorkspace(clone);
  b.clearBuildLog();
  const r = b.nx(['run-many', '-t', 'build'], { CASCACHE_DIR: store });
  console.log(`\n4. a second clone with CASCACHE_DIR=${store}\n  ${cascacheLine(r.stdout)}\n  builds run: ${b.buildLog().length ? b.buildLog().join(', ') : 'none'}`);

  const stats = spawnSync(join(dir, 'node_modules', '.bin', 'cascache'), ['stats', '--store-dir', store], { cwd: dir, encoding: 'utf8' });
  console.log(`\n5. npx cascache stats: the store, and what Nx got from it\n${stats.stdout}${stats.stderr}`);
} finally {
  stopAgent(store);
  rmSync(dir, { recursive: true, force: true });
  rmSync(clone, { recursive: true, force: true });
}
