// @ts-check
/**
 * What the agent's front process costs on the hot path: the same store served by the agent as the
 * plugin starts it (the front, which passes each request to its worker) and by a worker alone
 * (`CASCACHE_AGENT_ROLE=worker`, no front), side by side, rounds interleaved, medians.
 *
 * - a full hit: 12 bodies Nx-shaped (one ~20 MB app with a vendor bundle, eleven ~1 MB libraries),
 *   fetched in parallel as Nx does, read to the end;
 * - a miss: 200 GETs of unknown hashes one after another (the fixed cost per request).
 *
 * Options: --rounds N (default 7), --json <file>.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { gzipSync } from 'node:zlib';
import { arg, median, printRows } from './common.mjs';

const ROUNDS = Number(arg('--rounds', '7'));
const jsonOut = arg('--json', undefined);
const TOKEN = 'bench-token-0123456789abcdef0123456789';
const MAIN = join(import.meta.dirname ?? '.', '..', 'packages', 'server', 'dist', 'agent-main.js');

/** Pseudo-random minified-JS-like text of about `bytes` bytes (compresses ~3x, like a bundle). @param {number} bytes @param {number} seed */
function js(bytes, seed) {
  let x = seed >>> 0 || 1;
  const next = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>>= 0));
  const parts = [];
  for (let n = 0; n < bytes; ) {
    const line = `function f${next().toString(36)}(a,b){return a.${next().toString(36)}(${next() % 1000})||b.${next().toString(36)}}\n`;
    parts.push(line);
    n += line.length;
  }
  return parts.join('');
}

/** An Nx body: a tar.gz of one file plus terminalOutput and code, as Nx's client packs it. @param {number} bytes @param {number} seed */
async function nxBody(bytes, seed) {
  const tarStream = (await import('tar-stream')).default;
  const pack = tarStream.pack();
  pack.entry({ name: 'dist/main.js' }, js(bytes, seed));
  pack.entry({ name: 'terminalOutput' }, '> built\n');
  pack.entry({ name: 'code' }, Buffer.alloc(4));
  pack.finalize();
  const chunks = [];
  for await (const c of pack) chunks.push(c);
  return gzipSync(Buffer.concat(chunks), { level: 1 });
}

/** Starts agent-main.js and reads the `{port}` line it prints. @param {string} store @param {boolean} front */
async function start(store, front) {
  const proc = spawn(process.execPath, [MAIN], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, CASCACHE_AGENT_TOKEN: TOKEN, CASCACHE_DIR: store, CASCACHE_LOG_LEVEL: 'warn', ...(front ? {} : { CASCACHE_AGENT_ROLE: 'worker' }) },
  });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: /** @type {any} */ (proc.stdout) }).once('line', resolve);
    proc.once('exit', (code) => reject(new Error(`agent exited with ${code}`)));
  });
  return { base: `http://127.0.0.1:${JSON.parse(/** @type {string} */ (line)).port}`, proc };
}

const auth = { authorization: `Bearer ${TOKEN}` };
// One store each, every body PUT to each: both keep them as hot bodies, as after a real run.
const stores = [mkdtempSync(join(tmpdir(), 'cascache-bench-front-')), mkdtempSync(join(tmpdir(), 'cascache-bench-worker-'))];
try {
  console.log('building 12 Nx bodies (one ~20 MB app, eleven ~1 MB libraries)...');
  const bodies = [await nxBody(20e6, 7), ...(await Promise.all(Array.from({ length: 11 }, (_, i) => nxBody(1e6, 100 + i))))];
  const hashes = bodies.map((_, i) => String(9000000 + i));
  const front = await start(stores[0], true);
  const direct = await start(stores[1], false);
  for (const v of [front, direct]) {
    for (let i = 0; i < bodies.length; i++) {
      const r = await fetch(`${v.base}/v1/cache/${hashes[i]}`, { method: 'PUT', headers: { ...auth, 'content-length': String(bodies[i].length) }, body: bodies[i] });
      if (r.status !== 200) throw new Error(`PUT ${hashes[i]}: ${r.status}`);
    }
  }
  // The agent stores behind its answer: wait until both serve every body.
  for (const v of [front, direct]) {
    for (const h of hashes) {
      for (let tries = 0; ; tries++) {
        const r = await fetch(`${v.base}/v1/cache/${h}`, { headers: auth });
        await r.arrayBuffer();
        if (r.status === 200) break;
        if (tries > 600) throw new Error(`${h} never became a hit`);
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  }
  /** @param {string} base */
  const fullHit = async (base) => {
    const t0 = performance.now();
    const sizes = await Promise.all(hashes.map(async (h) => (await (await fetch(`${base}/v1/cache/${h}`, { headers: auth })).arrayBuffer()).byteLength));
    if (sizes.some((n, i) => n < bodies[i].length / 2)) throw new Error(`short bodies: ${sizes.join(' ')}`);
    return performance.now() - t0;
  };
  /** @param {string} base */
  const misses = async (base) => {
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) {
      const r = await fetch(`${base}/v1/cache/${100000 + i}`, { headers: auth });
      await r.arrayBuffer();
      if (r.status !== 404) throw new Error(`miss answered ${r.status}`);
    }
    return (performance.now() - t0) / 200;
  };
  /** @type {Record<string, { hit: number[], miss: number[] }>} */
  const t = { front: { hit: [], miss: [] }, direct: { hit: [], miss: [] } };
  await fullHit(front.base);
  await fullHit(direct.base);
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, v] of r % 2 ? [['direct', direct], ['front', front]] : [['front', front], ['direct', direct]]) {
      t[name].hit.push(await fullHit(/** @type {any} */ (v).base));
      t[name].miss.push(await misses(/** @type {any} */ (v).base));
    }
  }
  const rows = [
    { what: 'full hit, 12 bodies in parallel', front: median(t.front.hit), direct: median(t.direct.hit), unit: 'ms' },
    { what: 'miss, per request', front: median(t.front.miss), direct: median(t.direct.miss), unit: 'ms' },
  ].map((r) => ({ ...r, front: +r.front.toFixed(2), direct: +r.direct.toFixed(2), ratio: +(r.front / r.direct).toFixed(3) }));
  printRows(rows.map((r) => [`${r.what}, through the front`, `${r.front} ${r.unit}`, `x${r.ratio.toFixed(3)}`, `worker alone ${r.direct} ${r.unit}`, undefined]));
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ rounds: ROUNDS, rows }, null, 2));
  front.proc.kill('SIGTERM');
  direct.proc.kill('SIGTERM');
  await Promise.all([front, direct].map((v) => new Promise((res) => (v.proc.exitCode !== null ? res(null) : v.proc.once('exit', res)))));
} finally {
  for (const s of stores) rmSync(s, { recursive: true, force: true });
}
