import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stopStoreAgent } from '@cascache/server/agent-control';
import { cli } from './support/run-cli';

/** A stand-in for `turbo run`: asks the agent for one artifact, as turbo does, then exits with `code`. */
const client = (code: number) =>
  `const h = { authorization: 'Bearer ' + process.env.TURBO_TOKEN };` +
  `fetch(process.env.TURBO_API + '/v8/artifacts/00000000deadbeef?slug=' + process.env.TURBO_TEAM, { headers: h })` +
  `.then((r) => { if (r.status !== 404) process.exit(99); process.exit(${code}); }, () => process.exit(98));`;

describe('cascache turbo and cascache env turbo', () => {
  let dir: string;
  let store: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-turbo-cli-'));
    store = join(dir, '.cascache');
  });
  afterEach(async () => {
    // The agent closes its store on the way out: deleting under it fails (ENOTEMPTY) or races.
    expect(await stopStoreAgent(store)).toBe(true);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the command against the agent, passes its exit code through, and records the run', async () => {
    const r = await cli('turbo', '--store-dir', store, '--team', 'team1', '--', process.execPath, '-e', client(7));
    expect(r.code).toBe(7);
    expect(r.stderr).toContain('cascache: 1 task, 0 from cascache, 1 run; received 0 B of outputs, stored 0 B new');
    const runs = readdirSync(join(store, 'v1', 'runs')).filter((f) => f.endsWith('.json'));
    expect(runs).toHaveLength(1);
    const record = JSON.parse(readFileSync(join(store, 'v1', 'runs', runs[0]!), 'utf8'));
    expect(record).toMatchObject({ tool: 'turbo', tasks: [{ hash: '00000000deadbeef', status: 'miss' }] });
    const stats = await cli('stats', '--store-dir', store, '--json');
    expect(JSON.parse(stats.stdout).tools).toContainEqual(expect.objectContaining({ tool: 'turbo', runs: 1, misses: 1 }));
  });

  it('prints the variables for eval, pointing at a live agent', async () => {
    const r = await cli('env', 'turbo', '--store-dir', store, '--team', 't1');
    expect(r.code).toBe(0);
    const vars = Object.fromEntries([...r.stdout.matchAll(/^export (\w+)='([^']*)'$/gm)].map((m) => [m[1], m[2]]));
    expect(vars.TURBO_TEAM).toBe('t1');
    expect(vars.TURBO_API).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const status = await fetch(`${vars.TURBO_API}/v8/artifacts/status?slug=t1`, { headers: { authorization: `Bearer ${vars.TURBO_TOKEN}` } });
    expect(await status.json()).toEqual({ status: 'enabled' });
  });

  it('steps aside when TURBO_API already points elsewhere, and rejects a bad team', async () => {
    process.env.TURBO_API = 'http://127.0.0.1:9';
    try {
      const r = await cli('turbo', '--store-dir', store, '--', process.execPath, '-e', 'process.exit(0)');
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('TURBO_API is already set');
      expect(existsSync(store)).toBe(false);
    } finally {
      delete process.env.TURBO_API;
    }
    const bad = await cli('turbo', '--store-dir', store, '--team', '../x', '--', process.execPath, '-e', 'process.exit(0)');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--team');
  });
});
