// @ts-check
/**
 * The main job, measured: a full-hit `nx run-many -t build` after `nx reset` (every output fetched from
 * the remote cache) through cascache, through a naive server that stores each tar.gz as one file
 * (bench/naive-server.mjs), and from Nx's own local cache; then the bytes each remote stores for a
 * one-file change. Same workspace as the e2e tests (12 projects), real nx 24, our packages from
 * npm pack tarballs. Rounds interleave the three so machine drift hits all of them alike.
 *
 * Options: --rounds N (default 5), --json <file>.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import e2ePack from '../e2e/dist/pack.js';
import { arg, du, median, printRows, startNaive, variant as copyOf } from './common.mjs';

const { changeOneLine, install, openWorkspace, removeOutputs, stopAgent, tempWorkspaceDir, writeWorkspace } = e2eWorkspace;
const { packAll } = e2ePack;
const ROUNDS = Number(arg('--rounds', '5'));
const jsonOut = arg('--json', undefined);

console.log('setting up three copies of the 12-project workspace (npm pack + npm install)...');
const t = packAll();
const base = tempWorkspaceDir('cascache-bench-');
writeWorkspace(base, null);
install(base, [t.core, t.server, t.nx]);
/** @param {string} name @param {Record<string, unknown> | null} plugin */
const variant = (name, plugin) => copyOf(base, name, plugin);
const cas = variant('cascache', { idleTimeoutMs: 600_000 });
const naiveWs = variant('naive', null);
const local = variant('local', null);
const naiveStore = join(naiveWs.dir, '.naive-store');
const { url: naiveUrl, proc: naiveProc } = await startNaive(naiveStore);
const naive = { url: naiveUrl };
const naiveEnv = { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: naive.url };
const casStore = join(cas.dir, '.cascache');

try {
  // Populate every cache once.
  cas.nx(['run-many', '-t', 'build']);
  naiveWs.nx(['run-many', '-t', 'build'], naiveEnv);
  local.nx(['run-many', '-t', 'build']);

  const times = { cascache: /** @type {number[]} */ ([]), naive: /** @type {number[]} */ ([]), local: /** @type {number[]} */ ([]) };
  /**
   * Deletes every output (and, per `reset`, Nx's local state), then times a run that must build nothing.
   * @param {ReturnType<typeof openWorkspace>} ws @param {'all' | 'cache' | 'none'} reset @param {NodeJS.ProcessEnv} env
   */
  const fullHit = (ws, reset, env = {}) => {
    if (reset === 'all') ws.nx(['reset']);
    if (reset === 'cache') ws.nx(['reset', '--onlyCache'], env);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    const t0 = performance.now();
    const r = ws.nx(['run-many', '-t', 'build'], env);
    const ms = performance.now() - t0;
    if (ws.buildLog().length !== 0) throw new Error(`a build ran on a full hit:\n${r.stdout}`);
    return ms;
  };
  for (let i = 0; i < ROUNDS; i++) {
    times.cascache.push(fullHit(cas, 'all'));
    times.naive.push(fullHit(naiveWs, 'all', naiveEnv));
    times.local.push(fullHit(local, 'none'));
  }
  // Where the time goes: the same full hits with the Nx daemon on (plugins stay loaded in the daemon,
  // as on a developer machine), and with plugin isolation off (no worker processes for the hooks).
  const extra = { casDaemon: /** @type {number[]} */ ([]), naiveDaemon: /** @type {number[]} */ ([]), casNoIsolation: /** @type {number[]} */ ([]) };
  cas.nx(['run-many', '-t', 'build'], { NX_DAEMON: 'true' });
  naiveWs.nx(['run-many', '-t', 'build'], { ...naiveEnv, NX_DAEMON: 'true' });
  for (let i = 0; i < ROUNDS; i++) {
    extra.casDaemon.push(fullHit(cas, 'cache', { NX_DAEMON: 'true' }));
    extra.naiveDaemon.push(fullHit(naiveWs, 'cache', { ...naiveEnv, NX_DAEMON: 'true' }));
  }
  cas.nx(['daemon', '--stop']);
  naiveWs.nx(['daemon', '--stop']);
  for (let i = 0; i < ROUNDS; i++) extra.casNoIsolation.push(fullHit(cas, 'all', { NX_ISOLATE_PLUGINS: 'false' }));

  // One-line change in a leaf library: what does each remote store?
  const casBefore = du(join(casStore, 'v1'));
  const naiveBefore = du(naiveStore);
  changeOneLine(cas.dir);
  changeOneLine(naiveWs.dir);
  cas.nx(['run-many', '-t', 'build']);
  naiveWs.nx(['run-many', '-t', 'build'], naiveEnv);
  const casRuns = join(casStore, 'v1', 'runs');
  const casDelta = du(join(casStore, 'v1')) - casBefore; // everything: chunks, manifests, AC entries, run record
  const naiveDelta = du(naiveStore) - naiveBefore;

  const med = { cascache: median(times.cascache), naive: median(times.naive), local: median(times.local) };
  const rows = [
    ['full hit after nx reset, cascache', `${med.cascache.toFixed(0)} ms`, `x${(med.cascache / med.naive).toFixed(2)} of naive`, '<= 1.15x', med.cascache / med.naive <= 1.15],
    ['full hit after nx reset, naive server', `${med.naive.toFixed(0)} ms`, 'x1.00', '', undefined],
    ["full hit from Nx's local cache", `${med.local.toFixed(0)} ms`, `x${(med.local / med.naive).toFixed(2)} of naive`, '', undefined],
    ['  cascache, plugin isolation off', `${median(extra.casNoIsolation).toFixed(0)} ms`, `x${(median(extra.casNoIsolation) / med.naive).toFixed(2)} of naive`, '', undefined],
    ['  cascache, daemon on (nx reset --only-cache)', `${median(extra.casDaemon).toFixed(0)} ms`, `x${(median(extra.casDaemon) / median(extra.naiveDaemon)).toFixed(2)} of naive`, '', undefined],
    ['  naive, daemon on (nx reset --only-cache)', `${median(extra.naiveDaemon).toFixed(0)} ms`, '', '', undefined],
    ['bytes stored after a one-line change, cascache', `${casDelta} B`, `${((100 * casDelta) / naiveDelta).toFixed(1)}% of naive`, '<= 10%', casDelta <= naiveDelta * 0.1],
    ['bytes stored after a one-line change, naive', `${naiveDelta} B`, '100%', '', undefined],
    ['total stored, cascache', `${du(join(casStore, 'v1', 'blobs')) + du(join(casStore, 'v1', 'ac'))} B`, '', '', undefined],
    ['total stored, naive', `${du(naiveStore)} B`, '', '', undefined],
  ];
  console.log(`\nnx 24, 12 projects, ${ROUNDS} rounds (median), full hits with every output deleted first\n`);
  printRows(/** @type {any} */ (rows), 48);
  console.log(`\nruns: cascache ${times.cascache.map((x) => x.toFixed(0)).join(' ')} | naive ${times.naive.map((x) => x.toFixed(0)).join(' ')} | local ${times.local.map((x) => x.toFixed(0)).join(' ')} ms (run records in ${casRuns})`);
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ rounds: ROUNDS, times, med, casDelta, naiveDelta }, null, 2)}\n`);
} finally {
  naiveProc.kill();
  stopAgent(casStore);
  for (const ws of [cas, naiveWs, local]) rmSync(ws.dir, { recursive: true, force: true });
  rmSync(base, { recursive: true, force: true });
}
