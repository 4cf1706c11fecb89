// @ts-check
/**
 * `npm run bench`: cascache's throughput beside baselines measured in the same run, on this machine.
 *
 * Data: "random" is crypto random bytes; "source" is real .js/.ts/.json/.map files from this repo's
 * node_modules (the kind of bytes JS build outputs are made of), as one buffer and as a tree.
 * Every figure is the median of several runs; MB/s = 10^6 bytes per second. Ratios compare against
 * the baseline on the same bytes in the same process, so they hold across machines better than the
 * absolute numbers do.
 *
 * Options: --quick (fewer, smaller runs), --json <file> (write the results).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import core from '@cascache/core';
import { sourceFiles } from './common.mjs';

const { Chunker, chunkLengths, digestOf, encodeBlob, decodeBlob, FsBlobStore, ingestDirectory, materializeToDirectory } = core;

const here = dirname(fileURLToPath(import.meta.url));
const work = join(here, '.work');
const quick = process.argv.includes('--quick');
const jsonOut = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
const RUNS = quick ? 3 : 5;
const MB = 1e6;

/** @param {number[]} xs */
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Median throughput of `fn` over RUNS runs (after one warm-up).
 * @param {number} bytes @param {() => unknown} fn
 */
async function measure(bytes, fn, runs = RUNS) {
  await fn();
  const rates = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push(bytes / s / MB);
  }
  return median(rates);
}

const rows = [];
/** @param {string} what @param {string} data @param {number} mbps @param {string} baseline @param {number} baseMbps @param {string} [target] @param {boolean} [ok] */
function row(what, data, mbps, baseline, baseMbps, target = '', ok) {
  rows.push({ what, data, mbps: +mbps.toFixed(0), baseline, baseMbps: +baseMbps.toFixed(0), ratio: +(mbps / baseMbps).toFixed(2), target, ok });
  const status = ok === undefined ? '' : ok ? '  ok' : '  MISSED';
  console.log(`${what.padEnd(28)} ${data.padEnd(7)} ${mbps.toFixed(0).padStart(6)} MB/s   ${baseline.padEnd(22)} ${baseMbps.toFixed(0).padStart(6)} MB/s   x${(mbps / baseMbps).toFixed(2).padEnd(6)} ${target}${status}`);
}

rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const SIZE = (quick ? 64 : 256) * 1024 * 1024;
const random = randomBytes(SIZE);
const files = sourceFiles(quick ? 48 * 1024 * 1024 : 128 * 1024 * 1024);
const sourceOnce = Buffer.concat(files.map(([, b]) => b));
const source = Buffer.concat(Array.from({ length: Math.ceil(SIZE / sourceOnce.length) }, () => sourceOnce)).subarray(0, SIZE);
console.log(`node ${process.version}, ${RUNS} runs each (median); random ${SIZE / 2 ** 20} MiB, source ${SIZE / 2 ** 20} MiB from ${files.length} real files\n`);
console.log(`${'what'.padEnd(28)} ${'data'.padEnd(7)} ${'cascache'.padStart(11)}   ${'baseline'.padEnd(22)} ${'same run'.padStart(11)}   ratio   target`);

const sha256 = (/** @type {Buffer} */ buf) => () => {
  for (let off = 0; off < buf.length; off += 1 << 20) createHash('sha256').update(buf.subarray(off, off + (1 << 20))).digest();
};

for (const [name, buf] of /** @type {const} */ ([['random', random], ['source', source]])) {
  const base = await measure(buf.length, sha256(buf));
  row('digest (BLAKE3, 1 MiB calls)', name, await measure(buf.length, () => {
    for (let off = 0; off < buf.length; off += 1 << 20) digestOf(buf.subarray(off, off + (1 << 20)));
  }), 'sha256 (node:crypto)', base);
  row('chunk (FastCDC 2020)', name, await measure(buf.length, () => chunkLengths(buf)), 'sha256 (node:crypto)', base);
  const chunker = new Chunker();
  const cd = await measure(buf.length, () => {
    for (let off = 0; off < buf.length; ) {
      const n = chunker.cut(buf, off, buf.length);
      digestOf(buf.subarray(off, off + n));
      off += n;
    }
  });
  row('chunk + digest', name, cd, 'sha256 (node:crypto)', base, '>= 500 MB/s', cd >= 500);
}

// zstd on chunks, as the store encodes them, beside gzip (what Nx bodies use) on the same chunks.
{
  const lengths = chunkLengths(source.subarray(0, 64 * 1024 * 1024));
  /** @type {Buffer[]} */
  const chunks = [];
  let off = 0;
  for (const l of lengths) chunks.push(source.subarray(off, (off += l)));
  const bytes = off;
  for (const level of [1, 3]) {
    let stored = 0;
    const enc = await measure(bytes, () => {
      stored = 0;
      for (const c of chunks) stored += encodeBlob(c, { level }).length;
    });
    let gz = 0;
    const gzBase = await measure(bytes, () => {
      gz = 0;
      for (const c of chunks) gz += gzipSync(c, { level: 1 }).length;
    });
    row(`zstd L${level} encode (${(bytes / stored).toFixed(1)}x)`, 'source', enc, `gzip L1 (${(bytes / gz).toFixed(1)}x)`, gzBase);
  }
  const frames = chunks.map((c) => encodeBlob(c, { level: 3 }));
  const digests = chunks.map((c) => digestOf(c));
  const frameGz = chunks.map((c) => gzipSync(c, { level: 1 }));
  const { gunzipSync } = await import('node:zlib');
  row('zstd decode + verify', 'source', await measure(bytes, () => frames.forEach((f, i) => decodeBlob(f, digests[i]))), 'gunzip', await measure(bytes, () => frameGz.forEach((f) => gunzipSync(f))));
}

// Trees: ingest beside `tar -c`, restore beside `tar -x`, on the same real source tree.
{
  const tree = join(work, 'tree');
  for (const [rel, b] of files) {
    mkdirSync(dirname(join(tree, rel)), { recursive: true });
    writeFileSync(join(tree, rel), b);
  }
  const bytes = files.reduce((a, [, b]) => a + b.length, 0);
  const sh = (cmd) => execFileSync('sh', ['-c', cmd], { stdio: 'ignore' });
  // GNU tar skips reading file contents when the archive is /dev/null, so pipe through cat.
  const tarC = await measure(bytes, () => sh(`tar -cf - -C '${tree}' . | cat > /dev/null`));
  let i = 0;
  let newBytes = 0;
  const ingest = await measure(bytes, async () => {
    const store = new FsBlobStore({ root: join(work, `store-${i++}`), level: 1 });
    const r = await ingestDirectory(store, tree);
    newBytes = r.newBytes;
  });
  row(`ingest dir, cold (${(bytes / newBytes).toFixed(1)}x)`, 'source', ingest, 'tar -c | cat', tarC, '>= 0.5x tar', ingest / tarC >= 0.5);
  const store = new FsBlobStore({ root: join(work, 'store-restore'), level: 1 });
  const { digest } = await ingestDirectory(store, tree);
  // Every chunk already stored: what a rebuild with few changes costs.
  row('ingest dir, warm', 'source', await measure(bytes, () => ingestDirectory(store, tree)), 'tar -c | cat', tarC);
  sh(`tar -cf '${work}/tree.tar' -C '${tree}' .`);
  let j = 0;
  const tarX = await measure(bytes, () => {
    const d = join(work, `x-${j++}`);
    mkdirSync(d);
    sh(`tar -xf '${work}/tree.tar' -C '${d}'`);
  });
  let k = 0;
  const restore = await measure(bytes, () => materializeToDirectory(store, digest, join(work, `r-${k++}`)));
  row('restore dir', 'source', restore, 'tar -x', tarX);
  for (const d of readdirSync(work)) if (/^(store-\d|x-|r-)/.test(d)) rmSync(join(work, d), { recursive: true, force: true });
  console.log(`\ntree: ${files.length} files, ${(bytes / MB).toFixed(1)} MB; tar written ${statSync(join(work, 'tree.tar')).size} bytes`);
}

if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ node: process.version, runs: RUNS, rows }, null, 2)}\n`);
rmSync(work, { recursive: true, force: true });
const missed = rows.filter((r) => r.ok === false);
console.log(missed.length ? `\n${missed.length} target(s) missed` : '\nall targets met');
