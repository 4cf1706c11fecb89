/**
 * Turborepo through cascache, end to end: real turbo 2.11 and real nx 24 in one workspace of 12
 * projects, our packages from npm pack tarballs, `cascache turbo` starting the same agent the Nx
 * plugin uses.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { computeActionKey, openLocalStore } from '@cascache/core';
import { GRAPH, changeOneLine, dependentsOf, openWorkspace, snapshotOutputs, stopAgent, tempWorkspaceDir, type Workspace } from '../src/nx-workspace';
import { packAll } from '../src/pack';
import { cascacheTurbo, installTurbo, removeTurboState, setSignature, writeTurboWorkspace } from '../src/turbo-workspace';

const ALL = Object.keys(GRAPH).sort();
const SECRET = 'turbo-e2e-shared-signing-secret-0123456789';

function summary(output: string): { tasks: number; fromCascache: number; ran: number; received: number; stored: number } {
  const line = output.split('\n').find((l) => l.startsWith('cascache: ') && /\d+ tasks?,/.test(l));
  if (!line) throw new Error(`no cascache summary line in:\n${output}`);
  const num = (re: RegExp): number => Number(re.exec(line)?.[1] ?? NaN);
  const bytes = (re: RegExp): number => {
    const m = re.exec(line);
    return m ? Number(m[1]) * { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[m[2] as 'B'] : NaN;
  };
  return {
    tasks: num(/(\d+) tasks?,/),
    fromCascache: num(/(\d+) from cascache/),
    ran: num(/(\d+) run/),
    received: bytes(/received ([\d.]+) (B|kB|MB|GB) of outputs/),
    stored: bytes(/stored ([\d.]+) (B|kB|MB|GB) new/),
  };
}

/** Turbo's own line per task: `<project>:build: cache hit, replaying logs <hash>` / `cache miss, executing <hash>`. */
function turboHashes(output: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of output.matchAll(/^([\w-]+):build: cache (?:hit, replaying logs|miss, executing) ([0-9a-f]{16})/gm)) out[m[1]!] = m[2]!;
  return out;
}

describe('Turborepo remote caching through cascache (real turbo, real nx, one agent)', () => {
  let dir: string;
  let ws: Workspace;
  let storeDir: string;
  let built: Record<string, string>;

  beforeAll(() => {
    const t = packAll();
    dir = tempWorkspaceDir('cascache-turbo-');
    writeTurboWorkspace(dir, { nxPlugin: { idleTimeoutMs: 300_000 } });
    installTurbo(dir, [t.core, t.server, t.nx, t.cli]);
    ws = openWorkspace(dir);
    storeDir = join(dir, '.cascache');
  });

  afterAll(() => {
    stopAgent(storeDir);
  });

  it('stores what turbo builds, deduplicated against what Nx stored for the same outputs', () => {
    // Nx first, through its plugin: the same projects, the same build script, the same outputs.
    ws.nx(['run-many', '-t', 'build']);
    expect(ws.buildLog()).toEqual(ALL);
    built = snapshotOutputs(dir);
    removeTurboState(dir);
    ws.clearBuildLog();

    const r = cascacheTurbo(dir);
    expect(ws.buildLog()).toEqual(ALL); // turbo's keys are its own: every task ran
    const s = summary(r.output);
    expect(s).toMatchObject({ tasks: 12, fromCascache: 0, ran: 12 });
    expect(snapshotOutputs(dir)).toEqual(built);
    // Only turbo's own logs and the manifests are new: the dist files' chunks were stored by Nx.
    expect(s.received).toBeGreaterThan(10_000);
    expect(s.stored).toBeLessThan(s.received * 0.25);
    const entries = readdirSync(join(storeDir, 'v1', 'ac', 'cascache'), { recursive: true }).filter((f) => /^[0-9a-f]{2}\/[0-9a-f]{64}$/.test(String(f)));
    expect(entries).toHaveLength(12);
  });

  it('restores every task from cascache after outputs and turbo state are gone: FULL TURBO, byte-identical', () => {
    removeTurboState(dir);
    ws.clearBuildLog();
    const r = cascacheTurbo(dir);
    expect(ws.buildLog()).toEqual([]);
    expect(r.output).toContain('FULL TURBO');
    expect(summary(r.output)).toMatchObject({ tasks: 12, fromCascache: 12, ran: 0, received: 0, stored: 0 });
    expect(snapshotOutputs(dir)).toEqual(built);
  });

  it('after a one-line change runs only the changed project and its dependents, storing little', () => {
    changeOneLine(dir);
    removeTurboState(dir);
    ws.clearBuildLog();
    const r = cascacheTurbo(dir);
    const changed = dependentsOf('lib-core');
    expect(ws.buildLog()).toEqual(changed);
    const s = summary(r.output);
    expect(s).toMatchObject({ tasks: 12, fromCascache: 12 - changed.length, ran: changed.length });
    // As for Nx: these outputs are ~13 kB each, so new manifests and logs weigh in; the bench measures 30 MB ones.
    expect(s.stored).toBeLessThan(s.received * 0.2);
  });

  it('with signatures on: hits are verified by turbo, and a tampered stored artifact is rebuilt, never restored', async () => {
    setSignature(dir, true);
    const env = { TURBO_REMOTE_CACHE_SIGNATURE_KEY: 'e2e-signature-key-0123456789', CASCACHE_SECRET: SECRET };
    const flags = ['--team', 'signed'];
    removeTurboState(dir);
    ws.clearBuildLog();
    const first = cascacheTurbo(dir, flags, env);
    expect(ws.buildLog()).toEqual(ALL);
    const signedBuild = snapshotOutputs(dir);

    removeTurboState(dir);
    ws.clearBuildLog();
    const hit = cascacheTurbo(dir, flags, env);
    expect(hit.output).toContain('FULL TURBO'); // turbo checked every tag over the exact bytes
    expect(ws.buildLog()).toEqual([]);
    expect(snapshotOutputs(dir)).toEqual(signedBuild);

    // Flip one byte of app-cli's stored artifact, where it lives in the store, with the agent stopped
    // (it holds small recent bodies, verified, in memory: an intact copy a restart does not keep).
    const hash = turboHashes(first.output)['app-cli'];
    expect(hash).toMatch(/^[0-9a-f]{16}$/);
    stopAgent(storeDir);
    const store = await openLocalStore({ root: storeDir, secret: Buffer.from(SECRET), index: false });
    const entry = await store.actionCache.get('signed', computeActionKey(['turbo', 'signed', hash!]));
    expect(entry?.manifest.extras?.turboBody).toBe('raw');
    const file = entry!.manifest.entries.find((e) => e.type === 'file');
    const chunk = file?.type === 'file' ? file.chunks[0]! : '';
    const loc = store.blobs.locationOf(chunk)!;
    const bytes = readFileSync(loc.file);
    const at = loc.offset + loc.length - 1; // the frame's last payload byte
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0x01, at);
    writeFileSync(loc.file, bytes);
    store.close();
    // The agent also keeps recent bodies whole (hot bodies, verified against their names): damage
    // every one of those too, so app-cli has no intact copy left while the others still do.
    const hot = join(storeDir, 'v1', 'hot');
    for (const name of readdirSync(hot).filter((n) => n.endsWith('.body'))) {
      const body = readFileSync(join(hot, name));
      body.writeUInt8(body.readUInt8(body.length - 1) ^ 0x01, body.length - 1);
      writeFileSync(join(hot, name), body);
    }

    removeTurboState(dir);
    ws.clearBuildLog();
    const after = cascacheTurbo(dir, flags, env);
    expect(ws.buildLog()).toEqual(['app-cli']);
    expect(summary(after.output)).toMatchObject({ fromCascache: 11, ran: 1 });
    expect(snapshotOutputs(dir)).toEqual(signedBuild);
  });
});

