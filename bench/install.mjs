// @ts-check
/**
 * `node bench/install.mjs` (in `npm run bench`): what installing cascache into an Nx workspace costs
 * a user, beside a pure-JS Nx cache plugin (@pellegrims/nx-remotecache-s3, an S3 cache client with
 * no native code). Both go into a copy of the same npm workspace that already has nx 24, with npm's
 * cache warm (each is installed once before timing), so the difference is what our packages do on
 * install: nothing compiles (issue 14; up to 7beeb04 zstd-napi and better-sqlite3 did), and the
 * optional faster zstd (zstd-napi, an optional peer) compiles when a workspace adds it.
 *
 * Runs interleaved; each figure is the median of --runs (default 3) wall times of `npm install -D`.
 * Options: --runs N, --json <file>.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import e2ePack from '../e2e/dist/pack.js';
import { arg, median, zstdNapiSpecs } from './common.mjs';

const { NX_VERSION, installOnce, tempWorkspaceDir, writeWorkspace, cleanEnv } = e2eWorkspace;
const RUNS = Number(arg('--runs', '3'));
const PURE = '@pellegrims/nx-remotecache-s3@8.1.3';

const t = e2ePack.packAll();
const ours = [t.core, t.server, t.nx, t.cli];
// With the optional faster zstd (compiled on install; the workspace approves it in allowScripts).
const [ZSTD_NAPI] = zstdNapiSpecs(true);
const oursFast = [...ours, ZSTD_NAPI];
const base = tempWorkspaceDir('cascache-bench-install-');
writeWorkspace(base, null);
installOnce(base, [`nx@${NX_VERSION}`]);

/** Wall ms of `npm install -D <specs>` in a fresh copy of the base workspace. @param {string[]} specs */
function installMs(specs) {
  const dir = tempWorkspaceDir('cascache-bench-install-run-');
  try {
    cpSync(base, dir, { recursive: true, verbatimSymlinks: true });
    const t0 = process.hrtime.bigint();
    execFileSync('npm', ['install', '--save-dev', '--no-audit', '--no-fund', '--loglevel=error', ...specs], { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    return { ms, packages: readdirSync(join(dir, 'node_modules')).length };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

installMs(oursFast); // warms npm's cache: downloads are not what this measures
installMs([PURE]);
/** @type {{ ours: number[], oursFast: number[], pure: number[] }} */
const times = { ours: [], oursFast: [], pure: [] };
for (let r = 0; r < RUNS; r++) {
  times.ours.push(installMs(ours).ms);
  times.oursFast.push(installMs(oursFast).ms);
  times.pure.push(installMs([PURE]).ms);
  console.log(`run ${r + 1}/${RUNS}: cascache ${(times.ours.at(-1) / 1000).toFixed(1)} s, with ${ZSTD_NAPI} ${(times.oursFast.at(-1) / 1000).toFixed(1)} s, ${PURE} ${(times.pure.at(-1) / 1000).toFixed(1)} s`);
}
const result = {
  nx: NX_VERSION,
  runs: RUNS,
  cascacheMs: Math.round(median(times.ours)),
  withZstdNapiMs: Math.round(median(times.oursFast)),
  pureJsMs: Math.round(median(times.pure)),
  pureJsPlugin: PURE,
};
const s = (/** @type {number} */ ms) => `${(ms / 1000).toFixed(1)} s (${(ms / result.pureJsMs).toFixed(1)}x)`;
console.log(
  `install into an npm workspace with nx ${NX_VERSION}, npm cache warm, median of ${RUNS}: cascache's 4 tarballs ${s(result.cascacheMs)}, with ${ZSTD_NAPI} ${s(result.withZstdNapiMs)}, ${PURE} ${(result.pureJsMs / 1000).toFixed(1)} s`,
);
const json = arg('--json', undefined);
if (json) writeFileSync(json, JSON.stringify(result, null, 2));
rmSync(base, { recursive: true, force: true });
