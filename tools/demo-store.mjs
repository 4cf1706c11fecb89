// @ts-check
/**
 * `npm run demo`: what cascache does to a real build output, end to end, on this machine.
 *
 * Takes a real tree (default: this repo's node_modules/typescript, ~23 MB of real JS), stores it in
 * a fresh local store, changes one line of one file, stores it again, and restores both versions,
 * checking every byte. It prints what a remote cache would transfer and keep in each case, beside
 * what a whole-archive cache (one tar.gz per build) would.
 *
 * Usage: node tools/demo.mjs [tree-dir]
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import core from '@cascache/core';

const { computeActionKey, ingestDirectory, materializeToDirectory, openLocalStore } = core;
const repo = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const source = process.argv[2] ?? join(repo, 'node_modules/typescript');
const work = mkdtempSync(join(tmpdir(), 'cascache-demo-'));
const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;

try {
  const tree = join(work, 'build-output');
  cpSync(source, tree, { recursive: true, verbatimSymlinks: true });
  const store = await openLocalStore({ root: join(work, 'store'), secret: Buffer.alloc(32, 1), writer: 'demo' });
  const tgz = () => {
    execFileSync('tar', ['-czf', join(work, 'out.tgz'), '-C', tree, '.']);
    return statSync(join(work, 'out.tgz')).size;
  };

  let t = performance.now();
  const first = await ingestDirectory(store.blobs, tree);
  const firstMs = performance.now() - t;
  const key1 = computeActionKey(['demo', 'build', 'v1']);
  await store.actionCache.put('default', key1, { manifest: first.digest, size: first.logicalBytes });
  const tgz1 = tgz();
  console.log(`build 1: ${first.files} files, ${mb(first.logicalBytes)} in ${first.chunks} chunks -> stored ${mb(first.newBytes)} (${(first.logicalBytes / first.newBytes).toFixed(1)}x smaller) in ${firstMs.toFixed(0)} ms`);
  console.log(`         root digest ${first.digest}`);
  console.log(`         a whole-archive cache would upload and keep a ${mb(tgz1)} tar.gz`);

  // One-line change in the largest JS file, as an edit to one source file does to a bundle.
  const files = [];
  const walk = (d) => readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.isFile() && e.name.endsWith('.js') && files.push(join(d, e.name))));
  walk(tree);
  const target = files.sort((a, b) => statSync(b).size - statSync(a).size)[0];
  appendFileSync(target, '\n// one changed line\n');
  t = performance.now();
  const second = await ingestDirectory(store.blobs, tree);
  const secondMs = performance.now() - t;
  await store.actionCache.put('default', computeActionKey(['demo', 'build', 'v2']), { manifest: second.digest, size: second.logicalBytes });
  const tgz2 = tgz();
  console.log(`\nbuild 2: changed one line of ${relative(tree, target)}`);
  console.log(`         new chunks ${second.newChunks} of ${second.chunks}: stored ${mb(second.newBytes)} new bytes in ${secondMs.toFixed(0)} ms`);
  console.log(`         a whole-archive cache would upload and keep another ${mb(tgz2)} (${(tgz2 / second.newBytes).toFixed(0)}x more)`);

  const hit = await store.actionCache.get('default', key1);
  if (!hit) throw new Error('build 1 should be a cache hit');
  t = performance.now();
  await materializeToDirectory(store.blobs, hit.manifest, join(work, 'restored-1'));
  const restoreMs = performance.now() - t;
  const diff = (a, b) => execFileSync('diff', ['-r', '--no-dereference', a, b]).toString();
  await materializeToDirectory(store.blobs, second.digest, join(work, 'restored-2'));
  diff(join(work, 'restored-2'), tree);
  console.log(`\nrestore: build 1 restored from the action cache in ${restoreMs.toFixed(0)} ms; build 2 restored and byte-identical to the tree (diff -r)`);
  console.log(`store: ${readFileSync(join(work, 'store/v1/store.json'), 'utf8').includes('fastcdc-2020-nc1') ? 'FastCDC 2020, BLAKE3, zstd' : '?'} at ${join(work, 'store')} (removed on exit)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
