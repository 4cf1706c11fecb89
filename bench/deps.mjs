// @ts-check
/**
 * `node bench/deps.mjs` (in `npm run bench`): the two dependencies that needed an install script
 * (zstd-napi, still ours, and better-sqlite3, the index's SQLite until libsql replaced it: both
 * compile on install, and pnpm, yarn berry and strict npm refuse to run that without an approval)
 * beside the candidates that install from the registry alone, on the work cascache gives them. Issue 14's rule: a replacement may give up at most 10% on a hot path.
 *
 * - zstd, one frame per chunk: the blob codec's work. Real .js/.ts/.map bytes cut by our FastCDC
 *   (so chunk sizes are the store's), level 3 with the content size in the frame; every decoder is
 *   checked to return the bytes zstd-napi compressed.
 * - zstd, streaming decompress: a Turborepo PUT body (tar.zst) arriving in 64 KiB pieces.
 * - SQLite: the store index's write pattern (upserts in transactions of 2,000) and point lookups, in
 *   WAL mode; and two behaviours the index relies on: a read leaves no snapshot open (else another
 *   process cannot take the write lock and the WAL cannot be checkpointed), and a statement that
 *   failed on a lock does not block the next commit.
 * - The time to `require()` each, in a fresh process (it is on the agent's start path).
 *
 * Runs are interleaved and each figure is the median of 5 (3 with --quick). MB/s = 10^6 bytes/s.
 * Options: --quick, --json <file>.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import zlib from 'node:zlib';
import core from '@cascache/core';
import { arg, median, sourceFiles } from './common.mjs';

const require = createRequire(join(process.cwd(), 'packages', 'core', 'package.json'));
const quick = process.argv.includes('--quick');
const RUNS = quick ? 3 : 5;
const MB = 1e6;

const napi = require('zstd-napi');
const toon = require('@toondepauw/node-zstd');
const fzstd = require('fzstd');
const bokuweb = require('@bokuweb/zstd-wasm');
await bokuweb.init();
const nodeZstd = typeof (/** @type {any} */ (zlib).zstdCompressSync) === 'function' ? /** @type {any} */ (zlib) : null;

/** Whether an installed package runs a script on install (what pnpm, yarn berry and strict npm block). @param {string} name */
function installScript(name) {
  const dir = (require.resolve.paths(name) ?? []).map((d) => join(d, name)).find((d) => existsSync(join(d, 'package.json')));
  if (!dir) throw new Error(`${name} is not installed`);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const s = pkg.scripts ?? {};
  const script = s.preinstall ?? s.install ?? s.postinstall ?? (existsSync(join(dir, 'binding.gyp')) ? 'node-gyp rebuild (binding.gyp)' : null);
  return script ? `script: ${script}` : 'no script';
}

/** Median ms of `require(name)` in a fresh Node process. @param {string} name */
function requireMs(name) {
  const code = `const t=process.hrtime.bigint();require(${JSON.stringify(name)});process.stdout.write(String(Number(process.hrtime.bigint()-t)/1e6))`;
  const xs = [];
  for (let i = 0; i < RUNS; i++) xs.push(Number(execFileSync(process.execPath, ['-e', code], { cwd: join(process.cwd(), 'packages', 'core') }).toString()));
  return median(xs);
}

/** @type {Array<{ concern: string, pkg: string, installs: string, figure: string, value: number, today: number, ratio: number }>} */
const rows = [];
/** @param {string} concern @param {string} pkg @param {string} installs @param {string} unit @param {number} value @param {number} today @param {boolean} higherIsBetter */
function row(concern, pkg, installs, unit, value, today, higherIsBetter) {
  const ratio = higherIsBetter ? value / today : today / value;
  rows.push({ concern, pkg, installs, figure: unit, value: +value.toFixed(2), today: +today.toFixed(2), ratio: +ratio.toFixed(2) });
}

// --- zstd, one frame per chunk ---
const corpus = Buffer.concat(sourceFiles(quick ? 8e6 : 24e6).map(([, b]) => b));
const chunks = [];
for (let off = 0, i = 0, lengths = core.chunkLengths(corpus); i < lengths.length; off += lengths[i++]) chunks.push(corpus.subarray(off, off + lengths[i]));
console.log(`zstd: ${(corpus.length / MB).toFixed(1)} MB of source in ${chunks.length} FastCDC chunks (average ${(corpus.length / chunks.length / 1024).toFixed(1)} KiB), level 3`);

const napiC = new napi.Compressor();
napiC.setParameters({ compressionLevel: 3, contentSizeFlag: true, checksumFlag: false });
const napiD = new napi.Decompressor();
const toonE = new toon.Encoder(3);
const toonD = new toon.Decoder();
const zp = nodeZstd?.constants;
/** @type {Record<string, { pkg: string, compress?: (b: Buffer) => Uint8Array, decompress: (b: Buffer) => Uint8Array }>} */
const codecs = {
  'zstd-napi': { pkg: 'zstd-napi', compress: (b) => napiC.compress(b), decompress: (b) => napiD.decompress(b) },
  toondepauw: { pkg: '@toondepauw/node-zstd', compress: (b) => toonE.encodeSync(b), decompress: (b) => toonD.decodeSync(b) },
  bokuweb: { pkg: '@bokuweb/zstd-wasm', compress: (b) => bokuweb.compress(b, 3), decompress: (b) => bokuweb.decompress(b) },
  fzstd: { pkg: 'fzstd', decompress: (b) => fzstd.decompress(b) },
  ...(nodeZstd
    ? { 'node:zlib': { pkg: 'node:zlib', compress: (b) => nodeZstd.zstdCompressSync(b, { params: { [zp.ZSTD_c_compressionLevel]: 3 } }), decompress: (b) => nodeZstd.zstdDecompressSync(b) } }
    : {}),
};
const frames = chunks.map((c) => napiC.compress(c));
for (const [name, c] of Object.entries(codecs)) {
  for (let i = 0; i < chunks.length; i += 97) {
    if (!Buffer.from(c.decompress(frames[i])).equals(chunks[i])) throw new Error(`${name} decoded chunk ${i} wrongly`);
    if (c.compress && !Buffer.from(napiD.decompress(Buffer.from(c.compress(chunks[i])))).equals(chunks[i])) throw new Error(`${name} encoded chunk ${i} wrongly`);
  }
}
/** @type {Record<string, { c: number[], d: number[], bytes: number }>} */
const zs = {};
for (let r = 0; r <= RUNS; r++) {
  for (const [name, c] of Object.entries(codecs)) {
    const z = (zs[name] ??= { c: [], d: [], bytes: 0 });
    if (c.compress) {
      const t0 = process.hrtime.bigint();
      let bytes = 0;
      for (const ch of chunks) bytes += c.compress(ch).length;
      if (r > 0) z.c.push(corpus.length / (Number(process.hrtime.bigint() - t0) / 1e9) / MB);
      z.bytes = bytes;
    }
    const t1 = process.hrtime.bigint();
    for (const f of frames) c.decompress(f);
    if (r > 0) z.d.push(corpus.length / (Number(process.hrtime.bigint() - t1) / 1e9) / MB);
  }
}
for (const [name, c] of Object.entries(codecs)) {
  const z = zs[name];
  const installs = name === 'node:zlib' ? 'built into Node' : installScript(c.pkg);
  if (c.compress) row('zstd compress, per chunk', c.pkg, installs, 'MB/s', median(z.c), median(zs['zstd-napi'].c), true);
  row('zstd decompress, per chunk', c.pkg, installs, 'MB/s', median(z.d), median(zs['zstd-napi'].d), true);
}

// --- zstd, streaming decompress of a turbo body ---
const body = napi.compress(corpus);
const PIECE = 64 * 1024;
/** Median MB/s of decoding `body` fed in 64 KiB pieces. @param {(pieces: Buffer[]) => Promise<number>} decode */
async function streamRate(decode) {
  const pieces = [];
  for (let off = 0; off < body.length; off += PIECE) pieces.push(body.subarray(off, off + PIECE));
  const xs = [];
  for (let r = 0; r <= RUNS; r++) {
    const t0 = process.hrtime.bigint();
    if ((await decode(pieces)) !== corpus.length) throw new Error('stream decoded a wrong length');
    if (r > 0) xs.push(corpus.length / (Number(process.hrtime.bigint() - t0) / 1e9) / MB);
  }
  return median(xs);
}
const napiStream = await streamRate(async (pieces) => {
  let n = 0;
  for await (const out of Readable.from(pieces).pipe(new napi.DecompressStream())) n += out.length;
  return n;
});
const fzstdStream = await streamRate(async (pieces) => {
  let n = 0;
  const d = new fzstd.Decompress((chunk) => void (n += chunk.length));
  for (const p of pieces) d.push(p);
  d.push(new Uint8Array(0), true);
  return n;
});
row('zstd decompress, stream', 'fzstd', installScript('fzstd'), 'MB/s', fzstdStream, napiStream, true);
row('zstd decompress, stream', 'zstd-napi', installScript('zstd-napi'), 'MB/s', napiStream, napiStream, true);

// --- SQLite (better-sqlite3 is built against one Node ABI: under another Node it does not load) ---
const sqliteLoads = (() => {
  try {
    new (require('better-sqlite3'))(':memory:').close();
    return true;
  } catch (err) {
    console.log(`SQLite: better-sqlite3 does not load under Node ${process.version} (${/** @type {Error} */ (err).message.split('\n')[0]}); skipped`);
    return false;
  }
})();
const SCHEMA = 'CREATE TABLE blobs (digest TEXT PRIMARY KEY, stored_size INTEGER NOT NULL, raw_size INTEGER, indexed INTEGER NOT NULL) WITHOUT ROWID';
const ROWS = quick ? 10_000 : 40_000;
const digests = Array.from({ length: ROWS }, (_, i) => core.digestOf(Buffer.from(String(i))));
/** @type {Record<string, { ins: number[], get: number[] }>} */
const sq = {};
const work = mkdtempSync(join(tmpdir(), 'cascache-deps-'));
/** @param {string} name */
function openDb(name, file = join(work, `${name}-${Math.random()}.sqlite`)) {
  const Database = require(name);
  const db = new Database(file, { timeout: 50 });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  return { db, file };
}
for (let r = 0; r <= (sqliteLoads ? RUNS : -1); r++) {
  for (const name of ['better-sqlite3', 'libsql']) {
    const s = (sq[name] ??= { ins: [], get: [] });
    const { db } = openDb(name);
    db.exec(SCHEMA);
    const put = db.prepare(
      'INSERT INTO blobs (digest, stored_size, raw_size, indexed) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET stored_size = excluded.stored_size, indexed = excluded.indexed',
    );
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ROWS; i += 2000) db.transaction(() => { for (let j = i; j < i + 2000 && j < ROWS; j++) put.run(digests[j], j, j * 3, Date.now()); })();
    if (r > 0) s.ins.push(ROWS / (Number(process.hrtime.bigint() - t0) / 1e9));
    const one = db.prepare('SELECT stored_size FROM blobs WHERE digest = ?');
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < ROWS; i++) one.all(digests[(i * 7919) % ROWS]);
    if (r > 0) s.get.push(Number(process.hrtime.bigint() - t1) / 1e3 / ROWS);
    db.close();
  }
}
/** Whether a read with `.get()` leaves the reader's snapshot open, and whether a lock failure blocks the next commit. @param {string} name */
function sqliteBehaviour(name) {
  const { db, file } = openDb(name);
  db.exec(`${SCHEMA}; INSERT INTO blobs VALUES ('a', 1, 1, 1), ('b', 2, 2, 1)`);
  db.prepare('SELECT digest FROM blobs').get();
  const other = openDb(name, file).db;
  let readerHoldsSnapshot = false;
  try {
    other.exec('BEGIN EXCLUSIVE');
    other.exec('INSERT INTO blobs VALUES (\'c\', 3, 3, 1)');
    other.exec('COMMIT');
    db.pragma('wal_checkpoint(TRUNCATE)');
    readerHoldsSnapshot = Number(/** @type {any} */ (db.prepare('SELECT COUNT(*) AS n FROM blobs').all()[0]).n) !== 3;
  } catch {
    readerHoldsSnapshot = true;
    try { other.exec('ROLLBACK'); } catch { /* not in a transaction */ }
  }
  other.exec('BEGIN IMMEDIATE');
  const put = db.prepare("INSERT INTO blobs VALUES ('d', 4, 4, 1)");
  try { db.transaction(() => put.run())(); } catch { /* SQLITE_BUSY, as expected */ }
  other.exec('ROLLBACK');
  let failedStatementBlocksCommit = false;
  try { db.transaction(() => db.prepare("INSERT INTO blobs VALUES ('e', 5, 5, 1)").run())(); } catch { failedStatementBlocksCommit = true; }
  other.close();
  db.close();
  return { readerHoldsSnapshot, failedStatementBlocksCommit };
}
const behaviour = sqliteLoads ? { 'better-sqlite3': sqliteBehaviour('better-sqlite3'), libsql: sqliteBehaviour('libsql') } : {};
for (const name of sqliteLoads ? ['libsql', 'better-sqlite3'] : []) {
  row('SQLite upserts, 2,000 per transaction', name, installScript(name), 'rows/s', median(sq[name].ins), median(sq['better-sqlite3'].ins), true);
  row('SQLite point lookup', name, installScript(name), 'us', median(sq[name].get), median(sq['better-sqlite3'].get), false);
}
rmSync(work, { recursive: true, force: true });

// --- start-up cost ---
const startPairs = [['zstd-napi', 'zstd-napi'], ['@toondepauw/node-zstd', 'zstd-napi'], ['@bokuweb/zstd-wasm', 'zstd-napi'], ['fzstd', 'zstd-napi'], ...(sqliteLoads ? [['better-sqlite3', 'better-sqlite3'], ['libsql', 'better-sqlite3']] : [])];
const startMs = Object.fromEntries(startPairs.map(([n]) => [n, requireMs(n)]));
for (const [name, today] of startPairs) {
  row('require() in a fresh process', name, installScript(name), 'ms', startMs[name], startMs[today], false);
}

console.log(`Node ${process.version}; "vs today" is today's dependency's figure over the candidate's (above 1.00 is better, 0.90 is the 10% rule)\n`);
console.log(`${'what'.padEnd(38)} ${'package'.padEnd(22)} ${'value'.padStart(10)} ${'today'.padStart(10)} unit    vs today  installs`);
for (const r of rows) {
  console.log(`${r.concern.padEnd(38)} ${r.pkg.padEnd(22)} ${String(r.value).padStart(10)} ${String(r.today).padStart(10)} ${r.figure.padEnd(7)} x${r.ratio.toFixed(2).padEnd(7)} ${r.installs}`);
}
for (const [name, b] of Object.entries(behaviour)) {
  console.log(`${name}: a read with .get() ${b.readerHoldsSnapshot ? 'HOLDS its snapshot open (another process cannot take the write lock)' : 'releases its snapshot'}; ` +
    `a statement that failed on a lock ${b.failedStatementBlocksCommit ? 'BLOCKS every later commit ("SQL statements in progress")' : 'does not block the next commit'}`);
}
const jsonOut = arg('--json', undefined);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ node: process.version, rows, behaviour }, null, 2));
