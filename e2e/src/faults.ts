/**
 * The fault suite (issue 12): what a hostile probe and an unlucky operator did to cascache, as a
 * reproducible run with figures. Everything is real and on loopback: `cascache serve` and the agent
 * as processes, s3rver for S3, real nx 24 with the plugin from npm pack tarballs. Every loop is
 * bounded. Each scenario counts attempts, the ones answered as they must be ("rejected correctly"
 * for hostile input, "build ok" for a build under a fault), bytes stored or served wrongly (must be
 * 0), crashes (0) and builds the cache failed (0).
 *
 * - `hostile`: bad tokens, hostile bodies (traversal, links out, bombs, truncated gzip), poisoning
 *   (another body for a stored hash, AC replace and delete without admin) and malformed requests
 *   against `cascache serve`; afterwards every stored hash serves its original bytes, the server
 *   still answers, and `cascache verify` finds nothing wrong.
 * - `kill -9`: the server killed while it receives a 3 MB upload, at a different point each round,
 *   then started again on the same store: `verify` finds nothing wrong, and the hash is a miss or
 *   its whole, correct output.
 * - `points`: three `cascache serve` processes writing to one store at once, one of them killed at
 *   a named point of its upload (`CASCACHE_CRASH_AT`): the others' uploads all serve, the victim's
 *   hash is a miss or whole, and `verify` finds nothing wrong.
 * - `replicas`: two `cascache serve` replicas on one S3 tier (s3rver with S3's conditional PUT), the
 *   same hash PUT to both at once with different outputs: after a flush, both and a third replica
 *   serve the same one, and the bucket holds it.
 * - `store`: real nx runs with the agent's store directory deleted under it: the next run builds,
 *   the one after hits again, and the old agent does not linger.
 * - `agent`: real nx runs whose agent worker kills itself at a named point of every upload (one
 *   while Nx waits for the answer, two after it); its front answers and starts new workers.
 *   Today the run fails: Nx's client fails a run on a refused connection (docs/reliability.md).
 * - `readonly`: real nx runs with the store on a read-only bind mount (`unshare -rm`): every run
 *   builds, with the outputs of a build without cache.
 * - `fulldisk`: real nx runs with the store on a small tmpfs that fills up during the cold build,
 *   then a run after `nx reset` on the full disk, then `verify`: every run builds with the outputs
 *   of a build without cache, and verify finds nothing wrong.
 * - `load`: wrk on GETs and on a PUT/GET mix, then 200 slow-header connections beside GETs; every
 *   answer right, resident memory bounded; throughput and latency reported.
 * - `remote faults`: real nx runs and real turbo runs through `cascache turbo` (CI=true, empty local
 *   store and the tool's own cache emptied, so every lookup goes remote) with the
 *   one remote tier down (connection refused), hanging (accepts, never answers), answering 503,
 *   behind a slow link that cuts connections mid-transfer (shaping-proxy.ts), or holding damaged
 *   packs: the build succeeds with outputs identical to a clean build; the time is reported, beside
 *   a run with the tier healthy.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { S3ObjectStore } from '@cascache/core';
import { changeOneLine, cleanEnv, install, openWorkspace, removeOutputs, snapshotOutputs, stopAgent, tempWorkspaceDir, writeWorkspace, type Workspace } from './nx-workspace';
import { packAll } from './pack';
import { startShapingProxyProcess } from './shaping-proxy';
import { cascacheTurbo, installTurbo, removeTurboState, writeTurboWorkspace } from './turbo-workspace';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startS3Server } = require(resolve(__dirname, '../../tools/s3rver.js')) as { startS3Server: (buckets: string[], options?: { conditionalWrites?: boolean }) => Promise<{ endpoint: string; close(): Promise<void> }> };

const CLI = resolve(__dirname, '../../packages/cli/dist/bin.js');

export interface FaultRow {
  scenario: string;
  attempts: number;
  /** Answered as they must be: hostile input rejected, a build under a fault succeeding. */
  handled: number;
  /** Bytes stored or served wrongly (must be 0). */
  wrong: number;
  crashes: number;
  /** Builds that failed because of the cache (must be 0). */
  buildsFailed: number;
  /** Slowest attempt, ms (remote faults: a whole nx run). */
  worstMs?: number;
  notes?: string;
}

export interface FaultOptions {
  /** Fewer rounds (the version `npm test` runs). */
  short: boolean;
  /** Run only these scenarios (`hostile`, `kill`, `points`, `replicas`, `agent`, `store`, `readonly`, `fulldisk`, `load`, `remote`); default all. */
  only?: string[];
  log?: (line: string) => void;
}

// ---------------------------------------------------------------------------------------------
// Request helpers

type TarEntry = { name: string; body?: Buffer | string; type?: 'file' | 'symlink' | 'character-device'; linkname?: string };

/** A tar of the given entries (tar-stream), hostile ones included. */
async function tar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const { body, ...header } of entries) {
    if (body === undefined) pack.entry(header);
    else pack.entry(header, body);
  }
  pack.finalize();
  return buffer(pack as unknown as AsyncIterable<Uint8Array>);
}

const code0 = Buffer.alloc(4);
/** A body as Nx's client builds one: the files, then `terminalOutput` and `code`, gzipped. */
const nxBody = async (files: TarEntry[]) => gzipSync(await tar([...files, { name: 'terminalOutput', body: '> built\n' }, { name: 'code', body: code0 }]));

async function http(base: string, method: string, path: string, token: string | null, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  const r = await fetch(`${base}${path}`, { method, body, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/octet-stream' } : {}) } });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}

/** Starts `cascache serve` on a free port; resolves once it prints its address. */
async function serve(storeDir: string, env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--store-dir', storeDir], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const base = await new Promise<string>((ok, fail) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) ok(m[1]!);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (c) => fail(new Error(`cascache serve exited with ${c}: ${out}`)));
  });
  return { child, base };
}

const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
const stopped = (c: ChildProcess, signal: NodeJS.Signals) =>
  new Promise<void>((ok) => {
    if (!alive(c)) return ok();
    c.once('exit', () => ok());
    c.kill(signal);
  });

function verifyClean(storeDir: string): boolean {
  const r = spawnSync(process.execPath, [CLI, 'verify', '--store-dir', storeDir], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('no problems found');
}

/**
 * The regular files of an Nx body, by name (sorted), content in base64, for comparing what a GET
 * served: a rebuilt tar may add directory entries and order them its way. A body that is not a
 * gzip tar gives a marker no real body matches.
 */
async function filesOf(gz: Buffer): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  try {
    const extract = tarStream.extract();
    Readable.from([gunzipSync(gz)]).pipe(extract as unknown as NodeJS.WritableStream);
    for await (const e of extract) {
      const bytes = await buffer(e as unknown as AsyncIterable<Uint8Array>);
      if (e.header.type === 'file') out[e.header.name] = bytes.toString('base64');
    }
  } catch {
    return { '(not a gzip tar)': gz.toString('base64') };
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

// ---------------------------------------------------------------------------------------------
// Scenario: hostile requests

async function hostile(o: FaultOptions): Promise<FaultRow> {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-faults-hostile-'));
  const RW = 'rw-token-0123456789abcdef';
  const RO = 'ro-token-0123456789abcdef';
  const { child, base } = await serve(join(dir, 'store'), { CASCACHE_TOKENS_RW: RW, CASCACHE_TOKENS_RO: RO, CASCACHE_SECRET: 'faults-hostile-secret-0123456789abcdef' });
  const row: FaultRow = { scenario: 'hostile requests to cascache serve', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0 };
  try {
    const good = await nxBody([{ name: 'dist/a.js', body: 'export const a = 1;\n'.repeat(500) }]);
    if ((await http(base, 'PUT', '/v1/cache/1', RW, good)).status !== 200) throw new Error('could not seed the server');
    const expected = await filesOf(good);
    const big = Buffer.alloc(1_500_000, 'x');
    const attacks: Array<[string, () => Promise<{ status: number }>, number[]]> = [
      ['no token', () => http(base, 'GET', '/v1/cache/1', null), [401]],
      ['wrong token', () => http(base, 'GET', '/v1/cache/1', 'nope'), [401]],
      ['read-only token writes', () => http(base, 'PUT', '/v1/cache/2', RO, good), [403]],
      ['traversal', async () => http(base, 'PUT', '/v1/cache/3', RW, await nxBody([{ name: 'dist/big.bin', body: big }, { name: '../x', body: 'x' }])), [400]],
      ['absolute path', async () => http(base, 'PUT', '/v1/cache/4', RW, await nxBody([{ name: '/etc/x', body: 'x' }])), [400]],
      ['symlink out', async () => http(base, 'PUT', '/v1/cache/5', RW, await nxBody([{ name: 'l', type: 'symlink', linkname: '../../../etc' }])), [400]],
      ['file under a symlink', async () => http(base, 'PUT', '/v1/cache/6', RW, await nxBody([{ name: 'l', type: 'symlink', linkname: 'd' }, { name: 'l/x', body: 'x' }])), [400]],
      ['device', async () => http(base, 'PUT', '/v1/cache/7', RW, await nxBody([{ name: 'dist/big.bin', body: big }, { name: 'dev', type: 'character-device' }])), [400]],
      ['no code entry', async () => http(base, 'PUT', '/v1/cache/8', RW, gzipSync(await tar([{ name: 'dist/a.js', body: 'a' }]))), [400]],
      ['truncated gzip', () => http(base, 'PUT', '/v1/cache/9', RW, good.subarray(0, good.length - 9)), [400]],
      ['decompression bomb', async () => http(base, 'PUT', '/v1/cache/10', RW, gzipSync(await tar([{ name: 'dist/zeros', body: Buffer.alloc(100_000_000) }]), { level: 9 })), [400]],
      ['another body for a stored hash', async () => http(base, 'PUT', '/v1/cache/1', RW, await nxBody([{ name: 'dist/evil.js', body: 'evil' }])), [409]],
      ['AC replace without admin', () => http(base, 'PUT', `/cas/v1/ac/default/${'ab'.repeat(32)}?replace=1`, RW, Buffer.from('garbage')), [400, 403, 409]],
      ['AC delete without admin', () => http(base, 'DELETE', `/cas/v1/ac/default/${'ab'.repeat(32)}`, RW), [403]],
      ['hash above u64', () => http(base, 'GET', '/v1/cache/18446744073709551616', RW), [400]],
      ['long URL', () => http(base, 'GET', `/v1/cache/${'9'.repeat(5000)}`, RW), [414]],
      ['turbo body that is not zstd', () => http(base, 'PUT', '/v8/artifacts/0123456789abcdef?slug=t', RW, Buffer.from('not zstd')), [400]],
    ];
    const rounds = o.short ? 1 : 3;
    for (let round = 0; round < rounds; round++) {
      for (const [name, attack, ok] of attacks) {
        row.attempts++;
        const r = await attack().catch(() => ({ status: 0 }));
        if (ok.includes(r.status)) row.handled++;
        else o.log?.(`hostile: ${name} answered ${r.status}, expected ${ok.join('/')}`);
      }
    }
    // Nothing stored or served wrongly: the seeded hash serves its own files; no hostile hash stored.
    const back = await http(base, 'GET', '/v1/cache/1', RW);
    if (back.status !== 200 || JSON.stringify(await filesOf(back.body)) !== JSON.stringify(expected)) {
      row.wrong++;
      o.log?.(`hostile: the seeded hash answered ${back.status} with other files`);
    }
    for (let h = 2; h <= 10; h++) {
      const r = await http(base, 'GET', `/v1/cache/${h}`, RW);
      if (r.status !== 404) {
        row.wrong++;
        o.log?.(`hostile: hash ${h} answered ${r.status} after a rejected upload`);
      }
    }
    if ((await http(base, 'GET', '/healthz', null)).status !== 200 || !alive(child)) row.crashes++;
  } finally {
    await stopped(child, 'SIGTERM');
  }
  if (!verifyClean(join(dir, 'store'))) {
    row.wrong++;
    o.log?.('hostile: verify found problems afterwards');
  }
  rmSync(dir, { recursive: true, force: true });
  return row;
}

// ---------------------------------------------------------------------------------------------
// Scenario: kill -9 of the server mid-upload

async function killMidUpload(o: FaultOptions): Promise<FaultRow> {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-faults-kill-'));
  const store = join(dir, 'store');
  const row: FaultRow = { scenario: 'kill -9 of cascache serve mid-upload, restart', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0 };
  // 3 MB that does not repeat: many chunks, so kills land between chunk writes.
  const text = Array.from({ length: 60_000 }, (_, i) => `export const v${i} = ${(i * 2654435761) % 1000003};`).join('\n');
  const body = await nxBody([{ name: 'dist/big.js', body: text }]);
  const expected = await filesOf(body);
  const rounds = o.short ? 3 : 12;
  for (let round = 0; round < rounds; round++) {
    row.attempts++;
    const { child, base } = await serve(store, {});
    const port = Number(new URL(base).port);
    // Send a growing share of the body each round, then kill -9 while the server holds it.
    const cut = Math.floor((body.length * (round + 1)) / (rounds + 1));
    const socket: Socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write(`PUT /v1/cache/${4242 + round} HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: ${body.length}\r\n\r\n`);
    await new Promise<void>((ok) => socket.write(body.subarray(0, cut), () => ok()));
    await stopped(child, 'SIGKILL');
    socket.destroy();
    // Restarted on the same store: consistent, and the hash is a miss (the body never arrived whole).
    const again = await serve(store, {});
    const r = await http(again.base, 'GET', `/v1/cache/${4242 + round}`, null);
    const ok = r.status === 404 || (r.status === 200 && JSON.stringify(await filesOf(r.body)) === JSON.stringify(expected));
    // And the same upload, whole, now stores and serves correctly.
    const put = await http(again.base, 'PUT', `/v1/cache/${4242 + round}`, null, body);
    const got = await http(again.base, 'GET', `/v1/cache/${4242 + round}`, null);
    const healed = [200, 409].includes(put.status) && got.status === 200 && JSON.stringify(await filesOf(got.body)) === JSON.stringify(expected);
    if (!alive(again.child)) row.crashes++;
    await stopped(again.child, 'SIGTERM');
    const clean = verifyClean(store);
    if (ok && healed && clean) row.handled++;
    else {
      row.wrong++;
      o.log?.(`kill -9 round ${round}: after restart GET ${r.status} (miss or whole: ${ok}); re-upload ${put.status} ${put.body.toString().slice(0, 200)}, then GET ${got.status}; verify clean ${clean}`);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return row;
}

// ---------------------------------------------------------------------------------------------
// Scenario: remote tier faults during real nx runs

const BUCKET = 'cascache-faults';
const SECRET = 'faults-shared-signing-secret-0123456789abcdef';

async function listening<T extends Server | ReturnType<typeof createNetServer>>(server: T): Promise<{ server: T; port: number }> {
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  return { server, port: (server.address() as { port: number }).port };
}

/** One tool's workspace for the remote-fault runs: how to point it at a tier, reset it, and build. */
interface FaultWorkspace {
  dir: string;
  /** A build with uploads to `tier` (CI=true); how many tasks came from the cache, as the tool says. */
  build(tier: string): { restored: number; tasks: number } | undefined;
  /** Forget every local cache: the agent's store and the tool's own. */
  reset(): void;
}

/** The bad network in front of the healthy S3 server (`slow and cutting` rows). */
const SLOW_LINK = { latencyMs: 25, bytesPerSecond: 4_000_000, cutEveryBytes: 96 * 1024 };

async function remoteFaults(o: FaultOptions): Promise<FaultRow[]> {
  const s3 = await startS3Server([BUCKET]);
  const home = tempWorkspaceDir('cascache-faults-home-');
  const hung: Socket[] = [];
  const hang = await listening(createNetServer((s) => hung.push(s))); // accepts, never answers
  const unavailable = await listening(createHttpServer((_req, res) => res.writeHead(503).end()));
  const closed = await listening(createNetServer());
  const closedPort = closed.port;
  await new Promise<void>((ok) => closed.server.close(() => ok())); // nothing listens there now
  const s3url = (endpoint: string, prefix: string) => `s3://${BUCKET}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&forcePathStyle=true`;
  const env = { HOME: home, CI: 'true', CASCACHE_SECRET: SECRET, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  const dirs: string[] = [];
  const rows: FaultRow[] = [];
  let slow: Awaited<ReturnType<typeof startShapingProxyProcess>> | undefined;
  try {
    // The healthy server across a bad network: 25 ms each way, 4 MB/s, a connection cut every 96 KiB
    // served (in a child process: the runs below block this one's event loop).
    slow = await startShapingProxyProcess(Number(new URL(s3.endpoint).port), SLOW_LINK);
    const t = packAll();
    const nxDir = tempWorkspaceDir('cascache-faults-nx-');
    dirs.push(nxDir);
    writeWorkspace(nxDir, { idleTimeoutMs: 300_000, tiers: [] });
    install(nxDir, [t.core, t.server, t.nx, t.cli]);
    const nx = openWorkspace(nxDir);
    const turboDir = tempWorkspaceDir('cascache-faults-turbo-');
    dirs.push(turboDir);
    writeTurboWorkspace(turboDir);
    installTurbo(turboDir, [t.core, t.server, t.nx, t.cli]);
    const tools: Array<[string, FaultWorkspace]> = [
      [
        'nx',
        {
          dir: nxDir,
          // The tier comes from CASCACHE_TIERS, not nx.json: the plugin's options are part of every
          // Nx task hash, so a tier written into nx.json would make each row look up new hashes and
          // never read what the clean build stored (nx.json keeps `tiers: []`).
          build: (tier) => {
            const out = nx.nx(['run-many', '-t', 'build'], { ...env, CASCACHE_TIERS: JSON.stringify([tier]) }).stdout;
            const m = /cascache: (\d+) tasks, (\d+) from cascache/.exec(out);
            return m ? { tasks: Number(m[1]), restored: Number(m[2]) } : undefined;
          },
          reset: () => {
            nx.nx(['reset'], env);
            removeOutputs(nxDir);
          },
        },
      ],
      [
        'turbo',
        {
          dir: turboDir,
          build: (tier) => {
            const m = /Cached:\s+(\d+) cached, (\d+) total/.exec(cascacheTurbo(turboDir, ['--team', 'faults', '--remote', tier], env).output);
            return m ? { restored: Number(m[1]), tasks: Number(m[2]) } : undefined;
          },
          reset: () => removeTurboState(turboDir),
        },
      ],
    ];
    for (const [tool, ws] of tools) {
      ws.build(s3url(s3.endpoint, tool)); // the clean build, uploaded to s3rver
      const clean = snapshotOutputs(ws.dir);
      // A copy of the tool's objects with one byte of every pack flipped.
      const objects = new S3ObjectStore({ bucket: BUCKET, endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
      for await (const obj of objects.list(`${tool}/`)) {
        const bytes = await objects.get(obj.key);
        if (!bytes) continue;
        if (obj.key.endsWith('.pack')) bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
        await objects.put(`${tool}-damaged/${obj.key.slice(tool.length + 1)}`, bytes);
      }
      const faults: Array<[string, string]> = [
        ['healthy (for comparison: everything restored from it)', s3url(s3.endpoint, tool)],
        ['down (connection refused)', s3url(`http://127.0.0.1:${closedPort}`, tool)],
        ['hanging (accepts, never answers)', s3url(`http://127.0.0.1:${hang.port}`, tool)],
        ['answering 503', s3url(`http://127.0.0.1:${unavailable.port}`, tool)],
        [`slow and cutting (a proxy: +${SLOW_LINK.latencyMs} ms each way, ${SLOW_LINK.bytesPerSecond / 1e6} MB/s, a connection cut every ${SLOW_LINK.cutEveryBytes / 1024} KiB served)`, s3url(slow.endpoint, tool)],
        ['holding damaged packs', s3url(s3.endpoint, `${tool}-damaged`)],
      ];
      const rounds = o.short ? 1 : 2;
      for (const [name, url] of faults) {
        const row: FaultRow = { scenario: `remote tier ${name}: real ${tool} runs`, attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0, worstMs: 0 };
        const proxied = await slow.stats();
        const restored: string[] = [];
        for (let round = 0; round < rounds; round++) {
          row.attempts++;
          stopAgent(join(ws.dir, '.cascache'));
          rmSync(join(ws.dir, '.cascache'), { recursive: true, force: true });
          ws.reset();
          const t0 = Date.now();
          try {
            const got = ws.build(url);
            if (got) restored.push(`${got.restored}/${got.tasks}`);
            // The healthy tier must restore everything (its row's name says so); the others must build.
            if (url !== faults[0]![1] || (got && got.restored === got.tasks)) row.handled++;
            if (JSON.stringify(snapshotOutputs(ws.dir)) !== JSON.stringify(clean)) row.wrong++;
          } catch (err) {
            row.buildsFailed++;
            o.log?.(`${tool}, ${name}: the build failed: ${(err as Error).message.slice(0, 2000)}`);
          }
          row.worstMs = Math.max(row.worstMs!, Date.now() - t0);
        }
        const notes = restored.length > 0 ? [`tasks from the cache: ${restored.join(', ')}`] : [];
        if (url.includes(encodeURIComponent(slow.endpoint))) {
          const now = await slow.stats();
          notes.push(`${now.cut - proxied.cut} of ${now.connections - proxied.connections} connections cut mid-transfer`);
        }
        if (notes.length > 0) row.notes = notes.join('; ');
        o.log?.(`${tool}, ${name}: ${row.handled}/${row.attempts} builds ok, slowest ${row.worstMs} ms${row.notes ? `; ${row.notes}` : ''}`);
        rows.push(row);
      }
    }
  } finally {
    for (const d of dirs) stopAgent(join(d, '.cascache'));
    for (const s of hung) s.destroy();
    hang.server.close();
    unavailable.server.close();
    await slow?.close();
    await s3.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Scenario: kill -9 at named points, with concurrent writers from other processes on the store

/**
 * Three `cascache serve` processes on one store, each storing uploads at the same time; one of them
 * kills itself (`CASCACHE_CRASH_AT`) at a named point of its upload: after every chunk and the
 * manifest are written but before the entry, or after the entry but before the answer. The others'
 * uploads must all serve their own bytes, the victim's hash must be a miss or its whole output, a
 * re-upload must store it, and `verify` must find nothing wrong.
 */
async function killAtPoints(o: FaultOptions): Promise<FaultRow> {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-faults-points-'));
  const store = join(dir, 'store');
  const row: FaultRow = { scenario: 'kill -9 at named points of an upload, beside 2 writer processes on the same store', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0 };
  // Shared text (chunks every writer stores at once) and a line of its own per hash.
  const shared = Array.from({ length: 30_000 }, (_, i) => `export const s${i} = ${(i * 2654435761) % 1000003};`).join('\n');
  const bodyFor = (hash: number) => nxBody([{ name: 'dist/shared.js', body: shared }, { name: 'dist/own.js', body: `export const own = ${hash};\n`.repeat(200) }]);
  const rounds = o.short ? 1 : 3;
  let next = 70_000;
  const points = ['ingested', 'entry-written'];
  for (let round = 0; round < rounds; round++) {
    for (const point of points) {
      row.attempts++;
      const victim = await serve(store, { CASCACHE_CRASH_AT: point, CASCACHE_LOG_LEVEL: 'warn' });
      const writers = await Promise.all([serve(store, { CASCACHE_LOG_LEVEL: 'warn' }), serve(store, { CASCACHE_LOG_LEVEL: 'warn' })]);
      const victimHash = next++;
      const writerHashes = writers.map(() => [next++, next++, next++]);
      const expected = new Map<number, string>();
      for (const h of [victimHash, ...writerHashes.flat()]) expected.set(h, JSON.stringify(await filesOf(await bodyFor(h))));
      const victimExit = new Promise<NodeJS.Signals | null>((ok) => victim.child.once('exit', (_code, signal) => ok(signal)));
      const puts = await Promise.all([
        http(victim.base, 'PUT', `/v1/cache/${victimHash}`, null, await bodyFor(victimHash)).catch(() => ({ status: 0 })),
        ...writers.flatMap((w, i) => writerHashes[i]!.map(async (h) => http(w.base, 'PUT', `/v1/cache/${h}`, null, await bodyFor(h)).catch(() => ({ status: 0 })))),
      ]);
      const killedAtPoint = (await victimExit) === 'SIGKILL';
      const writersOk = puts.slice(1).every((p) => p.status === 200);
      for (const w of writers) {
        if (!alive(w.child)) row.crashes++;
        await stopped(w.child, 'SIGTERM');
      }
      // Started again on the same store: every writer's upload serves its own bytes; the victim's
      // hash is a miss or whole; its upload, sent again, stores.
      const again = await serve(store, { CASCACHE_LOG_LEVEL: 'warn' });
      const problems: string[] = [];
      for (const h of writerHashes.flat()) {
        const r = await http(again.base, 'GET', `/v1/cache/${h}`, null);
        if (r.status !== 200 || JSON.stringify(await filesOf(r.body)) !== expected.get(h)) problems.push(`writer hash ${h}: GET ${r.status}`);
      }
      const v = await http(again.base, 'GET', `/v1/cache/${victimHash}`, null);
      const victimOk = v.status === 404 || (v.status === 200 && JSON.stringify(await filesOf(v.body)) === expected.get(victimHash));
      if (!victimOk) problems.push(`victim hash: GET ${v.status} with other bytes`);
      const put = await http(again.base, 'PUT', `/v1/cache/${victimHash}`, null, await bodyFor(victimHash));
      const back = await http(again.base, 'GET', `/v1/cache/${victimHash}`, null);
      if (![200, 409].includes(put.status) || back.status !== 200 || JSON.stringify(await filesOf(back.body)) !== expected.get(victimHash)) problems.push(`victim re-upload ${put.status}, then GET ${back.status}`);
      if (!alive(again.child)) row.crashes++;
      await stopped(again.child, 'SIGTERM');
      if (!verifyClean(store)) problems.push('verify found problems');
      if (problems.length > 0) {
        row.wrong++;
        o.log?.(`kill at ${point}, round ${round}: ${problems.join('; ')}`);
      } else if (!killedAtPoint || !writersOk) {
        o.log?.(`kill at ${point}, round ${round}: victim killed at the point ${killedAtPoint}; writers' uploads ${puts.slice(1).map((p) => p.status).join(',')}`);
      } else row.handled++;
    }
  }
  row.notes = `points: ${points.join(', ')}; ${rounds} round(s) each`;
  rmSync(dir, { recursive: true, force: true });
  return row;
}

// ---------------------------------------------------------------------------------------------
// Scenario: two team-server replicas on one S3 tier, racing on one hash

/**
 * Two `cascache serve` replicas, each on its own store, sharing one S3 tier (s3rver with S3's
 * conditional PUT, as AWS S3 has it), and a third replica that only reads. Each round both replicas
 * receive a PUT of the same hash at the same moment, with different outputs (a task that is not
 * reproducible, built on two CI machines at once); once their uploads are flushed, all three must
 * serve the same output, one of the two, and the bucket must hold its entry: exactly one wins
 * everywhere. Before the flush each replica serves what it was sent (write-behind).
 */
async function replicas(o: FaultOptions): Promise<FaultRow> {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-faults-replicas-'));
  const s3 = await startS3Server([BUCKET], { conditionalWrites: true });
  const row: FaultRow = { scenario: 'two cascache serve replicas on one S3 tier, the same hash PUT to both at once with different outputs', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0 };
  const remote = `s3://${BUCKET}/replicas?endpoint=${encodeURIComponent(s3.endpoint)}&forcePathStyle=true`;
  const env = { CASCACHE_SECRET: SECRET, CASCACHE_REMOTE: remote, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', CASCACHE_LOG_LEVEL: 'warn' };
  const servers = await Promise.all(['a', 'b', 'reader'].map((name) => serve(join(dir, name), env)));
  const [a, b, reader] = servers as [(typeof servers)[0], (typeof servers)[0], (typeof servers)[0]];
  const won = { a: 0, b: 0 };
  try {
    const bodyOf = (hash: number, side: string) => nxBody([{ name: 'dist/shared.js', body: 'export const shared = 1;\n'.repeat(3000) }, { name: 'dist/own.js', body: `export const builtOn = '${side}', hash = ${hash};\n`.repeat(300) }]);
    const rounds = o.short ? 3 : 10;
    for (let round = 0; round < rounds; round++) {
      row.attempts++;
      const hash = 91_000 + round;
      const bodies = { a: await bodyOf(hash, 'a'), b: await bodyOf(hash, 'b') };
      const expected = { a: JSON.stringify(await filesOf(bodies.a)), b: JSON.stringify(await filesOf(bodies.b)) };
      const puts = await Promise.all([http(a.base, 'PUT', `/v1/cache/${hash}`, null, bodies.a), http(b.base, 'PUT', `/v1/cache/${hash}`, null, bodies.b)].map((p) => p.catch(() => ({ status: 0 }))));
      const problems: string[] = [];
      if (!puts.every((p) => p.status === 200 || p.status === 409)) problems.push(`PUTs answered ${puts.map((p) => p.status).join(', ')}`);
      // Each serves what it was sent until its upload meets the other's (and keeps it as a hot body).
      for (const r of [a, b]) if ((await http(r.base, 'GET', `/v1/cache/${hash}`, null)).status !== 200) problems.push('a GET before the flush missed');
      for (const r of [a, b]) {
        const f = await http(r.base, 'POST', '/_cascache/flush', null).catch(() => ({ status: 0, body: Buffer.alloc(0) }));
        if (f.status !== 200 || !JSON.parse(f.body.toString() || '{}').drained) problems.push(`flush answered ${f.status} ${f.body.toString().slice(0, 200)}`);
      }
      const served: string[] = [];
      for (const r of [a, b, reader]) {
        const g = await http(r.base, 'GET', `/v1/cache/${hash}`, null);
        served.push(g.status === 200 ? JSON.stringify(await filesOf(g.body)) : `status ${g.status}`);
      }
      const winner = served[0] === expected.a ? 'a' : served[0] === expected.b ? 'b' : null;
      if (!winner || served.some((x) => x !== served[0])) problems.push(`served: ${served.map((x) => (x === expected.a ? 'a' : x === expected.b ? 'b' : x.slice(0, 40))).join(', ')}`);
      else won[winner]++;
      if (problems.length > 0) {
        row.wrong++;
        o.log?.(`replicas, round ${round}: ${problems.join('; ')}`);
      } else row.handled++;
    }
    for (const r of servers) if (!alive(r.child)) row.crashes++;
  } finally {
    for (const r of servers) await stopped(r.child, 'SIGTERM');
    await s3.close();
  }
  for (const name of ['a', 'b', 'reader']) {
    if (!verifyClean(join(dir, name))) {
      row.wrong++;
      o.log?.(`replicas: verify found problems in ${name}'s store`);
    }
  }
  row.notes = `won: replica a ${won.a}, replica b ${won.b}`;
  rmSync(dir, { recursive: true, force: true });
  return row;
}

// ---------------------------------------------------------------------------------------------
// Scenario: load

/** Resident set of a process, bytes (Linux /proc). */
function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}
const mb = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MB`;

interface WrkResult {
  requests: number;
  /** Answers that were not 2xx/3xx, and socket errors (connect, read, write, timeout). */
  failed: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** wrk (Debian's package, installed by `npm run setup`) against `url`; `script` is a Lua file. */
function wrk(url: string, o: { seconds: number; connections: number; token: string; script?: string; env?: NodeJS.ProcessEnv }): WrkResult {
  const args = ['-t2', `-c${o.connections}`, `-d${o.seconds}s`, '--latency', '-H', `Authorization: Bearer ${o.token}`, ...(o.script ? ['-s', o.script] : []), url];
  const r = spawnSync('wrk', args, { encoding: 'utf8', timeout: (o.seconds + 60) * 1000, env: { ...process.env, ...o.env } });
  if (r.error || r.status !== 0) throw new Error(`wrk failed (${r.error?.message ?? r.status}): ${r.stderr}${r.stdout} -- \`npm run setup\` installs it (apt-get install wrk)`);
  const out = r.stdout;
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? 0);
  const ms = (label: string) => {
    const m = new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    return m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2] as 'ms'] : NaN;
  };
  const sockets = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: num(/(\d+) requests in/),
    failed: num(/Non-2xx or 3xx responses: (\d+)/) + (sockets ? sockets.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
    perSecond: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: ms('50'),
    p99Ms: ms('99'),
  };
}

/** Each thread GETs `/v1/cache/1` three times, then PUTs the body under a hash no other request uses. */
const MIXED_LUA = `
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args)
  local f = assert(io.open(os.getenv("CASCACHE_LOAD_BODY"), "rb")); body = f:read("*a"); f:close()
  n = 0
end
function request()
  n = n + 1
  if n % 4 == 0 then
    local headers = { ["Content-Type"] = "application/octet-stream" }
    for k, v in pairs(wrk.headers) do headers[k] = v end
    return wrk.format("PUT", "/v1/cache/" .. tostring(1000000000 + id * 100000000 + n), headers, body)
  end
  return wrk.format("GET", "/v1/cache/1")
end
`;

/**
 * `cascache serve` under load: wrk GETs of a 100 kB body, then a PUT/GET mix of new hashes, then
 * 200 connections that send their headers a byte a second while GETs go on. Every answer must be
 * right (2xx with the stored bytes; nothing stored wrongly, `verify` clean afterwards) and the
 * server's resident memory bounded; throughput and latency are reported, not asserted.
 */
async function load(o: FaultOptions): Promise<FaultRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'cascache-faults-load-'));
  const TOKEN = 'load-token-0123456789abcdef';
  const seconds = o.short ? 3 : 30;
  // What the server may grow by under load, beyond what it held once warm: its body caches are
  // bounded, so growth past this is a leak.
  const RSS_GROWTH_BOUND = 256 * 2 ** 20;
  const { child, base } = await serve(join(dir, 'store'), { CASCACHE_TOKENS_RW: TOKEN, CASCACHE_LOG_LEVEL: 'warn' });
  const rows: FaultRow[] = [];
  const row = (scenario: string): FaultRow => ({ scenario, attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0 });
  try {
    // ~100 kB once gzipped, as the benchmarks' GET table: digests do not compress.
    const text = Array.from({ length: 2_400 }, (_, i) => `export const v${i} = '${createHash('sha256').update(String(i)).digest('hex')}';`).join('\n');
    const body = await nxBody([{ name: 'dist/main.js', body: text }]);
    const expected = JSON.stringify(await filesOf(body));
    if ((await http(base, 'PUT', '/v1/cache/1', TOKEN, body)).status !== 200) throw new Error('could not seed the server');
    const bodyFile = join(dir, 'body.bin');
    writeFileSync(bodyFile, body);
    const scriptFile = join(dir, 'mixed.lua');
    writeFileSync(scriptFile, MIXED_LUA);
    const servesSeed = async () => {
      const r = await http(base, 'GET', '/v1/cache/1', TOKEN);
      return r.status === 200 && JSON.stringify(await filesOf(r.body)) === expected;
    };
    wrk(`${base}/v1/cache/1`, { seconds: 1, connections: 16, token: TOKEN }); // warm
    const warmRss = rssOf(child.pid!);

    const get = row(`load: GETs of a ${Math.round(body.length / 1000)} kB body under wrk (64 connections, ${seconds} s)`);
    const g = wrk(`${base}/v1/cache/1`, { seconds, connections: 64, token: TOKEN });
    get.attempts = g.requests;
    get.handled = g.requests - g.failed;
    if (!(await servesSeed())) get.wrong++;
    get.notes = `${Math.round(g.perSecond)} req/s, p50 ${g.p50Ms} ms, p99 ${g.p99Ms} ms`;
    rows.push(get);

    const mixed = row(`load: PUTs of new hashes and GETs, 1 in 4 a PUT, under wrk (64 connections, ${seconds} s)`);
    const m = wrk(`${base}/v1/cache/1`, { seconds, connections: 64, token: TOKEN, script: scriptFile, env: { CASCACHE_LOAD_BODY: bodyFile } });
    mixed.attempts = m.requests;
    mixed.handled = m.requests - m.failed;
    // The first PUT of each thread serves the body it stored.
    for (const id of [0, 1]) {
      const r = await http(base, 'GET', `/v1/cache/${1000000000 + id * 100000000 + 4}`, TOKEN);
      if (r.status !== 200 || JSON.stringify(await filesOf(r.body)) !== expected) mixed.wrong++;
    }
    if (!(await servesSeed())) mixed.wrong++;
    const loadedRss = rssOf(child.pid!);
    mixed.attempts++; // the memory bound
    if (loadedRss - warmRss <= RSS_GROWTH_BOUND) mixed.handled++;
    else o.log?.(`load: resident memory grew from ${mb(warmRss)} to ${mb(loadedRss)}, more than ${mb(RSS_GROWTH_BOUND)}`);
    mixed.notes = `${Math.round(m.perSecond)} req/s, p99 ${m.p99Ms} ms; server RSS ${mb(warmRss)} warm, ${mb(loadedRss)} after both loads`;
    rows.push(mixed);

    // 200 connections that never finish their headers, then GETs beside them.
    const slow = row('load: 200 connections sending headers a byte a second, GETs beside them');
    const port = Number(new URL(base).port);
    const sockets: Socket[] = [];
    let closedByServer = 0;
    for (let i = 0; i < 200; i++) {
      const sock = connect(port, '127.0.0.1');
      sock.on('error', () => undefined);
      sock.on('close', () => closedByServer++);
      sock.write(`GET /v1/cache/1 HTTP/1.1\r\nHost: x\r\nX-Slow: `);
      sockets.push(sock);
    }
    const drip = setInterval(() => {
      for (const sock of sockets) if (!sock.destroyed) sock.write('a');
    }, 1000);
    const latencies: number[] = [];
    try {
      const until = Date.now() + seconds * 1000;
      while (Date.now() < until) {
        slow.attempts++;
        const t0 = performance.now();
        const ok = await servesSeed().catch(() => false);
        latencies.push(performance.now() - t0);
        if (ok) slow.handled++;
      }
    } finally {
      clearInterval(drip);
      const closed = closedByServer;
      for (const sock of sockets) sock.destroy();
      latencies.sort((a, b) => a - b);
      const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!.toFixed(1);
      slow.notes = `${latencies.length} GETs, p50 ${pct(50)} ms, p99 ${pct(99)} ms; ${closed} of 200 slow connections closed by the server meanwhile`;
    }
    rows.push(slow);
    if (!alive(child)) for (const r of rows) r.crashes++;
  } finally {
    await stopped(child, 'SIGTERM');
  }
  if (!verifyClean(join(dir, 'store'))) {
    rows[rows.length - 1]!.wrong++;
    o.log?.('load: verify found problems afterwards');
  }
  rmSync(dir, { recursive: true, force: true });
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Real nx workspaces for the store and agent scenarios

interface NxScenarioWorkspace {
  ws: Workspace;
  dir: string;
  storeDir: string;
  /** CI=true (uploads finish before the run ends), a signing secret, a home of its own. */
  env: NodeJS.ProcessEnv;
}

/**
 * A fresh 12-project workspace with the plugin installed from this repo's tarballs and a local-only
 * store, for `use`; afterwards its agent is stopped and everything deleted.
 */
async function withNxWorkspace<T>(prefix: string, use: (w: NxScenarioWorkspace) => Promise<T> | T): Promise<T> {
  const t = packAll();
  const dir = tempWorkspaceDir(prefix);
  const home = tempWorkspaceDir('cascache-faults-home-');
  const storeDir = join(dir, '.cascache');
  try {
    writeWorkspace(dir, { idleTimeoutMs: 300_000, tiers: [] });
    install(dir, [t.core, t.server, t.nx, t.cli]);
    return await use({ ws: openWorkspace(dir), dir, storeDir, env: { HOME: home, CI: 'true', CASCACHE_SECRET: SECRET } });
  } finally {
    stopAgent(storeDir);
    rmSync(dir, { recursive: true, force: true, maxRetries: 10 });
    rmSync(home, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Scenario: the store directory deleted under a running agent

const pidOf = (storeDir: string): number | null => {
  try {
    return (JSON.parse(readFileSync(join(storeDir, 'agent.json'), 'utf8')) as { pid: number }).pid;
  } catch {
    return null;
  }
};
const running = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * Real nx runs while the agent's store is deleted under it (what `rm -rf .cascache` or a CI cache
 * cleanup does mid-session): the next run must build, with outputs identical to a clean build, and
 * the run after it must be served from cache again.
 */
async function storeDeleted(o: FaultOptions): Promise<FaultRow> {
  const row: FaultRow = { scenario: 'store directory deleted under a running agent: real nx runs', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0, worstMs: 0 };
  const leftRunning: number[] = [];
  await withNxWorkspace('cascache-faults-store-', ({ ws, dir, storeDir, env }) => {
    try {
      const fresh = () => {
        ws.nx(['reset'], env);
        removeOutputs(dir);
      };
      ws.nx(['run-many', '-t', 'build'], env);
      const clean = JSON.stringify(snapshotOutputs(dir));
      const rounds = o.short ? 1 : 3;
      for (let round = 0; round < rounds; round++) {
        row.attempts++;
        const pid = pidOf(storeDir);
        // Moved away in one step, then deleted: the agent may be writing into it (its index, runs).
        renameSync(storeDir, `${storeDir}.deleted`);
        rmSync(`${storeDir}.deleted`, { recursive: true, force: true, maxRetries: 5 });
        fresh();
        const t0 = Date.now();
        let served = -1;
        try {
          ws.nx(['run-many', '-t', 'build'], env); // every task builds: the store is gone
          if (JSON.stringify(snapshotOutputs(dir)) !== clean) row.wrong++;
          fresh();
          const again = ws.nx(['run-many', '-t', 'build'], env); // and the run after it hits again
          served = Number(/(\d+) from cascache/.exec(again.stdout)?.[1] ?? -1);
          if (JSON.stringify(snapshotOutputs(dir)) !== clean) row.wrong++;
          if (served === 12) row.handled++;
          else o.log?.(`store deleted, round ${round}: the run after the rebuild was served ${served} of 12 tasks from cascache:\n${again.stdout.slice(-1500)}`);
        } catch (err) {
          row.buildsFailed++;
          o.log?.(`store deleted, round ${round}: the build failed: ${(err as Error).message.slice(0, 2000)}`);
        }
        row.worstMs = Math.max(row.worstMs!, Date.now() - t0);
        if (pid !== null && pid !== pidOf(storeDir) && running(pid)) leftRunning.push(pid);
      }
      row.notes = leftRunning.length > 0 ? `${leftRunning.length} agent(s) of deleted stores still running` : 'agents of deleted stores exited';
    } finally {
      // Before the workspace goes: an agent that outlived its store would write into it meanwhile.
      for (const pid of leftRunning) if (running(pid)) process.kill(pid, 'SIGTERM');
    }
  });
  return row;
}

// ---------------------------------------------------------------------------------------------
// Scenario: the Nx agent killed at named points of an upload

/** What the agent's front says about its workers (`GET /_cascache/front`), or null when nothing answers. */
async function frontStatus(storeDir: string): Promise<{ pid: number; workerPid: number | null; restarts: number } | null> {
  try {
    const { port, token } = JSON.parse(readFileSync(join(storeDir, 'agent.json'), 'utf8')) as { port: number; token: string };
    const r = await fetch(`http://127.0.0.1:${port}/_cascache/front`, { headers: { authorization: `Bearer ${token}` } });
    return r.ok ? ((await r.json()) as { pid: number; workerPid: number | null; restarts: number }) : null;
  } catch {
    return null;
  }
}

/**
 * Real nx runs whose agent worker kills itself (`CASCACHE_CRASH_AT`, inherited from the run's
 * environment, so every new worker does it again) at a named point of every upload: with the body
 * on disk while Nx waits for the answer; after the chunks and manifest, before the entry; or after
 * the entry. The front answers what the worker cannot and starts new ones. The run must build;
 * the next run must restore or rebuild to outputs identical to a clean build, and `verify` must
 * find nothing wrong with the store.
 */
async function agentKills(o: FaultOptions): Promise<FaultRow> {
  const row: FaultRow = { scenario: 'Nx agent killed at named points of an upload: real nx runs', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0, worstMs: 0 };
  await withNxWorkspace('cascache-faults-agent-', async ({ ws, dir, storeDir, env }) => {
    ws.nx(['run-many', '-t', 'build', '--skip-nx-cache'], env);
    const clean = JSON.stringify(snapshotOutputs(dir));
    const rounds = o.short ? 1 : 3;
    const restarts: number[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const point of ['spooled', 'ingested', 'entry-written']) {
        row.attempts++;
        stopAgent(storeDir);
        rmSync(storeDir, { recursive: true, force: true, maxRetries: 10 });
        ws.nx(['reset'], env);
        removeOutputs(dir);
        const t0 = Date.now();
        const problems: string[] = [];
        try {
          const killed = ws.nx(['run-many', '-t', 'build'], { ...env, CASCACHE_CRASH_AT: point });
          if (JSON.stringify(snapshotOutputs(dir)) !== clean) problems.push('outputs of the run whose agent was killed differ');
          const front = await frontStatus(storeDir);
          if (front === null) problems.push('the agent front did not answer after the run');
          else restarts.push(front.restarts);
          ws.nx(['reset'], env);
          removeOutputs(dir);
          const after = ws.nx(['run-many', '-t', 'build'], env); // a new agent
          if (JSON.stringify(snapshotOutputs(dir)) !== clean) problems.push('outputs of the run after differ');
          stopAgent(storeDir);
          if (!verifyClean(storeDir)) problems.push('verify found problems');
          if (problems.length > 0) {
            row.wrong++;
            o.log?.(`agent killed at ${point}, round ${round}: ${problems.join('; ')}\n${killed.stdout.slice(-800)}\n${after.stdout.slice(-800)}`);
          } else row.handled++;
        } catch (err) {
          row.buildsFailed++;
          o.log?.(`agent killed at ${point}, round ${round}: the build failed: ${(err as Error).message.slice(0, 2000)}`);
        }
        row.worstMs = Math.max(row.worstMs!, Date.now() - t0);
      }
    }
    row.notes = `points: spooled, ingested, entry-written; ${rounds} round(s) each; worker restarts per run: ${restarts.join(', ')}`;
  });
  return row;
}

// ---------------------------------------------------------------------------------------------
// Scenario: a read-only store

/** Whether this machine lets us bind-mount read-only in a private namespace (`unshare -rm`). */
/** Whether `script(dir)` runs in a private user and mount namespace (`unshare -rm`) here, on a scratch dir. */
function namespaceAllows(script: (dir: string) => string): boolean {
  if (process.platform !== 'linux') return false;
  const d = mkdtempSync(join(tmpdir(), 'cascache-probe-'));
  try {
    return spawnSync('unshare', ['-rm', 'sh', '-c', script(d)], { encoding: 'utf8' }).status === 0;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

/**
 * Runs `script` (nx runs in the workspace `dir`) in a private user and mount namespace, so its
 * mounts (and the agent it starts) see the store as the script arranged it; nx as the suite runs it.
 */
function inPrivateNamespace(dir: string, script: string, env: NodeJS.ProcessEnv, timeoutMs: number): SpawnSyncReturns<string> {
  return spawnSync('unshare', ['-rm', 'sh', '-c', script], { cwd: dir, encoding: 'utf8', timeout: timeoutMs, env: { ...cleanEnv(), NX_TUI: 'false', NX_INTERACTIVE: 'false', NX_NO_CLOUD: 'true', NX_DAEMON: 'false', ...env } });
}

const canRemountReadOnly = (): boolean => namespaceAllows((d) => `mount --bind ${d} ${d} && mount -o remount,bind,ro ${d}`);
const canMountTmpfs = (): boolean => namespaceAllows((d) => `mount -t tmpfs -o size=64k tmpfs ${d}`);

/**
 * Real nx runs with the workspace's store on a read-only filesystem (a read-only bind mount in a
 * private mount namespace): after a clean build filled it, a run after `nx reset` and a run after a
 * one-line change must both build, with outputs identical to building without the cache.
 */
async function readOnlyStore(o: FaultOptions): Promise<FaultRow> {
  const row: FaultRow = { scenario: 'store on a read-only filesystem: real nx runs', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0, worstMs: 0 };
  if (!canRemountReadOnly()) {
    row.notes = 'skipped: this machine cannot remount read-only in a user namespace (unshare -rm)';
    o.log?.(row.notes);
    return row;
  }
  await withNxWorkspace('cascache-faults-ro-', ({ ws, dir, storeDir, env }) => {
    ws.nx(['run-many', '-t', 'build'], env);
    const clean = JSON.stringify(snapshotOutputs(dir));
    stopAgent(storeDir);
    const nxBin = join(dir, 'node_modules', '.bin', 'nx');
    // One nx run with the store mounted read-only, in a namespace of its own (and its agent's).
    const readOnlyRun = (before: string): { ok: boolean; served: number; ms: number } => {
      const script = `set -e; mount --bind ${storeDir} ${storeDir}; mount -o remount,bind,ro ${storeDir}; ${before}; ${nxBin} run-many -t build`;
      const t0 = Date.now();
      const r = inPrivateNamespace(dir, script, env, 300_000);
      const ms = Date.now() - t0;
      if (r.status !== 0) o.log?.(`read-only store: the run failed (${r.status}):\n${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}`);
      stopAgent(storeDir); // an agent that started inside the namespace
      return { ok: r.status === 0, served: Number(/(\d+) from cascache/.exec(r.stdout)?.[1] ?? 0), ms };
    };
    const rounds = o.short ? 1 : 2;
    const served: number[] = [];
    for (let round = 0; round < rounds; round++) {
      row.attempts++;
      removeOutputs(dir);
      const hit = readOnlyRun(`${nxBin} reset > /dev/null`);
      row.worstMs = Math.max(row.worstMs!, hit.ms);
      served.push(hit.served);
      if (!hit.ok) row.buildsFailed++;
      else if (JSON.stringify(snapshotOutputs(dir)) !== clean) row.wrong++;
      else row.handled++;
    }
    // A change: the tasks it touches build, and their uploads fail on the read-only store.
    row.attempts++;
    changeOneLine(dir);
    const changed = readOnlyRun('true');
    row.worstMs = Math.max(row.worstMs!, changed.ms);
    const afterChange = JSON.stringify(snapshotOutputs(dir));
    if (!changed.ok) row.buildsFailed++;
    else {
      // What the same change builds to without any cache.
      ws.nx(['run-many', '-t', 'build', '--skip-nx-cache'], env);
      if (JSON.stringify(snapshotOutputs(dir)) !== afterChange) row.wrong++;
      else row.handled++;
    }
    row.notes = `served from cascache after nx reset: ${served.join(', ')} of 12`;
  });
  return row;
}

/**
 * Real nx runs with the workspace's store on a disk that fills up: a small tmpfs (a private user and
 * mount namespace) filled with `dd` to a little slack before the first run, so the agent starts and
 * then runs out of room while it stores the cold build's uploads. Then `nx reset` and a run on the
 * still-full disk, then `cascache verify`. Every run must build, with the outputs of a build without
 * cache, and verify must find nothing wrong (what did not fit is simply not stored).
 */
async function fullDisk(o: FaultOptions): Promise<FaultRow> {
  const row: FaultRow = { scenario: 'store on a disk that fills up during the build: real nx runs', attempts: 0, handled: 0, wrong: 0, crashes: 0, buildsFailed: 0, worstMs: 0 };
  if (!canMountTmpfs()) {
    row.notes = 'skipped: this machine cannot mount a tmpfs in a user namespace (unshare -rm)';
    o.log?.(row.notes);
    return row;
  }
  await withNxWorkspace('cascache-faults-full-', ({ ws, dir, storeDir, env }) => {
    ws.nx(['run-many', '-t', 'build', '--skip-nx-cache'], { ...env, CASCACHE_DISABLE: '1' });
    const clean = JSON.stringify(snapshotOutputs(dir));
    stopAgent(storeDir);
    rmSync(storeDir, { recursive: true, force: true });
    mkdirSync(storeDir);
    const nxBin = join(dir, 'node_modules', '.bin', 'nx');
    const served: string[] = [];
    // Slack left before the first run, KiB: with less than ~200 the agent cannot start at all (Nx
    // then runs on its own cache); with these it starts and runs out of room part way.
    const slacks = o.short ? [512] : [256, 512, 768];
    for (const slackKiB of slacks) {
      // One namespace for the whole round: the tmpfs lives as long as it does.
      const script = [
        'set -e',
        `mount -t tmpfs -o size=4m tmpfs ${storeDir}`,
        `dd if=/dev/zero of=${storeDir}/filler bs=1k count=$(( $(df -k --output=avail ${storeDir} | tail -1) - ${slackKiB} )) 2>/dev/null`,
        'set +e',
        `rm -rf ${join(dir, '.nx')}; find packages -name dist -prune -exec rm -rf {} +`,
        `echo "T0=$(date +%s%3N)"; ${nxBin} run-many -t build; echo "RUN1=$?"; echo "T1=$(date +%s%3N)"`,
        `${nxBin} reset > /dev/null; find packages -name dist -prune -exec rm -rf {} +`,
        `echo "T2=$(date +%s%3N)"; ${nxBin} run-many -t build; echo "RUN2=$?"; echo "T3=$(date +%s%3N)"`,
        `node ${join(dir, 'node_modules', 'cascache', 'dist', 'bin.js')} verify --store-dir ${storeDir}; echo "VERIFY=$?"`,
        `echo '== agent.log'; tail -n 20 ${storeDir}/agent.log; df -k ${storeDir} | tail -1`,
        `kill $(node -e "try{console.log(require('${storeDir}/agent.json').pid)}catch{}") 2>/dev/null; true`,
      ].join('\n');
      row.attempts += 2;
      const r = inPrivateNamespace(dir, script, env, 600_000);
      const out = `${r.stdout}${r.stderr}`;
      const t = [0, 1, 2, 3].map((i) => Number(new RegExp(`T${i}=(\\d+)`).exec(out)?.[1] ?? NaN));
      row.worstMs = Math.max(row.worstMs!, t[1]! - t[0]!, t[3]! - t[2]!);
      // The agent's front owns the port: a run told "Connection refused" lost its agent mid-run.
      if (/Connection refused/.test(out)) row.crashes++;
      const runs = [/RUN1=(\d+)/.exec(out)?.[1], /RUN2=(\d+)/.exec(out)?.[1]];
      const failed = runs.filter((x) => x !== '0').length;
      row.buildsFailed += failed;
      if (failed > 0) o.log?.(`full disk, slack ${slackKiB} KiB: a run failed (${runs.join(', ')}):\n${out.slice(-3000)}`);
      // Run 2's outputs are on disk now (run 1's were compared by the same build script's determinism).
      if (JSON.stringify(snapshotOutputs(dir)) !== clean) {
        row.wrong++;
        o.log?.(`full disk, slack ${slackKiB} KiB: outputs differ from a build without cache`);
      } else row.handled += 2 - failed;
      if (/VERIFY=(\d+)/.exec(out)?.[1] !== '0' || !/no problems found/.test(out)) {
        row.wrong++;
        o.log?.(`full disk, slack ${slackKiB} KiB: verify did not pass:\n${out.slice(-2000)}`);
      }
      const hits = [...out.matchAll(/cascache: \d+ tasks, (\d+) from cascache/g)].map((m) => m[1]);
      served.push(`${slackKiB} KiB: ${hits[1] ?? '?'}`);
      stopAgent(storeDir);
    }
    row.notes = `slack left on a 4 MiB tmpfs, and tasks served from cascache after nx reset: ${served.join('; ')} of 12`;
  });
  return row;
}

/** Runs every scenario in turn. */
export async function runFaults(o: FaultOptions): Promise<FaultRow[]> {
  const rows: FaultRow[] = [];
  const wanted = (name: string) => !o.only || o.only.includes(name);
  for (const [name, scenario] of [['hostile', hostile], ['kill', killMidUpload], ['points', killAtPoints], ['replicas', replicas], ['agent', agentKills], ['store', storeDeleted], ['readonly', readOnlyStore], ['fulldisk', fullDisk]] as const) {
    if (!wanted(name)) continue;
    const row = await scenario(o);
    o.log?.(`${row.scenario}: ${row.handled}/${row.attempts} handled, ${row.wrong} wrong, ${row.crashes} crashes`);
    rows.push(row);
  }
  if (wanted('load')) rows.push(...(await load(o)));
  if (wanted('remote')) rows.push(...(await remoteFaults(o)));
  return rows;
}

/** The table docs/reliability.md shows. */
export function faultTable(rows: FaultRow[]): string {
  const lines = [
    '| scenario | attempts | handled correctly | stored or served wrongly | crashes | builds failed by the cache | slowest run | figures |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) lines.push(`| ${r.scenario} | ${r.attempts} | ${r.handled} | ${r.wrong} | ${r.crashes} | ${r.buildsFailed} | ${r.worstMs === undefined ? '' : `${(r.worstMs / 1000).toFixed(1)} s`} | ${r.notes ?? ''} |`);
  return lines.join('\n');
}
