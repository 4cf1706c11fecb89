// @ts-check
/**
 * Team-server GETs under load: `cascache serve` (with and without hot bodies) against the naive
 * server (one tar.gz file per hash, bench/naive-server.mjs), each a process of its own, the same
 * ~100 kB Nx body stored in both, then `wrk` (Debian's package) on GET /v1/cache/<hash> with 64
 * connections, one server at a time. Then the same for Turborepo: a ~100 kB tar.zst artifact on
 * `cascache serve` against turborepo-remote-cache (npm, local-disk storage), GET
 * /v8/artifacts/<hash>. Loopback only; every run is bounded by --duration.
 *
 * Options: --duration <s> (default 30), --connections N (default 64), --json <file>.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { gzipSync } from 'node:zlib';
import core from '@cascache/core';
import { Readable } from 'node:stream';
import { arg, installTrc, printRows, startNaive, startTrc, TRC_VERSION } from './common.mjs';

const DURATION = Number(arg('--duration', '30'));
const CONNECTIONS = Number(arg('--connections', '64'));
const jsonOut = arg('--json', undefined);
const HASH = '1234567890123';
const TOKEN = 'bench-token-0123456789abcdef0123456789';

/** A ~100 kB Nx body: a bundle, a map, a .d.ts, terminalOutput and code, as Nx's client packs them. */
async function nxBody() {
  return gzipSync(await outputsTar(true));
}

/** A ~100 kB Turborepo artifact: the same outputs and a task log, tar.zst as turbo packs them. */
async function turboBody() {
  return core.readAll(/** @type {any} */ (Readable.from([await outputsTar(false)]).pipe(core.zstdCompressStream(3))), 1 << 28);
}

/** The outputs both bodies hold (with Nx's extra entries when `nx`). @param {boolean} nx */
async function outputsTar(nx) {
  const tarStream = (await import('tar-stream')).default;
  const pack = tarStream.pack();
  // Compresses like minified JS (~3x): identifiers and constants vary, the shape repeats.
  let js = '';
  let x = 2463534242;
  const next = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>>= 0));
  for (let i = 0; js.length < 300_000; i++) js += `function f${next().toString(36)}(a,b){return a.${next().toString(36)}(${next() % 1000})||b.${next().toString(36)}}\n`;
  pack.entry({ name: 'dist/app/main.js' }, js);
  pack.entry({ name: 'dist/app/main.d.ts' }, 'export declare function f0(a: number[], b: number): number[];\n');
  if (nx) {
    pack.entry({ name: 'terminalOutput' }, '> built app\n');
    pack.entry({ name: 'code' }, Buffer.alloc(4));
  } else pack.entry({ name: 'apps/app/.turbo/turbo-build.log' }, '> built app\n');
  pack.finalize();
  return core.readAll(/** @type {any} */ (pack), 1 << 28);
}

/** Starts `cascache serve` as its own process. @param {string} store @param {string[]} extra */
async function startServe(store, extra) {
  const bin = join(import.meta.dirname ?? '.', '..', 'packages', 'cli', 'dist', 'bin.js');
  const proc = spawn(process.execPath, [bin, 'serve', '--port', '0', '--store-dir', store, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, CASCACHE_TOKENS_RW: TOKEN, CASCACHE_LOG_LEVEL: 'warn' },
  });
  const url = await new Promise((resolve, reject) => {
    createInterface({ input: /** @type {any} */ (proc.stderr) }).on('line', (l) => {
      const m = /serving .* at (http:\/\/\S+)/.exec(l);
      if (m) resolve(m[1]);
    });
    proc.once('exit', (code) => reject(new Error(`cascache serve exited with ${code}`)));
  });
  return { url: /** @type {string} */ (url), proc };
}

/** wrk on one URL: requests/s and latency percentiles (ms). @param {string} url */
function wrk(url) {
  const out = execFileSync('wrk', ['-t2', `-c${CONNECTIONS}`, `-d${DURATION}s`, '--latency', '-H', `Authorization: Bearer ${TOKEN}`, url], { encoding: 'utf8', timeout: (DURATION + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const pct = (/** @type {string} */ p) => {
    const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    return m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[/** @type {'ms'} */ (m[2])] : NaN;
  };
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? '0';
  return { rps, p50: pct('50'), p99: pct('99'), errors: Number(errors) };
}

/** @typedef {{ rps: number, p50: number, p99: number, errors: number }} WrkResult */

/** A printRows row builder with ratios against `base` (named `baseName` in the target). @param {WrkResult} base @param {string} baseName */
function rowAgainst(base, baseName) {
  return (/** @type {string} */ what, /** @type {WrkResult} */ r, /** @type {boolean} */ target) => [
    what,
    `${r.rps.toFixed(0)} req/s`,
    `x${(r.rps / base.rps).toFixed(2)}, p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms${r.errors ? `, ${r.errors} errors` : ''}`,
    target ? `>= 1.0x ${baseName}` : '',
    target ? r.rps >= base.rps : undefined,
  ];
}

const dir = mkdtempSync(join(tmpdir(), 'cascache-serve-bench-'));
const procs = [];
try {
  const body = await nxBody();
  const naive = await startNaive(join(dir, 'naive'));
  procs.push(naive.proc);
  const hot = await startServe(join(dir, 'hot'), []);
  procs.push(hot.proc);
  const cold = await startServe(join(dir, 'cold'), ['--hot-bodies', '0']);
  procs.push(cold.proc);
  for (const base of [naive.url, hot.url, cold.url]) {
    const r = await fetch(`${base}/v1/cache/${HASH}`, { method: 'PUT', body, headers: { authorization: `Bearer ${TOKEN}` } });
    if (r.status !== 200) throw new Error(`PUT to ${base} answered ${r.status}`);
    await r.arrayBuffer();
  }
  const results = { naive: wrk(`${naive.url}/v1/cache/${HASH}`), hot: wrk(`${hot.url}/v1/cache/${HASH}`), cold: wrk(`${cold.url}/v1/cache/${HASH}`) };
  const row = rowAgainst(results.naive, 'naive');
  console.log(`\nGET of one ${body.length}-byte Nx body, wrk ${CONNECTIONS} connections, ${DURATION} s each\n`);
  printRows(
    /** @type {any} */ ([row('cascache serve (hot bodies, the default)', results.hot, true), row('cascache serve --hot-bodies 0 (tar rebuilt per GET)', results.cold, false), row('naive server (one file per hash)', results.naive, false)]),
    52,
  );

  // Turborepo: the same outputs as a tar.zst artifact, against turborepo-remote-cache on local disk.
  const tbody = await turboBody();
  const THASH = '0123456789abcdef';
  const trcDir = installTrc();
  const trc = await startTrc(trcDir, TOKEN, 'bench', { STORAGE_PROVIDER: 'local', STORAGE_PATH: join(dir, 'trc'), STORAGE_PATH_USE_TMP_FOLDER: 'false' });
  procs.push(trc.proc);
  for (const base of [trc.url, hot.url, cold.url]) {
    const r = await fetch(`${base}/v8/artifacts/${THASH}?slug=bench`, { method: 'PUT', body: tbody, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream' } });
    if (r.status >= 300) throw new Error(`turbo PUT to ${base} answered ${r.status}`);
    await r.arrayBuffer();
  }
  const tpath = `/v8/artifacts/${THASH}?slug=bench`;
  const turbo = { trc: wrk(`${trc.url}${tpath}`), hot: wrk(`${hot.url}${tpath}`), cold: wrk(`${cold.url}${tpath}`) };
  const trow = rowAgainst(turbo.trc, 'trc');
  console.log(`\nGET of one ${tbody.length}-byte Turborepo artifact (tar.zst), wrk ${CONNECTIONS} connections, ${DURATION} s each\n`);
  printRows(
    /** @type {any} */ ([
      trow('cascache serve (hot bodies, the default)', turbo.hot, true),
      trow('cascache serve --hot-bodies 0 (tar.zst rebuilt per GET)', turbo.cold, false),
      trow(`turborepo-remote-cache ${TRC_VERSION} (local disk)`, turbo.trc, false),
    ]),
    56,
  );
  rmSync(trcDir, { recursive: true, force: true });
  if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ bodyBytes: body.length, turboBodyBytes: tbody.length, connections: CONNECTIONS, duration: DURATION, results, turbo }, null, 2)}\n`);
} finally {
  for (const p of procs) p.kill();
  rmSync(dir, { recursive: true, force: true });
}
