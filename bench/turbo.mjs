// @ts-check
/**
 * Turborepo through cascache against what a self-hosting Turborepo team runs instead:
 * `turborepo-remote-cache` 2.12.0 (npm), with its local-disk storage and with its S3 storage on the
 * same real S3-protocol server (s3rver) that cascache's S3 tier uses. Real turbo 2.11.11, the
 * 12-project workspace of the e2e tests, our packages from npm pack tarballs, rounds interleaved.
 *
 * Rows: a full hit (outputs and turbo's own cache deleted) against each server on local disk; a
 * full hit on a fresh clone with everything from S3 (cascache: empty local store, agent start
 * included); bytes uploaded per one-line change; the bucket after N one-line changes.
 *
 * Options: --shape small|large|tsc (default large), --builds N (default 20), --rounds N (default 3),
 * --json <file>.
 */
import { appendFileSync, cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import e2eTurbo from '../e2e/dist/turbo-workspace.js';
import e2ePack from '../e2e/dist/pack.js';
import { arg, bucketBytes, deleteMovedStores, emptyStore, installTrc, median, printRows, startTrc, TRC_VERSION } from './common.mjs';

const require = createRequire(import.meta.url);
const { startS3Server } = require('../tools/s3rver.js');
const { stopAgent, tempWorkspaceDir, openWorkspace } = e2eWorkspace;
const { cascacheTurbo, installTurbo, plainTurbo, removeTurboState, writeTurboWorkspace } = e2eTurbo;
const { packAll } = e2ePack;
const SHAPE = /** @type {'small' | 'large' | 'tsc'} */ (arg('--shape', 'large'));
const BUILDS = Number(arg('--builds', '20'));
const ROUNDS = Number(arg('--rounds', '3'));
const jsonOut = arg('--json', undefined);
const BUCKET = 'cascache-tbench';
const TRC_BUCKET = 'trc-tbench';
const TOKEN = 'bench-token';
const TEAM = 'bench';

/** A copy of the installed workspace (with its git repo) sharing its node_modules. @param {string} base @param {string} name */
function copyOf(base, name) {
  const dir = tempWorkspaceDir(`cascache-tbench-${name}-`);
  cpSync(base, dir, { recursive: true, filter: (src) => !src.endsWith('/node_modules') });
  symlinkSync(join(base, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return openWorkspace(dir);
}

/** `cascache: uploaded 41.2 kB to remote tiers ...` -> bytes. @param {string} output */
function uploaded(output) {
  const m = /cascache: uploaded ([\d.]+) (B|kB|MB|GB) to remote tiers.*nothing pending/.exec(output);
  if (!m) throw new Error(`no drained upload line in:\n${output}`);
  return Number(m[1]) * { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[/** @type {'B'} */ (m[2])];
}

console.log(`setting up: s3rver, npm pack, turbo workspace (shape ${SHAPE}), turborepo-remote-cache ${TRC_VERSION}...`);
const s3 = await startS3Server([BUCKET, TRC_BUCKET]);
const t = packAll();
const base = tempWorkspaceDir('cascache-tbench-');
writeTurboWorkspace(base, { shape: SHAPE });
installTurbo(base, [t.core, t.server, t.nx, t.cli]);
const trcDir = installTrc();
const trcDiskDir = join(trcDir, 'storage');
mkdirSync(trcDiskDir);
const trcDisk = await startTrc(trcDir, TOKEN, TEAM, { STORAGE_PROVIDER: 'local', STORAGE_PATH: trcDiskDir, STORAGE_PATH_USE_TMP_FOLDER: 'false' });
const trcS3 = await startTrc(trcDir, TOKEN, TEAM, { STORAGE_PROVIDER: 's3', STORAGE_PATH: TRC_BUCKET, S3_ACCESS_KEY: 'S3RVER', S3_SECRET_KEY: 'S3RVER', S3_REGION: 'us-east-1', S3_ENDPOINT: s3.endpoint });

const secretEnv = { CASCACHE_SECRET: 'bench-shared-signing-secret-0123456789abcdef', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
const remoteFlags = ['--team', TEAM, '--remote', `s3://${BUCKET}/turbo?endpoint=${encodeURIComponent(s3.endpoint)}&forcePathStyle=true`];
const casA = copyOf(base, 'a'); // builds and uploads to S3
const casB = copyOf(base, 'b'); // the fresh clone
const casLocal = copyOf(base, 'local'); // local store only
const trcS3Ws = copyOf(base, 'trc-s3');
const trcDiskWs = copyOf(base, 'trc-disk');

/** Times one full-hit run; throws if a task ran. @param {ReturnType<typeof openWorkspace>} ws @param {() => unknown} run */
function fullHit(ws, run) {
  removeTurboState(ws.dir);
  ws.clearBuildLog();
  const t0 = performance.now();
  run();
  const ms = performance.now() - t0;
  if (ws.buildLog().length !== 0) throw new Error(`a task ran on a full hit in ${ws.dir}: ${ws.buildLog().join(' ')}`);
  return ms;
}

try {
  // Bytes: the first build, then one-line changes, in cascache (S3 tier) and trc (S3) alike.
  const ci = { ...secretEnv, CI: 'true' };
  const first = { cas: uploaded(cascacheTurbo(casA.dir, remoteFlags, ci).output), trc: 0 };
  plainTurbo(trcS3Ws.dir, trcS3.env);
  first.trc = (await bucketBytes(s3.endpoint, TRC_BUCKET)).total;
  /** @type {Array<{ cas: number, trc: number }>} */
  const perChange = [];
  for (let n = 1; n <= BUILDS; n++) {
    for (const ws of [casA, trcS3Ws]) appendFileSync(join(ws.dir, 'packages/lib-core/src/m2.js'), `export const build${n} = ${n};\n`);
    const before = (await bucketBytes(s3.endpoint, TRC_BUCKET)).total;
    const cas = uploaded(cascacheTurbo(casA.dir, remoteFlags, ci).output);
    plainTurbo(trcS3Ws.dir, trcS3.env);
    perChange.push({ cas, trc: (await bucketBytes(s3.endpoint, TRC_BUCKET)).total - before });
  }
  const storage = { cas: await bucketBytes(s3.endpoint, BUCKET), trc: await bucketBytes(s3.endpoint, TRC_BUCKET) };

  // Everyone at A's final sources; the local-disk variants fill their caches once.
  for (const ws of [casB, casLocal, trcDiskWs]) cpSync(join(casA.dir, 'packages'), join(ws.dir, 'packages'), { recursive: true });
  cascacheTurbo(casLocal.dir, ['--team', TEAM], secretEnv);
  plainTurbo(trcDiskWs.dir, trcDisk.env);

  const times = { local: /** @type {number[]} */ ([]), trcDisk: /** @type {number[]} */ ([]), fresh: /** @type {number[]} */ ([]), trcS3: /** @type {number[]} */ ([]) };
  const casBStore = join(casB.dir, '.cascache');
  for (let i = 0; i < ROUNDS; i++) {
    times.local.push(fullHit(casLocal, () => cascacheTurbo(casLocal.dir, ['--team', TEAM], secretEnv)));
    times.trcDisk.push(fullHit(trcDiskWs, () => plainTurbo(trcDiskWs.dir, trcDisk.env)));
    stopAgent(casBStore);
    emptyStore(casBStore);
    times.fresh.push(fullHit(casB, () => cascacheTurbo(casB.dir, remoteFlags, secretEnv)));
    times.trcS3.push(fullHit(trcS3Ws, () => plainTurbo(trcS3Ws.dir, trcS3.env)));
  }
  const med = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  const one = perChange[0] ?? { cas: 0, trc: 1 };
  const pct = (a, b) => `${((100 * a) / b).toFixed(2)}% of trc`;
  const rows = [
    ['full hit, local disk: cascache turbo (agent warm)', `${med.local.toFixed(0)} ms`, `x${(med.local / med.trcDisk).toFixed(2)} of trc`, '<= 1.0x', med.local <= med.trcDisk],
    ['full hit, local disk: turborepo-remote-cache', `${med.trcDisk.toFixed(0)} ms`, '', '', undefined],
    ['fresh clone, all from S3: cascache turbo + S3 tier', `${med.fresh.toFixed(0)} ms`, `x${(med.fresh / med.trcS3).toFixed(2)} of trc S3`, '<= 1.0x', med.fresh <= med.trcS3],
    ['fresh clone, all from S3: turborepo-remote-cache', `${med.trcS3.toFixed(0)} ms`, '', '', undefined],
    ['first build: uploaded, cascache', `${first.cas} B`, pct(first.cas, first.trc), '', undefined],
    ['first build: uploaded, trc', `${first.trc} B`, '', '', undefined],
    ['one-line change: uploaded, cascache', `${one.cas} B`, pct(one.cas, one.trc), '<= 2%', one.cas <= one.trc * 0.02],
    ['one-line change: uploaded, trc', `${one.trc} B`, '', '', undefined],
    [`bucket after ${BUILDS + 1} builds, cascache (${storage.cas.objects} objects)`, `${storage.cas.total} B`, `x${(storage.cas.total / storage.trc.total).toFixed(3)} of trc`, '<= 0.1x', storage.cas.total <= storage.trc.total * 0.1],
    [`bucket after ${BUILDS + 1} builds, trc (${storage.trc.objects} objects)`, `${storage.trc.total} B`, '', '', undefined],
  ];
  console.log(`\nturbo 2.11.11, 12 projects, shape ${SHAPE}, turborepo-remote-cache ${TRC_VERSION}, S3 on s3rver; ${BUILDS} one-line changes; full hits: ${ROUNDS} rounds (median)\n`);
  printRows(/** @type {any} */ (rows), 56);
  console.log(`\nruns (ms): ${Object.entries(times).map(([k, v]) => `${k} ${v.map((x) => x.toFixed(0)).join(' ')}`).join(' | ')}`);
  console.log(`per change (cascache/trc bytes): ${perChange.map((c) => `${c.cas}/${c.trc}`).join(' ')}`);
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ shape: SHAPE, builds: BUILDS, rounds: ROUNDS, first, perChange, storage, times }, null, 2)}\n`);
} finally {
  trcDisk.proc.kill();
  trcS3.proc.kill();
  for (const ws of [casA, casB, casLocal]) stopAgent(join(ws.dir, '.cascache'));
  deleteMovedStores();
  await s3.close();
  for (const ws of [casA, casB, casLocal, trcS3Ws, trcDiskWs]) rmSync(ws.dir, { recursive: true, force: true });
  rmSync(base, { recursive: true, force: true });
  rmSync(trcDir, { recursive: true, force: true });
}
