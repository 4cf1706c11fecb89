// @ts-check
/**
 * The main job, measured against what a user would run instead, rounds interleaved so machine drift
 * hits every variant alike (real nx 24, our packages from npm pack tarballs):
 *
 * - cascache: `@cascache/nx`, the local agent and store;
 * - naive: Nx's own client against a server that stores each tar.gz body as one file
 *   (bench/naive-server.mjs), the whole-archive cache every self-hosted Nx cache amounts to;
 * - local: Nx's own local cache, no remote at all.
 *
 * Rows: a cold build (empty caches: every task runs and every output is stored); a warm full hit
 * (every output deleted; cascache with Nx's local cache removed, so every output comes from the
 * agent, against Nx restoring from its own cache); a full hit after `nx reset` (as on a fresh
 * clone: cascache against naive); the same with the Nx daemon on; bytes a cold build stores against
 * the tar.gz bodies Nx sent; bytes a one-line change stores.
 *
 * Options: --shape small|large|tsc (default large: 12 projects, ~30 MB of outputs, a 20 MB app),
 * --rounds N (default 5), --json <file>, --zstd-napi (install @cascache/core's optional faster zstd
 * too, as `npm run add-to` does; without it, what `nx add` installs: the prebuilt one).
 */
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import e2ePack from '../e2e/dist/pack.js';
import { arg, deleteMovedStores, du, emptyStore, median, printRows, startNaive, variant as copyOf, zstdNapiSpecs } from './common.mjs';

const { changeOneLine, install, removeOutputs, stopAgent, tempWorkspaceDir, writeWorkspace } = e2eWorkspace;
const { packAll } = e2ePack;
const ROUNDS = Number(arg('--rounds', '5'));
const SHAPE = /** @type {'small' | 'large' | 'tsc'} */ (arg('--shape', 'large'));
const jsonOut = arg('--json', undefined);

console.log(`setting up three copies of the 12-project workspace, shape ${SHAPE} (npm pack + npm install)...`);
const t = packAll();
const base = tempWorkspaceDir('cascache-bench-');
writeWorkspace(base, null, SHAPE);
const zstdNapi = zstdNapiSpecs().length > 0;
install(base, [t.core, t.server, t.nx, ...zstdNapiSpecs()]);
/** @param {string} name @param {Record<string, unknown> | null} plugin */
const variant = (name, plugin) => copyOf(base, name, plugin, SHAPE);
const cas = variant('cascache', { idleTimeoutMs: 600_000 });
const naiveWs = variant('naive', null);
const local = variant('local', null);
const naiveStore = join(naiveWs.dir, '.naive-store');
const { url: naiveUrl, proc: naiveProc } = await startNaive(naiveStore);
const naiveEnv = { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: naiveUrl };
const casStore = join(cas.dir, '.cascache');

/** Runs `nx run-many -t build` and returns wall ms. @param {ReturnType<typeof variant>} ws @param {NodeJS.ProcessEnv} env */
function timed(ws, env = {}) {
  const t0 = performance.now();
  const r = ws.nx(['run-many', '-t', 'build'], env);
  return { ms: performance.now() - t0, stdout: r.stdout };
}

/** A run that must build nothing. @param {ReturnType<typeof variant>} ws @param {NodeJS.ProcessEnv} env */
function fullHit(ws, env = {}) {
  removeOutputs(ws.dir);
  ws.clearBuildLog();
  const r = timed(ws, env);
  if (ws.buildLog().length !== 0) throw new Error(`a build ran on a full hit:\n${r.stdout}`);
  return r.ms;
}

/** Empties every cache a variant has, then times a build that runs every task. */
const coldBuild = {
  cascache: () => {
    stopAgent(casStore);
    emptyStore(casStore);
    cas.nx(['reset']);
    removeOutputs(cas.dir);
    return timed(cas).ms; // agent start included, as on a fresh machine
  },
  naive: () => {
    for (const f of readdirSync(naiveStore)) rmSync(join(naiveStore, f), { force: true });
    naiveWs.nx(['reset']);
    removeOutputs(naiveWs.dir);
    return timed(naiveWs, naiveEnv).ms;
  },
  local: () => {
    local.nx(['reset']);
    removeOutputs(local.dir);
    return timed(local).ms;
  },
};

try {
  /** @type {Record<string, number[]>} */
  const times = { coldCas: [], coldNaive: [], coldLocal: [], warmCas: [], warmLocal: [], resetCas: [], resetNaive: [], daemonCas: [], daemonLocal: [] };
  let storedCold = 0;
  let bodiesCold = 0;
  for (let i = 0; i < ROUNDS; i++) {
    times.coldCas.push(coldBuild.cascache());
    times.coldNaive.push(coldBuild.naive());
    times.coldLocal.push(coldBuild.local());
    if (i === 0) {
      storedCold = du(join(casStore, 'v1', 'blobs')) + du(join(casStore, 'v1', 'packs')) + du(join(casStore, 'v1', 'ac'));
      bodiesCold = du(naiveStore);
    }
  }
  for (let i = 0; i < ROUNDS; i++) {
    // Warm: the store has everything, Nx's own cache nothing (a second clone on a shared store).
    rmSync(join(cas.dir, '.nx', 'cache'), { recursive: true, force: true });
    times.warmCas.push(fullHit(cas));
    times.warmLocal.push(fullHit(local));
    // After nx reset: Nx recomputes its graph too, as on a fresh clone.
    cas.nx(['reset']);
    times.resetCas.push(fullHit(cas));
    naiveWs.nx(['reset']);
    times.resetNaive.push(fullHit(naiveWs, naiveEnv));
  }
  // The Nx daemon on, as on a developer machine (plugins stay loaded in the daemon).
  const daemon = { NX_DAEMON: 'true' };
  cas.nx(['run-many', '-t', 'build'], daemon);
  local.nx(['run-many', '-t', 'build'], daemon);
  for (let i = 0; i < ROUNDS; i++) {
    cas.nx(['reset', '--onlyCache'], daemon);
    times.daemonCas.push(fullHit(cas, daemon));
    times.daemonLocal.push(fullHit(local, daemon));
  }
  cas.nx(['daemon', '--stop']);
  local.nx(['daemon', '--stop']);

  // One-line change in a leaf library: what does each remote store?
  const casBefore = du(join(casStore, 'v1', 'blobs')) + du(join(casStore, 'v1', 'packs')) + du(join(casStore, 'v1', 'ac'));
  const naiveBefore = du(naiveStore);
  changeOneLine(cas.dir);
  changeOneLine(naiveWs.dir);
  cas.nx(['run-many', '-t', 'build']);
  naiveWs.nx(['run-many', '-t', 'build'], naiveEnv);
  const casDelta = du(join(casStore, 'v1', 'blobs')) + du(join(casStore, 'v1', 'packs')) + du(join(casStore, 'v1', 'ac')) - casBefore;
  const naiveDelta = du(naiveStore) - naiveBefore;

  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  const ms = (/** @type {number} */ x) => `${x.toFixed(0)} ms`;
  const ratio = (/** @type {number} */ a, /** @type {number} */ b, /** @type {string} */ what) => `x${(a / b).toFixed(2)} of ${what}`;
  const rows = [
    ['cold build, cascache (agent start included)', ms(m.coldCas), ratio(m.coldCas, m.coldNaive, 'naive'), '<= 1.2x', m.coldCas / m.coldNaive <= 1.2],
    ['cold build, naive server', ms(m.coldNaive), '', '', undefined],
    ["cold build, Nx's local cache only", ms(m.coldLocal), ratio(m.coldLocal, m.coldNaive, 'naive'), '', undefined],
    ["warm full hit, cascache (Nx's cache removed)", ms(m.warmCas), ratio(m.warmCas, m.warmLocal, 'Nx local'), '<= 1.1x', m.warmCas / m.warmLocal <= 1.1],
    ["warm full hit, Nx's local cache", ms(m.warmLocal), '', '', undefined],
    ['  daemon on, cascache (nx reset --onlyCache)', ms(m.daemonCas), ratio(m.daemonCas, m.daemonLocal, 'Nx local'), '<= 1.1x', m.daemonCas / m.daemonLocal <= 1.1],
    ["  daemon on, Nx's local cache", ms(m.daemonLocal), '', '', undefined],
    ['full hit after nx reset, cascache', ms(m.resetCas), ratio(m.resetCas, m.resetNaive, 'naive'), '<= 1.0x', m.resetCas / m.resetNaive <= 1.0],
    ['full hit after nx reset, naive server', ms(m.resetNaive), '', '', undefined],
    ['bytes stored by a cold build, cascache', `${storedCold} B`, `${((100 * storedCold) / bodiesCold).toFixed(1)}% of naive`, '<= 100%', storedCold <= bodiesCold],
    ['bytes stored by a cold build, naive (tar.gz bodies)', `${bodiesCold} B`, '', '', undefined],
    ['bytes stored after a one-line change, cascache', `${casDelta} B`, `${((100 * casDelta) / naiveDelta).toFixed(1)}% of naive`, '<= 10%', casDelta <= naiveDelta * 0.1],
    ['bytes stored after a one-line change, naive', `${naiveDelta} B`, '', '', undefined],
  ];
  console.log(`\nnx 24, 12 projects, shape ${SHAPE}, ${ROUNDS} rounds (median), daemon off unless said, zstd: ${zstdNapi ? 'zstd-napi' : '@toondepauw/node-zstd'}\n`);
  printRows(/** @type {any} */ (rows), 50);
  console.log(`\nruns (ms): ${Object.entries(times).map(([k, v]) => `${k} ${v.map((x) => x.toFixed(0)).join(' ')}`).join(' | ')}`);
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ shape: SHAPE, rounds: ROUNDS, times, medians: m, storedCold, bodiesCold, casDelta, naiveDelta }, null, 2)}\n`);
} finally {
  naiveProc.kill();
  stopAgent(casStore);
  deleteMovedStores();
  for (const ws of [cas, naiveWs, local]) rmSync(ws.dir, { recursive: true, force: true });
  rmSync(base, { recursive: true, force: true });
}
