// @ts-check
/**
 * `node bench/index.mjs`: what the SQLite store index costs writers and saves readers, side by side in
 * one process on the same stores.
 *
 * - Writers: a cold ingest of a real source tree plus its AC entry, into a store that keeps the index
 *   current vs one opened without it (which only marks the index stale on its first write).
 * - Readers: a store of N blobs and N/20 entries; store totals (`cascache stats`) and the evictor's
 *   size check from the index vs by listing and reading the files, and a full rebuild.
 *
 * Stores live in /dev/shm when it exists: on this machine's disk, writeback stalls moved single runs by
 * +-30%, far more than the difference measured; tmpfs leaves the CPU and syscall cost, which is what
 * the index adds. `--disk` puts them beside this file instead.
 *
 * Options: --blobs <n> (default 40000), --quick, --disk.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import core from '@cascache/core';
import { arg, median } from './common.mjs';

const { computeActionKey, digestOf, ingestDirectory, MANIFEST_FORMAT, openLocalStore, putManifest, storeStats } = core;

const here = dirname(fileURLToPath(import.meta.url));
const work = !process.argv.includes('--disk') && existsSync('/dev/shm') ? join('/dev/shm', `cascache-bench-index-${process.pid}`) : join(here, '.work-index');
const quick = process.argv.includes('--quick');
const RUNS = quick ? 3 : 5;
const N = Number(arg('--blobs', quick ? '10000' : '40000'));

/** Median ms of `fn` over RUNS runs after one warm-up. @param {() => unknown} fn */
async function ms(fn, runs = RUNS) {
  await fn();
  const xs = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(xs);
}

/** A tree of real source files from node_modules, about `limit` bytes. */
function sourceTree(dir, limit) {
  let total = 0;
  let files = 0;
  const root = join(here, '..', 'node_modules');
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (total >= limit) return;
      const p = join(d, e.name);
      if (e.isDirectory() && e.name !== '.cache' && e.name !== '.bin') walk(p);
      else if (e.isFile() && /\.(js|ts|json|map)$/.test(e.name)) {
        const b = readFileSync(p);
        const out = join(dir, `${files++}-${e.name}`);
        writeFileSync(out, b);
        total += b.length;
      }
    }
  };
  mkdirSync(dir, { recursive: true });
  walk(root);
  return { files, bytes: total };
}

rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
console.log(`node ${process.version}, ${RUNS} runs each (median), stores in ${dirname(work)}\n`);

// Writers.
{
  const tree = join(work, 'tree');
  const { files, bytes } = sourceTree(tree, quick ? 8e6 : 24e6);
  let i = 0;
  /** @param {boolean} index */
  const ingest = (index) => async () => {
    const store = await openLocalStore({ root: join(work, `w-${i++}`), secret: null, level: 1, index });
    const r = await ingestDirectory(store.blobs, tree);
    await store.actionCache.put('default', computeActionKey([String(i)]), { manifest: r.digest, size: r.logicalBytes });
    store.close();
  };
  // Alternate, so both see the same page cache and CPU state.
  const withIndex = [];
  const without = [];
  await ingest(true)();
  await ingest(false)();
  for (let r = 0; r < RUNS; r++) {
    without.push(await ms(ingest(false), 1));
    withIndex.push(await ms(ingest(true), 1));
  }
  const a = median(withIndex);
  const b = median(without);
  console.log(`cold ingest of ${files} files, ${(bytes / 1e6).toFixed(1)} MB: with the index ${a.toFixed(0)} ms, without ${b.toFixed(0)} ms (x${(a / b).toFixed(3)})`);
  for (const d of readdirSync(work)) if (d.startsWith('w-')) rmSync(join(work, d), { recursive: true, force: true });
}

// Readers.
{
  const root = join(work, 'big');
  const store = await openLocalStore({ root, secret: null, level: 1 });
  const t0 = Date.now();
  const chunks = [];
  for (let i = 0; i < N; i++) {
    const b = randomBytes(512 + (i % 1536));
    const d = digestOf(b);
    await store.blobs.put(d, b);
    chunks.push({ digest: d, length: b.length });
    if (chunks.length === 20) {
      const size = chunks.reduce((x, c) => x + c.length, 0);
      const m = await putManifest(store.blobs, { format: MANIFEST_FORMAT, entries: [{ path: 'x.bin', type: 'file', mode: 0o644, size, chunks: chunks.splice(0).map((c) => c.digest) }] });
      await store.actionCache.put('default', computeActionKey([String(i)]), { manifest: m.digest, size });
    }
  }
  store.close();
  console.log(`\nstore of ${N} chunks (+ ${N / 20} manifests, ${N / 20} entries) written in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${(statSync(join(root, 'v1', 'index.sqlite')).size / 1e6).toFixed(1)} MB index`);

  const indexed = await openLocalStore({ root, secret: null });
  const files = await openLocalStore({ root, secret: null, index: false });
  const same = JSON.stringify(await storeStats(indexed)) === JSON.stringify(await storeStats(files));
  const fromIndex = await ms(() => storeStats(indexed));
  const fromFiles = await ms(() => storeStats(files));
  console.log(`store totals (cascache stats): index ${fromIndex.toFixed(1)} ms, files ${fromFiles.toFixed(0)} ms (x${(fromFiles / fromIndex).toFixed(0)} faster); same figures: ${same}`);
  const sizeIndex = await ms(async () => {
    await indexed.index?.refresh(indexed);
    return indexed.index?.counts().storedBytes;
  });
  const sizeFiles = await ms(async () => {
    let total = 0;
    for await (const b of files.blobs.list()) total += b.storedSize;
    return total;
  });
  console.log(`evictor size check: index ${sizeIndex.toFixed(1)} ms, listing ${sizeFiles.toFixed(0)} ms (x${(sizeFiles / sizeIndex).toFixed(0)} faster)`);
  const rebuild = await ms(() => indexed.index?.rebuild(indexed), quick ? 1 : 3);
  console.log(`full rebuild from the files: ${rebuild.toFixed(0)} ms`);
  indexed.close();
}

rmSync(work, { recursive: true, force: true });
