import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ExitCodes, parseSize } from '../src';
import { cli } from './support/run-cli';

const FIXTURES = join(__dirname, '../../../fixtures');
const IMAGE = join(FIXTURES, 'fastcdc/SekienAkashita.jpg');
const VECTORS = JSON.parse(readFileSync(join(FIXTURES, 'fastcdc/vectors.json'), 'utf8')) as {
  cases: Array<{ min: number; avg: number; max: number; lengths: number[] }>;
};


describe('cascache debug', () => {
  it.each(VECTORS.cases)('chunk prints the vector lengths for $min/$avg/$max', async (c) => {
    const r = await cli('debug', 'chunk', IMAGE, '--min', String(c.min), '--avg', String(c.avg), '--max', String(c.max));
    expect(r).toEqual({ code: 0, stdout: c.lengths.map((l) => `${l}\n`).join(''), stderr: '' });
  });

  it('chunk defaults to 2 KiB / 8 KiB / 64 KiB and accepts unit suffixes', async () => {
    const expected = VECTORS.cases.find((c) => c.min === 2048 && c.avg === 8192 && c.max === 65536)!.lengths;
    expect((await cli('debug', 'chunk', IMAGE)).stdout.trim().split('\n').map(Number)).toEqual(expected);
    expect((await cli('debug', 'chunk', IMAGE, '--min', '2KiB', '--avg', '8k', '--max', '64KiB')).stdout.trim().split('\n').map(Number)).toEqual(expected);
  });

  it('chunk --digests prints length and BLAKE3 digest per chunk', async () => {
    const r = await cli('debug', 'chunk', IMAGE, '--digests');
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^6634 [0-9a-f]{64}$/);
  });

  it('digest prints the BLAKE3 hex of a file', async () => {
    const r = await cli('debug', 'digest', IMAGE);
    expect(r.stdout).toBe(`dba425aa7292ef1209841ab3855a93d4dfa6855658a347f85c502f2c2208cf0f  ${IMAGE}\n`);
  });

  it('maps errors to documented exit codes with one clear line', async () => {
    const missing = await cli('debug', 'digest', '/no/such/file');
    expect(missing.code).toBe(ExitCodes.NOT_FOUND);
    expect(missing.stderr).toBe('cascache: no such file or directory: /no/such/file\n');
    const bounds = await cli('debug', 'chunk', IMAGE, '--min', '10');
    expect(bounds.code).toBe(ExitCodes.USAGE);
    expect(bounds.stderr).toContain('chunker min must be an integer from 64 to 1048576 bytes');
    expect((await cli('debug', 'chunk', IMAGE, '--avg', 'lots')).code).toBe(ExitCodes.USAGE);
    expect((await cli('no-such-command')).code).toBe(ExitCodes.USAGE);
  });

  it('prints help and version with exit code 0', async () => {
    const help = await cli('debug', 'chunk', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--avg <size>');
    expect((await cli('--version')).stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('runs as an executable with the same output and exit codes', () => {
    // The executable npm links is in the source tree: in a fresh clone, npm links bins before the
    // build, and skips one whose target does not exist yet (`npx cascache`: "not found").
    const pkg = JSON.parse(readFileSync(join(__dirname, '../package.json'), 'utf8')) as { bin: { cascache: string } };
    expect(pkg.bin.cascache).toBe('./bin/cascache.js');
    const bin = join(__dirname, '..', pkg.bin.cascache);
    expect(execFileSync(process.execPath, [bin, 'debug', 'chunk', IMAGE, '--min', '16384', '--avg', '65536', '--max', '262144']).toString()).toBe('109466\n');
    expect(spawnSync(process.execPath, [bin, 'debug', 'digest', '/nope']).status).toBe(ExitCodes.NOT_FOUND);
  });

  it('parses sizes strictly', () => {
    expect(parseSize('8192')).toBe(8192);
    expect(parseSize('64KiB')).toBe(65536);
    expect(parseSize('1m')).toBe(1048576);
    expect(() => parseSize('-1')).toThrow();
    expect(() => parseSize('1.5k')).toThrow();
  });
});
