import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureAgent, postTasksExecution, preTasksExecution, summaryLine, uploadLine } from '../src';

const SERVER = 'NX_SELF_HOSTED_REMOTE_CACHE_SERVER';
const TOKEN = 'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN';

describe('plugin hooks with a real agent', () => {
  let workspace: string;
  const saved = { ...process.env };
  const pids = new Set<number>();

  beforeEach(() => {
    workspace = mkdtempSync(join(tmpdir(), 'cascache-hooks-'));
    for (const k of Object.keys(process.env)) if (k.startsWith('NX_SELF_HOSTED') || k.startsWith('CASCACHE_')) delete process.env[k];
  });
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  /** Resolves once a process (an agent: detached, so no exit event reaches us) is gone; at most 10 s. */
  async function exited(pid: number): Promise<void> {
    for (const end = Date.now() + 10_000; alive(pid) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
  }

  afterEach(async () => {
    process.env = { ...saved };
    try {
      pids.add(JSON.parse(readFileSync(join(workspace, '.cascache', 'agent.json'), 'utf8')).pid);
    } catch {
      /* no agent */
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    // An agent closes its store on the way out (the index's last updates): let it finish first.
    for (const pid of pids) await exited(pid);
    pids.clear();
    rmSync(workspace, { recursive: true, force: true });
  });

  it('starts an agent, points Nx at it, and reuses it on the next run', async () => {
    await preTasksExecution({}, { workspaceRoot: workspace });
    const url = process.env[SERVER]!;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${url}/healthz`, { headers: { authorization: `Bearer ${process.env[TOKEN]}` } });
    expect(health.status).toBe(200);
    expect((await health.json()).signing).toBe('none');
    const pid = JSON.parse(readFileSync(join(workspace, '.cascache', 'agent.json'), 'utf8')).pid;
    await preTasksExecution({}, { workspaceRoot: workspace });
    expect(process.env[SERVER]).toBe(url);
    expect(JSON.parse(readFileSync(join(workspace, '.cascache', 'agent.json'), 'utf8')).pid).toBe(pid);
  });

  it('starts exactly one agent for concurrent runs', async () => {
    const storeDir = join(workspace, 'store');
    const infos = await Promise.all(Array.from({ length: 6 }, () => ensureAgent({ storeDir })));
    for (const i of infos) pids.add(i.pid);
    expect(new Set(infos.map((i) => i.pid)).size).toBe(1);
    expect(new Set(infos.map((i) => i.port)).size).toBe(1);
  });

  it('restarts the agent when credentials for its tiers change, and only then', async () => {
    const storeDir = join(workspace, 'store-env');
    const tiers = JSON.stringify(['s3://cascache-env-test/p?endpoint=http%3A%2F%2F127.0.0.1%3A9&forcePathStyle=true']);
    const secret = 'hooks-env-test-secret-0123456789abcdef';
    const start = (env: NodeJS.ProcessEnv) => ensureAgent({ storeDir, secret, tiers, env: { ...process.env, ...env } });
    const first = await start({ AWS_ACCESS_KEY_ID: 'exported-too-late', AWS_SECRET_ACCESS_KEY: 'x' });
    pids.add(first.pid);
    // Variables the SDKs do not read change nothing.
    expect((await start({ AWS_ACCESS_KEY_ID: 'exported-too-late', AWS_SECRET_ACCESS_KEY: 'x', UNRELATED: '1' })).pid).toBe(first.pid);
    const second = await start({ AWS_ACCESS_KEY_ID: 'the-right-key', AWS_SECRET_ACCESS_KEY: 'x' });
    pids.add(second.pid);
    expect(second.pid).not.toBe(first.pid);
    // The fingerprint holds hashes, never the values.
    expect(readFileSync(join(storeDir, 'agent.json'), 'utf8')).not.toContain('the-right-key');
  });

  it('an agent whose store is deleted or replaced under it exits, and the next run starts one on the new store', async () => {
    const storeDir = join(workspace, 'store-gone');
    const first = await ensureAgent({ storeDir });
    rmSync(storeDir, { recursive: true, force: true, maxRetries: 5 });
    await exited(first.pid);
    expect(alive(first.pid)).toBe(false);
    const second = await ensureAgent({ storeDir });
    pids.add(second.pid);
    expect(second.pid).not.toBe(first.pid);
    // Replaced: moved away (a CI cache restore puts another store in its place) and a new one made.
    renameSync(storeDir, `${storeDir}.old`);
    const third = await ensureAgent({ storeDir });
    pids.add(third.pid);
    await exited(second.pid);
    expect([alive(second.pid), alive(third.pid)]).toEqual([false, true]);
  });

  it('a worker killed mid-upload costs Nx a not-stored answer, not a failed request, and a new worker serves the next ones', async () => {
    const storeDir = join(workspace, 'store-front');
    const agent = await ensureAgent({ storeDir });
    pids.add(agent.pid);
    const auth = { authorization: `Bearer ${agent.token}` };
    const front = async (): Promise<{ pid: number; workerPid: number | null; restarts: number }> => (await fetch(`http://127.0.0.1:${agent.port}/_cascache/front`, { headers: auth })).json();
    const first = await front();
    expect(first).toMatchObject({ pid: agent.pid, restarts: 0 });
    // A PUT whose body is half sent when the worker is killed (-9).
    const body = execFileSync('tar', ['-cz', '-C', join(__dirname, '..'), 'src']);
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: agent.port, method: 'PUT', path: '/v1/cache/1234567', headers: { ...auth, 'content-length': String(body.length) } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      });
      req.on('error', reject);
      req.write(body.subarray(0, body.length >> 1), () => {
        process.kill(first.workerPid!, 'SIGKILL');
        void exited(first.workerPid!).then(() => req.end(body.subarray(body.length >> 1)));
      });
    });
    expect(await answer).toEqual({ status: 200, body: '{"stored":false}' });
    // Lookups are misses until a new worker listens; then it answers again.
    let now = await front();
    for (const end = Date.now() + 10_000; (now.workerPid === null || now.workerPid === first.workerPid) && Date.now() < end; ) now = await front();
    expect(now).toMatchObject({ pid: agent.pid, restarts: 1 });
    expect((await fetch(`http://127.0.0.1:${agent.port}/healthz`, { headers: auth })).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${agent.port}/v1/cache/1234567`, { headers: auth })).status).toBe(404);
    // Stopping the agent stops both processes.
    process.kill(agent.pid, 'SIGTERM');
    await exited(agent.pid);
    await exited(now.workerPid!);
    expect([alive(agent.pid), alive(now.workerPid!)]).toEqual([false, false]);
  });

  it('restarts a dying worker at most 5 times a minute, then answers every request as a miss, and still ends with its store', async () => {
    const storeDir = join(workspace, 'store-cap');
    // Every worker kills itself (-9) with the body of each PUT on disk, before answering it.
    const agent = await ensureAgent({ storeDir, env: { ...process.env, CASCACHE_CRASH_AT: 'spooled' } });
    pids.add(agent.pid);
    const base = `http://127.0.0.1:${agent.port}`;
    const auth = { authorization: `Bearer ${agent.token}` };
    const front = async (): Promise<{ workerPid: number | null; restarts: number }> => (await fetch(`${base}/_cascache/front`, { headers: auth })).json();
    const body = execFileSync('tar', ['-cz', '-C', join(__dirname, '..'), 'src']);
    const answers: string[] = [];
    let killed: number | null = null;
    for (let i = 0; i < 6; i++) {
      // Wait for a new worker to listen (the first, or the one the front started after the last kill).
      let f = await front();
      for (const end = Date.now() + 10_000; (f.workerPid === null || f.workerPid === killed) && Date.now() < end; ) f = await front();
      killed = f.workerPid;
      const put = await fetch(`${base}/v1/cache/${1000 + i}`, { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body });
      answers.push(`${put.status} ${await put.text()}`);
    }
    expect(answers).toEqual(Array(6).fill('200 {"stored":false}'));
    // Five restarts, then the sixth death leaves no worker until the minute is over. The front
    // answers the cut PUT when the worker's socket closes, which can come before it reaps the worker.
    let after = await front();
    for (const end = Date.now() + 10_000; after.workerPid === killed && Date.now() < end; ) after = await front();
    expect(after).toEqual({ pid: agent.pid, workerPid: null, restarts: 5 });
    expect((await fetch(`${base}/v1/cache/1000`, { headers: auth })).status).toBe(404);
    // Its health says so (a run probing it waits instead of starting a second agent).
    const health = await fetch(`${base}/healthz`, { headers: auth });
    expect([health.status, await health.text()]).toEqual([503, '{"status":"restarting"}']);
    expect(readFileSync(join(storeDir, 'agent.log'), 'utf8')).toContain('died 5 times within 60 s');
    // A front with no worker still ends with its store.
    rmSync(storeDir, { recursive: true, force: true, maxRetries: 5 });
    await exited(agent.pid);
    expect(alive(agent.pid)).toBe(false);
  });

  it("leaves a user's own server alone", async () => {
    process.env[SERVER] = 'https://cache.example.internal';
    process.env[TOKEN] = 'theirs';
    await preTasksExecution({}, { workspaceRoot: workspace });
    expect(process.env[SERVER]).toBe('https://cache.example.internal');
    expect(process.env[TOKEN]).toBe('theirs');
    expect(() => readFileSync(join(workspace, '.cascache', 'agent.json'))).toThrow();
  });

  it('on an Nx older than it supports, says so in one line and leaves Nx on its own cache; a newer one is tried with a note', async () => {
    const nxPackage = (version: string): void => {
      mkdirSync(join(workspace, 'node_modules', 'nx'), { recursive: true });
      writeFileSync(join(workspace, 'node_modules', 'nx', 'package.json'), JSON.stringify({ name: 'nx', version }));
    };
    nxPackage('20.8.2');
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    try {
      await preTasksExecution({}, { workspaceRoot: workspace });
      await postTasksExecution({}, { workspaceRoot: workspace, taskResults: { 'a:build': { task: { id: 'a:build', hash: '1' }, status: 'success' } } });
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
        "cascache: Nx 20.8.2 is older than this plugin supports (Nx 21 to 24); this run uses Nx's own cache. Upgrade Nx, or remove @cascache/nx from nx.json's plugins.",
      ]);
      expect(log).not.toHaveBeenCalled(); // no summary: this run had no agent, whatever earlier runs had
      expect(process.env[SERVER]).toBeUndefined();
      expect(existsSync(join(workspace, '.cascache'))).toBe(false);

      warn.mockClear();
      nxPackage('25.0.0');
      await preTasksExecution({}, { workspaceRoot: workspace });
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual(['cascache: Nx 25.0.0 is newer than the versions this plugin is tested on (Nx 21 to 24); report what breaks.']);
      expect(process.env[SERVER]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      warn.mockRestore();
      log.mockRestore();
    }
  });

  it('warns once and leaves Nx on its local cache when the agent cannot start', async () => {
    const notADir = join(workspace, 'file');
    writeFileSync(notADir, 'x');
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await expect(preTasksExecution({ storeDir: join(notADir, 'store') }, { workspaceRoot: workspace })).resolves.toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toContain("this run uses Nx's local cache only");
    expect(process.env[SERVER]).toBeUndefined();
    warn.mockRestore();
  });

  it('warns when the signing secret is too short, instead of failing the build', async () => {
    process.env.CASCACHE_SECRET = 'short';
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await preTasksExecution({}, { workspaceRoot: workspace });
    expect(warn).toHaveBeenCalledTimes(1);
    // The reason itself, not only where to look for it.
    expect(String(warn.mock.calls[0]![0])).toMatch(/could not start \(the action-cache signing secret must be at least 32 bytes, got 5 \(E_CONFIG\); see .*agent\.log\)/);
    expect(process.env[SERVER]).toBeUndefined();
    warn.mockRestore();
  });

  it('warns about unknown options and values of the wrong type, once, and ignores them', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await preTasksExecution({ storDir: 'x', tiers: 's3://b/x', readOnly: 'yes', namespace: '../main', trustedKeys: { main: 'ed25519:x' } } as never, { workspaceRoot: workspace });
    expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
      'cascache: nx.json, plugin @cascache/nx: unknown option "storDir" (did you mean "storeDir"?); it is ignored',
      'cascache: nx.json, plugin @cascache/nx: option "tiers" must be a list of URLs or {"url": ...} objects, got "s3://b/x"; it is ignored',
      'cascache: nx.json, plugin @cascache/nx: option "readOnly" must be true or false, got "yes"; it is ignored',
      'cascache: nx.json, plugin @cascache/nx: option "namespace" must be a namespace (1-64 of A-Z a-z 0-9 . _ -), got "../main"; it is ignored',
      'cascache: nx.json, plugin @cascache/nx: option "trustedKeys" must be an object of namespace -> ["ed25519:...", ...], got {"main":"ed25519:x"}; it is ignored',
    ]);
    // The rest works: the agent serves this run on the default store.
    expect(process.env[SERVER]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(JSON.parse(readFileSync(join(workspace, '.cascache', 'agent.json'), 'utf8')).port).toBeGreaterThan(0);
    warn.mockRestore();
  });

  it('says why the agent could not start when an option is wrong', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await preTasksExecution({ maxSize: '10 gigs' }, { workspaceRoot: workspace });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toContain('10 gigs');
    expect(process.env[SERVER]).toBeUndefined();
    warn.mockRestore();
  });

  it('hands Nx a read-only token in a read-only workspace', async () => {
    await preTasksExecution({ readOnly: true }, { workspaceRoot: workspace });
    const res = await fetch(`${process.env[SERVER]}/v1/cache/123`, { method: 'PUT', body: Buffer.from('x'), headers: { authorization: `Bearer ${process.env[TOKEN]}` } });
    expect(res.status).toBe(403);
    const get = await fetch(`${process.env[SERVER]}/v1/cache/123`, { headers: { authorization: `Bearer ${process.env[TOKEN]}` } });
    expect(get.status).toBe(404);
  });

  it('restarts the agent when the tiers change, and a CI run reports its uploads', async () => {
    const unreachableTier = { tiers: ['s3://unreachable-bucket/x?endpoint=http%3A%2F%2F127.0.0.1%3A9'] };
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    await preTasksExecution(unreachableTier, { workspaceRoot: workspace });
    expect(warn.mock.calls.map((c) => String(c[0]))).toEqual(['cascache: remote tiers need $CASCACHE_SECRET (32+ bytes, the same on every machine) or trusted keys (CASCACHE_TRUSTED_KEYS); this run uses the local store only']);
    warn.mockRestore();
    process.env.CASCACHE_SECRET = 'hooks-test-signing-secret-0123456789abcdef';
    await preTasksExecution({}, { workspaceRoot: workspace });
    const first = JSON.parse(readFileSync(join(workspace, '.cascache', 'agent.json'), 'utf8'));
    pids.add(first.pid);
    await preTasksExecution(unreachableTier, { workspaceRoot: workspace });
    const second = JSON.parse(readFileSync(join(workspace, '.cascache', 'agent.json'), 'utf8'));
    expect(second.pid).not.toBe(first.pid);
    expect(second.config).not.toBe(first.config);
    process.env.CI = 'true';
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    await postTasksExecution({ ...unreachableTier, ciUploadWaitMs: 200 }, { workspaceRoot: workspace, startTime: Date.now(), taskResults: {} });
    const lines = log.mock.calls.map((c) => String(c[0]));
    log.mockRestore();
    expect(lines[1]).toBe('cascache: uploaded 0 B to remote tiers (0 packs); dedup saved 0 B; nothing pending');
  });

  it('prints one summary line after the run and records it in the store', async () => {
    await preTasksExecution({}, { workspaceRoot: workspace });
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    await postTasksExecution({}, {
      workspaceRoot: workspace,
      startTime: 1000,
      endTime: 2000,
      taskResults: {
        'a:build': { task: { id: 'a:build', hash: '1', startTime: 1100, endTime: 1130 }, status: 'remote-cache' },
        'b:build': { task: { id: 'b:build', hash: '2', startTime: 1100, endTime: 1900 }, status: 'success' }, // Nx 22+: times on the task
        'c:build': { task: { id: 'c:build', hash: '3' }, status: 'success', startTime: 1000, endTime: 1500 }, // earlier Nx: on the result
      },
    });
    expect(log.mock.calls.map((c) => c[0])).toEqual(['cascache: 3 tasks, 1 from cascache, 2 run; received 0 B of outputs, stored 0 B new']);
    log.mockRestore();
    const run = JSON.parse(readFileSync(join(workspace, '.cascache', 'v1', 'runs', `1000-${process.pid}.json`), 'utf8'));
    expect(run.summary).toMatchObject({ tasks: 3, fromCascache: 1, ran: 2 });
    expect(run.tasks.map((t: { ms?: number }) => t.ms)).toEqual([30, 800, 500]);
  });
});

describe('upload line', () => {
  it('reports bytes sent, dedup and what is still pending', () => {
    expect(uploadLine({ drained: false, pending: { 's3://b': 2 }, failed: { 's3://b': 1 }, stats: { records: 3, packs: 1, blobsSent: 9, bytesSent: 41_000, blobsDeduplicated: 90, bytesDeduplicated: 3_100_000 } })).toBe(
      'cascache: uploaded 41.0 kB to remote tiers (1 pack); dedup saved 3.10 MB; 2 upload(s) still pending (they resume with the next run or `cascache flush`)\n' +
        'cascache: 1 upload(s) set aside after permanent errors (see agent.log); fix the cause, then `cascache flush --retry-set-aside`',
    );
  });

  it('says at once which tier the wait gave up on, and why', () => {
    const line = uploadLine({ drained: false, pending: { 's3://b/p': 12 }, failed: {}, unreachable: { 's3://b/p': 'connect ECONNREFUSED 127.0.0.1:9' }, stats: null });
    expect(line.split('\n')).toEqual([
      'cascache: uploaded 0 B to remote tiers (0 packs); dedup saved 0 B; 12 upload(s) still pending (they resume with the next run or `cascache flush`)',
      'cascache: gave up waiting on s3://b/p: it is unreachable (connect ECONNREFUSED 127.0.0.1:9); its uploads stay journaled',
    ]);
  });
});

describe('summary line', () => {
  it('states tasks, hits, runs and bytes with the dedup saving', () => {
    expect(summaryLine({ tasks: 14, fromCascache: 12, fromLocalCache: 0, ran: 2, failed: 0, bytesReceived: 3_100_000, bytesStored: 41_000 })).toBe(
      'cascache: 14 tasks, 12 from cascache, 2 run; received 3.10 MB of outputs, stored 41.0 kB new (98.7% saved by dedup and compression)',
    );
  });

  it('says what happened when a run stored more than Nx sent, never a negative saving', () => {
    const line = summaryLine({ tasks: 12, fromCascache: 0, fromLocalCache: 0, ran: 12, failed: 0, bytesReceived: 6_760_000, bytesStored: 8_550_000 });
    expect(line).toBe('cascache: 12 tasks, 0 from cascache, 12 run; received 6.76 MB of outputs, stored 8.55 MB new (1.26x the tar.gz Nx sent: new content, compressed chunk by chunk)');
    expect(line).not.toMatch(/-\d/);
  });

  it('says how many uploads the agent is still storing, which its byte figures leave out', () => {
    expect(summaryLine({ tasks: 12, fromCascache: 0, fromLocalCache: 0, ran: 12, failed: 0, bytesReceived: 2_380_000, bytesStored: 290_000, stillStoring: 1 })).toBe(
      'cascache: 12 tasks, 0 from cascache, 12 run; received 2.38 MB of outputs, stored 290.0 kB new (87.8% saved by dedup and compression); 1 more being stored (`cascache stats` counts them)',
    );
  });
});
