// @ts-check
/**
 * Remote tiers, measured against a naive remote that keeps one whole tar.gz per task hash in the same
 * S3 server (what every S3/GCS blob-store cache for Nx amounts to; bench/naive-server.mjs --s3), in
 * the same run:
 *
 * 1. bytes uploaded after a one-file change (cascache: what the agent sent to S3, from the CI upload
 *    line; naive: the tar.gz objects it added);
 * 2. storage after 20 successive small-change builds (every object each keeps in S3);
 * 3. a full-hit `nx run-many` on a machine with a cold local tier (fresh clone, empty local store,
 *    agent start included) against the naive S3 remote, and against a naive server on local disk,
 *    rounds interleaved.
 *
 * The S3 server is s3rver (a real S3-protocol server process); real nx 24; our packages from npm
 * pack tarballs; the 12-project workspace of the e2e tests. Options: --builds N (default 20),
 * --rounds N (default 5), --shape small|large|tsc (default small), --json <file>, --zstd-napi (install
 * @cascache/core's optional faster zstd too; without it, the prebuilt one `nx add` installs).
 */
import { createRequire } from 'node:module';
import { appendFileSync, cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import e2ePack from '../e2e/dist/pack.js';
import { arg, bucketBytes, deleteMovedStores, emptyStore, median, printRows, startNaive, variant as copyOf, zstdNapiSpecs } from './common.mjs';

const require = createRequire(import.meta.url);
const { startS3Server } = require('../tools/s3rver.js');
const { install, openWorkspace, removeOutputs, stopAgent, tempWorkspaceDir, writeWorkspace } = e2eWorkspace;
const { packAll } = e2ePack;
const BUILDS = Number(arg('--builds', '20'));
const ROUNDS = Number(arg('--rounds', '5'));
const jsonOut = arg('--json', undefined);
const SHAPE = /** @type {'small' | 'large' | 'tsc'} */ (arg('--shape', 'small'));
const BUCKET = 'cascache-bench';
const NAIVE_BUCKET = 'cascache-bench-naive';

/** `cascache: uploaded 41.2 kB to remote tiers ...` -> bytes. @param {string} stdout */
function uploaded(stdout) {
  const m = /cascache: uploaded ([\d.]+) (B|kB|MB|GB) to remote tiers.*nothing pending/.exec(stdout);
  if (!m) throw new Error(`no drained upload line in:\n${stdout}`);
  return Number(m[1]) * { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[/** @type {'B'} */ (m[2])];
}

console.log('setting up: s3rver, npm pack, npm install of the 12-project workspace...');
const s3 = await startS3Server([BUCKET, NAIVE_BUCKET]);
const tiers = [`s3://${BUCKET}/nx?endpoint=${encodeURIComponent(s3.endpoint)}&forcePathStyle=true`];
const env = { CI: 'true', CASCACHE_SECRET: 'bench-shared-signing-secret-0123456789abcdef', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
const t = packAll();
const base = tempWorkspaceDir('cascache-rbench-');
writeWorkspace(base, null, SHAPE);
install(base, [t.core, t.server, t.nx, ...zstdNapiSpecs()]);
/** @param {string} name @param {Record<string, unknown> | null} plugin */
const variant = (name, plugin) => copyOf(base, name, plugin, SHAPE);
const casA = variant('a', { idleTimeoutMs: 600_000, tiers });
const casB = variant('b', { idleTimeoutMs: 600_000, tiers });
const naiveWs = variant('naive', null);
const diskWs = variant('disk', null);
const { url: naiveUrl, proc: naiveProc } = await startNaive(join(naiveWs.dir, '.unused'), { endpoint: s3.endpoint, bucket: NAIVE_BUCKET });
const naiveEnv = { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: naiveUrl };
const { url: diskUrl, proc: diskProc } = await startNaive(join(diskWs.dir, ".naive-store"));
const diskEnv = { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: diskUrl };

/** A one-file change: one more line in lib-core's m2.js, in both workspaces alike. @param {number} n */
function change(n) {
  for (const ws of [casA, naiveWs]) appendFileSync(join(ws.dir, 'packages/lib-core/src/m2.js'), `export const build${n} = ${n};\n`);
}

/** Bytes and objects in one of this bench's buckets. @param {string} bucket */
const bucketBytesOf = (bucket) => bucketBytes(s3.endpoint, bucket);

try {
  // 1. The first build, then one-file changes.
  const first = { cas: uploaded(casA.nx(['run-many', '-t', 'build'], env).stdout), naive: 0 };
  naiveWs.nx(['run-many', '-t', 'build'], naiveEnv);
  diskWs.nx(['run-many', '-t', 'build'], diskEnv);
  first.naive = (await bucketBytesOf(NAIVE_BUCKET)).total;
  /** @type {Array<{ cas: number, naive: number }>} */
  const perChange = [];
  for (let n = 1; n <= BUILDS; n++) {
    change(n);
    const before = (await bucketBytesOf(NAIVE_BUCKET)).total;
    const cas = uploaded(casA.nx(['run-many', '-t', 'build'], env).stdout);
    naiveWs.nx(['run-many', '-t', 'build'], naiveEnv);
    perChange.push({ cas, naive: (await bucketBytesOf(NAIVE_BUCKET)).total - before });
  }
  const naiveObjects = await bucketBytesOf(NAIVE_BUCKET);
  const storage = { cas: await bucketBytesOf(BUCKET), naive: naiveObjects.total };
  // The local-disk naive server, at the final sources, for the full-hit comparison only.
  cpSync(join(casA.dir, 'packages'), join(diskWs.dir, 'packages'), { recursive: true });
  diskWs.nx(['run-many', '-t', 'build'], diskEnv);

  // 3. Cold local tier: clone B at A's final sources, empty local store, agent not running.
  cpSync(join(casA.dir, 'packages'), join(casB.dir, 'packages'), { recursive: true });
  const casBStore = join(casB.dir, '.cascache');
  const cold = { cas: /** @type {number[]} */ ([]), casNoIsolation: /** @type {number[]} */ ([]), naive: /** @type {number[]} */ ([]), disk: /** @type {number[]} */ ([]) };
  /** @param {ReturnType<typeof openWorkspace>} ws @param {NodeJS.ProcessEnv} runEnv */
  const fullHit = (ws, runEnv) => {
    ws.nx(['reset']);
    removeOutputs(ws.dir);
    ws.clearBuildLog();
    const t0 = performance.now();
    const r = ws.nx(['run-many', '-t', 'build'], runEnv);
    const ms = performance.now() - t0;
    if (ws.buildLog().length !== 0) throw new Error(`a build ran on a full hit:\n${r.stdout}`);
    return ms;
  };
  const coldEnv = { ...env, CI: 'false' }; // no upload wait: nothing is uploaded on a full hit anyway
  for (let i = 0; i < ROUNDS; i++) {
    stopAgent(casBStore);
    emptyStore(casBStore);
    cold.cas.push(fullHit(casB, coldEnv));
    // Where the time goes: Nx's plugin isolation (a worker process per hook) is a fixed cost.
    stopAgent(casBStore);
    emptyStore(casBStore);
    cold.casNoIsolation.push(fullHit(casB, { ...coldEnv, NX_ISOLATE_PLUGINS: 'false' }));
    cold.naive.push(fullHit(naiveWs, naiveEnv));
    cold.disk.push(fullHit(diskWs, diskEnv));
  }

  const one = perChange[0];
  const med = { cas: median(cold.cas), casNoIsolation: median(cold.casNoIsolation), naive: median(cold.naive), disk: median(cold.disk) };
  const sumCas = perChange.reduce((a, c) => a + c.cas, 0);
  const sumNaive = perChange.reduce((a, c) => a + c.naive, 0);
  const rows = [
    ['first build: uploaded, cascache', `${first.cas} B`, `${((100 * first.cas) / first.naive).toFixed(1)}% of naive`, '', undefined],
    ['first build: uploaded, naive', `${first.naive} B`, '', '', undefined],
    ['one-file change: uploaded, cascache', `${one.cas} B`, `${((100 * one.cas) / one.naive).toFixed(1)}% of naive`, '<= 5%', one.cas <= one.naive * 0.05],
    ['one-file change: uploaded, naive', `${one.naive} B`, '', '', undefined],
    [`${BUILDS} changes: uploaded, cascache`, `${sumCas} B`, `${((100 * sumCas) / sumNaive).toFixed(1)}% of naive`, '', undefined],
    [`storage after ${BUILDS + 1} builds, cascache (${storage.cas.objects} objects)`, `${storage.cas.total} B`, `${((100 * storage.cas.total) / storage.naive).toFixed(1)}% of naive`, '<= 25%', storage.cas.total <= storage.naive * 0.25],
    [`storage after ${BUILDS + 1} builds, naive (${naiveObjects.objects} objects)`, `${storage.naive} B`, '', '', undefined],
    ['full hit, cold local tier, cascache + S3', `${med.cas.toFixed(0)} ms`, `x${(med.cas / med.naive).toFixed(2)} of naive S3`, '<= 1.15x', med.cas / med.naive <= 1.15],
    ['  cascache + S3, plugin isolation off', `${med.casNoIsolation.toFixed(0)} ms`, `x${(med.casNoIsolation / med.naive).toFixed(2)} of naive S3`, '', undefined],
    ['full hit, naive remote on S3', `${med.naive.toFixed(0)} ms`, '', '', undefined],
    ['full hit, naive server on local disk', `${med.disk.toFixed(0)} ms`, `cascache x${(med.cas / med.disk).toFixed(2)}`, '', undefined],
  ];
  console.log(`\nnx 24, 12 projects, shape ${SHAPE}, S3 on s3rver; ${BUILDS} one-file changes; cold full hits: ${ROUNDS} rounds (median); zstd: ${zstdNapiSpecs().length ? "zstd-napi" : "@toondepauw/node-zstd"}\n`);
  printRows(/** @type {any} */ (rows));
  console.log(`\nper change (cascache/naive bytes): ${perChange.map((c) => `${c.cas}/${c.naive}`).join(' ')}`);
  console.log(`cold full hits: cascache ${cold.cas.map((x) => x.toFixed(0)).join(' ')} | isolation off ${cold.casNoIsolation.map((x) => x.toFixed(0)).join(' ')} | naive S3 ${cold.naive.map((x) => x.toFixed(0)).join(' ')} | naive disk ${cold.disk.map((x) => x.toFixed(0)).join(' ')} ms`);
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ builds: BUILDS, rounds: ROUNDS, first, perChange, storage, cold }, null, 2)}\n`);
} finally {
  naiveProc.kill();
  diskProc.kill();
  for (const ws of [casA, casB]) stopAgent(join(ws.dir, '.cascache'));
  deleteMovedStores();
  await s3.close();
  for (const ws of [casA, casB, naiveWs, diskWs]) rmSync(ws.dir, { recursive: true, force: true });
  rmSync(base, { recursive: true, force: true });
}
