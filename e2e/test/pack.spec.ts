import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freshProject, packAll, REPO } from '../src/pack';

const IMAGE = join(REPO, 'fixtures/fastcdc/SekienAkashita.jpg');
const VECTORS = JSON.parse(readFileSync(join(REPO, 'fixtures/fastcdc/vectors.json'), 'utf8')) as {
  cases: Array<{ min: number; avg: number; max: number; lengths: number[] }>;
};

describe('packages installed from npm pack tarballs into a fresh project', () => {
  let project: string;
  beforeAll(() => {
    const t = packAll();
    project = freshProject([t.core, t.server, t.nx, t.cli]);
  });
  afterAll(() => project && rmSync(project, { recursive: true, force: true }));

  it('ships only built output, no sources or tests', () => {
    const files = (pkg: string): string[] =>
      (JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: join(REPO, 'packages', pkg) }).toString())[0].files as Array<{ path: string }>).map((f) => f.path);
    for (const pkg of ['core', 'cli']) {
      const list = files(pkg);
      expect(list).toContain('dist/index.js');
      expect(list).toContain('dist/index.d.ts');
      expect(list.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.endsWith('.map'))).toEqual([]);
    }
  });

  it.each(VECTORS.cases)('npx cascache debug chunk reproduces the FastCDC vector $min/$avg/$max', (c) => {
    const out = execFileSync('npx', ['--no-install', 'cascache', 'debug', 'chunk', IMAGE, '--min', String(c.min), '--avg', String(c.avg), '--max', String(c.max)], { cwd: project });
    expect(out.toString().trim().split('\n').map(Number)).toEqual(c.lengths);
  });

  it('npx cascache debug digest prints the BLAKE3 digest', () => {
    const out = execFileSync('npx', ['--no-install', 'cascache', 'debug', 'digest', IMAGE], { cwd: project }).toString();
    expect(out.split(' ')[0]).toBe('dba425aa7292ef1209841ab3855a93d4dfa6855658a347f85c502f2c2208cf0f');
  });

  it('@cascache/core works from require() with its types, and blocks deep imports', () => {
    const script = `
      const core = require('@cascache/core');
      const d = core.digestOf('hello');
      let deep = 'allowed';
      try { require('@cascache/core/dist/chunker'); } catch (e) { deep = e.code; }
      process.stdout.write(JSON.stringify({ d, deep, zstd: core.readBlobHeader(core.encodeBlob(Buffer.alloc(1000))).codec }));`;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: project });
    expect(r.stderr.toString()).toBe('');
    expect(JSON.parse(r.stdout.toString())).toEqual({ d: 'ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f', deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED', zstd: 1 });
    expect(readFileSync(join(project, 'node_modules/@cascache/core/dist/index.d.ts'), 'utf8')).toContain('export');
  });
});
