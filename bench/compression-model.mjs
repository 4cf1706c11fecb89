// @ts-check
/**
 * What each compression layout would store for the bench workspaces' outputs, beside the tar.gz
 * bodies Nx sends (docs/decisions.md, "Bytes stored by a cold build"). Bytes, not time: the figures
 * do not depend on the machine or its load.
 *
 * Each project's dist/ (built by the workspace's own build script, no Nx) is one output: its files in
 * path order, cut by the store's chunker, unique chunks only. Layouts: one zstd frame per chunk (what
 * the store does), per file, and an output's chunks in frames of up to 64 KiB / 256 KiB / 1 MiB, each
 * frame with the store's 16-byte header (and 8 bytes per chunk for its slice, for the grouped ones).
 * Baseline: `tar -c | gzip -6` of the same dist/.
 *
 * Options: --shape tsc|large (default tsc), --level N (zstd, default 3), --chunker '{"min":..,"avg":..,"max":..}'.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import core from '@cascache/core';
import e2eWorkspace from '../e2e/dist/nx-workspace.js';
import { arg } from './common.mjs';

const { activeZstd, chunkLengths, digestOf, DEFAULT_CHUNKER_PARAMS, BLOB_HEADER_BYTES } = core;
const shape = /** @type {'tsc' | 'large'} */ (arg('--shape', 'tsc'));
const level = Number(arg('--level', '3'));
const params = JSON.parse(arg('--chunker', JSON.stringify(DEFAULT_CHUNKER_PARAMS)));

const dir = mkdtempSync(join(tmpdir(), 'cascache-compression-model-'));
try {
  e2eWorkspace.writeWorkspace(dir, null, shape);
  const projects = readdirSync(join(dir, 'packages'));
  const built = new Set();
  while (built.size < projects.length) {
    for (const p of projects) {
      const deps = JSON.parse(readFileSync(join(dir, 'packages', p, 'package.json'), 'utf8')).nx.implicitDependencies ?? [];
      if (built.has(p) || !deps.every((/** @type {string} */ d) => built.has(d))) continue;
      execFileSync(process.execPath, ['../../build.js'], { cwd: join(dir, 'packages', p) });
      built.add(p);
    }
  }
  const zstd = activeZstd();
  /** @param {Buffer} b */
  const frame = (b) => BLOB_HEADER_BYTES + Math.min(b.length, zstd.compressFrame(b, level).length);
  /** @param {string} root @returns {string[]} */
  const filesOf = (root) =>
    readdirSync(root, { withFileTypes: true })
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .flatMap((e) => (e.isDirectory() ? filesOf(join(root, e.name)) : e.isFile() ? [join(root, e.name)] : []));
  const total = { raw: 0, targz: 0, perChunk: 0, perFile: 0, g64: 0, g256: 0, g1m: 0, chunks: 0 };
  for (const p of projects) {
    const dist = join(dir, 'packages', p, 'dist');
    if (!existsSync(dist)) continue;
    total.targz += Number(execFileSync('sh', ['-c', `tar -cf - -C '${dirname(dist)}' dist | gzip -6 | wc -c`]).toString().trim());
    const seen = new Set();
    /** @type {Buffer[]} */
    const chunks = [];
    for (const f of filesOf(dist)) {
      const bytes = readFileSync(f);
      total.raw += bytes.length;
      total.perFile += frame(bytes);
      let off = 0;
      for (const len of bytes.length > 0 ? chunkLengths(bytes, params) : []) {
        const c = bytes.subarray(off, (off += len));
        const d = digestOf(c);
        if (!seen.has(d)) {
          seen.add(d);
          chunks.push(c);
        }
      }
    }
    total.chunks += chunks.length;
    for (const c of chunks) total.perChunk += frame(c);
    for (const [key, limit] of /** @type {const} */ ([['g64', 65536], ['g256', 262144], ['g1m', 1048576]])) {
      /** @type {Buffer[]} */
      let group = [];
      let n = 0;
      const flush = () => {
        if (n > 0) total[key] += frame(Buffer.concat(group)) + 8 * group.length;
        group = [];
        n = 0;
      };
      for (const c of chunks) {
        if (n + c.length > limit) flush();
        group.push(c);
        n += c.length;
      }
      flush();
    }
  }
  /** @param {number} x */
  const ratio = (x) => `${(x / total.targz).toFixed(2)}x`;
  console.log(`shape ${shape}, zstd level ${level}, chunker ${JSON.stringify(params)}: ${total.raw} bytes of outputs, ${total.chunks} unique chunks, tar.gz ${total.targz} bytes`);
  console.log(`one frame per chunk ${ratio(total.perChunk)}, per file ${ratio(total.perFile)}, frames of <= 64 KiB ${ratio(total.g64)}, <= 256 KiB ${ratio(total.g256)}, <= 1 MiB ${ratio(total.g1m)} (of the tar.gz bodies)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
