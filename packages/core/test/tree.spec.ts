import { createGunzip, createGzip } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tarStream from 'tar-stream';
import {
  digestOf,
  ErrorCodes,
  FsBlobStore,
  getManifest,
  ingestDirectory,
  ingestTar,
  materializeToDirectory,
  materializeToTar,
  MemoryBlobStore,
  readAll,
  type BlobStore,
} from '../src';
import { tempDir } from './support/tmp';

/** Everything observable about a tree: type, mode, content digest or link target, per path. */
async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const abs = join(dir, name);
      const p = rel ? `${rel}/${name}` : name;
      const st = await lstat(abs);
      const mode = (st.mode & 0o777).toString(8);
      if (st.isSymbolicLink()) out[p] = `link -> ${await readlink(abs)}`;
      else if (st.isDirectory()) {
        out[p] = `dir ${mode}`;
        await walk(abs, p);
      } else out[p] = `file ${mode} ${st.size} ${digestOf(await readFile(abs))}`;
    }
  };
  await walk(root, '');
  return out;
}

async function makeFixtureTree(root: string): Promise<void> {
  await mkdir(join(root, 'dist/assets'), { recursive: true });
  await mkdir(join(root, 'dist/empty-dir'), { recursive: true });
  await mkdir(join(root, 'dist/ünïcødé dir ✓'), { recursive: true });
  await writeFile(join(root, 'dist/main.js'), 'export const x = 1;\n'.repeat(5000));
  await writeFile(join(root, 'dist/copy-of-main.js'), 'export const x = 1;\n'.repeat(5000));
  await writeFile(join(root, 'dist/empty.txt'), '');
  await writeFile(join(root, 'dist/assets/logo.png'), Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(70_000)]));
  await writeFile(join(root, 'dist/ünïcødé dir ✓/file with spaces.md'), '# héllo\n');
  await writeFile(join(root, 'dist/cli.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(root, 'dist/cli.sh'), 0o755);
  await writeFile(join(root, 'dist/secret.pem'), 'private');
  await chmod(join(root, 'dist/secret.pem'), 0o600);
  await symlink('main.js', join(root, 'dist/latest.js'));
  await symlink('../dist/assets', join(root, 'dist/assets-link'));
  await symlink('missing-target', join(root, 'dist/dangling'));
  await chmod(join(root, 'dist/empty-dir'), 0o750);
}

describe('directory and tar round trips', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let store: BlobStore;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
    store = new FsBlobStore({ root: join(dir, 'store') });
  });
  afterEach(() => remove());

  it('restores a directory byte-identically: content, modes, symlinks, empty dirs and files, unicode', async () => {
    await makeFixtureTree(join(dir, 'src'));
    const result = await ingestDirectory(store, join(dir, 'src'));
    expect(result.files).toBe(7);
    // the copy of main.js is deduplicated chunk for chunk
    expect(result.dedupBytes).toBeGreaterThanOrEqual(100_000);
    await materializeToDirectory(store, result.digest, join(dir, 'out'));
    expect(await snapshot(join(dir, 'out'))).toEqual(await snapshot(join(dir, 'src')));
    expect((await lstat(join(dir, 'out/dist/latest.js'))).isSymbolicLink()).toBe(true);
  });

  it('gives the same root digest for the same tree, and stores nothing new the second time', async () => {
    await makeFixtureTree(join(dir, 'src'));
    const first = await ingestDirectory(store, join(dir, 'src'));
    const second = await ingestDirectory(store, join(dir, 'src'));
    expect(second.digest).toBe(first.digest);
    expect(second.newChunks).toBe(0);
    expect(second.newBytes).toBe(0);
  });

  it('goes directory -> tar -> manifest with the same root digest, and tar output extracts identically with GNU tar', async () => {
    await makeFixtureTree(join(dir, 'src'));
    const fromDir = await ingestDirectory(store, join(dir, 'src'));
    const tar = await materializeToTar(store, fromDir.digest);
    await pipeline(tar, createWriteStream(join(dir, 'out.tar')));
    const fromTar = await ingestTar(store, createReadStream(join(dir, 'out.tar')));
    expect(fromTar.digest).toBe(fromDir.digest);
    await mkdir(join(dir, 'gnu'));
    execFileSync('tar', ['-xf', join(dir, 'out.tar'), '-C', join(dir, 'gnu')]);
    expect(await snapshot(join(dir, 'gnu'))).toEqual(await snapshot(join(dir, 'src')));
  });

  it('streams a large file as a tar in pieces of at least 256 KiB, to a slow reader', async () => {
    // 6 MiB of chunks through a reader that pauses after every piece.
    const content = randomBytes(6 * 1024 * 1024);
    await mkdir(join(dir, 'big'));
    await writeFile(join(dir, 'big', 'big.bin'), content);
    const { digest } = await ingestDirectory(store, join(dir, 'big'));
    const tar = await materializeToTar(store, digest);
    const pieces: Buffer[] = [];
    for await (const piece of tar) {
      pieces.push(piece as Buffer);
      await new Promise((resolve) => setImmediate(resolve));
    }
    // A zlib stream downstream costs a thread-pool round trip per piece: ~8 KiB chunks cost ~4,000.
    expect(pieces.slice(0, -1).every((p) => p.length >= 256 * 1024)).toBe(true);
    const extracted: Buffer[] = [];
    const extract = tarStream.extract();
    extract.on('entry', (_h, stream, next) => {
      stream.on('data', (b: Buffer) => extracted.push(b));
      stream.on('end', next);
    });
    await pipeline(Readable.from(pieces), extract);
    expect(Buffer.concat(extracted).equals(content)).toBe(true);
  });

  it('ingests a tar made by GNU tar (with ./ prefixes and gzip undone by the caller)', async () => {
    await makeFixtureTree(join(dir, 'src'));
    execFileSync('tar', ['-czf', join(dir, 'gnu.tgz'), '-C', join(dir, 'src'), '.']);
    const r = await ingestTar(store, createReadStream(join(dir, 'gnu.tgz')).pipe(createGunzip()));
    const fromDir = await ingestDirectory(store, join(dir, 'src'));
    expect(r.digest).toBe(fromDir.digest);
  });

  it('keeps named top-level tar entries as manifest extras and writes them back', async () => {
    const pack = tarStream.pack();
    pack.entry({ name: 'terminalOutput' }, 'built in 3s\n');
    const code = Buffer.alloc(4);
    code.writeInt32BE(0);
    pack.entry({ name: 'code' }, code);
    pack.entry({ name: 'dist/a.js' }, 'a');
    pack.finalize();
    const extraEntries = { terminalOutput: (b: Buffer) => b.toString('utf8'), code: (b: Buffer) => b.readInt32BE(0) };
    const r = await ingestTar(store, pack as unknown as AsyncIterable<Uint8Array>, { extraEntries });
    expect(r.manifest.extras).toEqual({ terminalOutput: 'built in 3s\n', code: 0 });
    expect(r.manifest.entries.map((e) => e.path)).toEqual(['dist/a.js']);
    const out = await materializeToTar(store, r.manifest, {
      extraEntries: {
        terminalOutput: (v) => Buffer.from(String(v)),
        code: (v) => {
          const b = Buffer.alloc(4);
          b.writeInt32BE(Number(v));
          return b;
        },
      },
    });
    const names: string[] = [];
    const extract = tarStream.extract();
    out.pipe(extract as unknown as NodeJS.WritableStream);
    for await (const e of extract) {
      names.push(e.header.name);
      e.resume();
    }
    expect(names).toEqual(['terminalOutput', 'code', 'dist/a.js']);
  });

  it('streams a file far larger than it holds in memory (512 MiB) in and out', async () => {
    const big = join(dir, 'big/huge.bin');
    await mkdir(join(dir, 'big'));
    const fh = await open(big, 'w');
    // A sparse file: nothing is written, so the test costs no disk for the input.
    await fh.truncate(512 * 1024 * 1024);
    await fh.close();
    const before = process.memoryUsage().rss;
    const r = await ingestDirectory(store, join(dir, 'big'));
    await materializeToDirectory(store, r.digest, join(dir, 'big-out'));
    const grew = process.memoryUsage().rss - before;
    expect(r.logicalBytes).toBe(512 * 1024 * 1024);
    expect((await stat(join(dir, 'big-out/huge.bin'))).size).toBe(512 * 1024 * 1024);
    expect(grew).toBeLessThan(200 * 1024 * 1024);
  });

  it('refuses to restore into a non-empty directory', async () => {
    await makeFixtureTree(join(dir, 'src'));
    const r = await ingestDirectory(store, join(dir, 'src'));
    await expect(materializeToDirectory(store, r.digest, join(dir, 'src'))).rejects.toMatchObject({ code: ErrorCodes.EXISTS });
  });

  it('errors a tar stream with E_NOT_FOUND when a chunk is missing, instead of ending it short', async () => {
    await makeFixtureTree(join(dir, 'src'));
    const r = await ingestDirectory(store, join(dir, 'src'));
    const main = r.manifest.entries.find((e) => e.path === 'dist/main.js');
    if (main?.type !== 'file') throw new Error('fixture changed');
    await store.delete(main.chunks[main.chunks.length - 1]!);
    const tar = await materializeToTar(store, r.digest);
    await expect(readAll(tar, 1 << 30)).rejects.toMatchObject({ code: ErrorCodes.NOT_FOUND });
  });

  it('stops producing when the tar consumer goes away', async () => {
    await mkdir(join(dir, 'big'));
    await writeFile(join(dir, 'big/a.bin'), randomBytes(8 * 1024 * 1024));
    const r = await ingestDirectory(store, join(dir, 'big'));
    const tar = await materializeToTar(store, r.digest);
    const closed = new Promise((resolve) => tar.once('close', resolve));
    for await (const piece of tar) {
      expect(piece.length).toBeGreaterThan(0);
      break; // abandons the stream after the first piece, as a disconnecting client does
    }
    await closed;
    expect(tar.destroyed).toBe(true);
  });

  it('reports an unreadable source directory as E_IO', async () => {
    await expect(ingestDirectory(store, join(dir, 'does-not-exist'))).rejects.toMatchObject({ code: ErrorCodes.IO });
  });

  it('fails a restore with E_NOT_FOUND when a chunk is missing', async () => {
    await makeFixtureTree(join(dir, 'src'));
    const r = await ingestDirectory(store, join(dir, 'src'));
    const main = r.manifest.entries.find((e) => e.path === 'dist/main.js');
    if (main?.type !== 'file') throw new Error('fixture changed');
    await store.delete(main.chunks[0]!);
    await expect(materializeToDirectory(store, r.digest, join(dir, 'out'))).rejects.toMatchObject({ code: ErrorCodes.NOT_FOUND });
  });
});

describe('hostile tar input', () => {
  const store = new MemoryBlobStore();

  async function tarBytes(entries: Array<{ header: Partial<tarStream.Header> & { name: string }; body?: string }>): Promise<Buffer> {
    const pack = tarStream.pack();
    for (const e of entries) {
      if (e.body === undefined) pack.entry(e.header);
      else pack.entry(e.header, e.body);
    }
    pack.finalize();
    return readAll(pack as unknown as AsyncIterable<Uint8Array>, 1 << 24);
  }

  it.each([
    ['an absolute path', [{ header: { name: '/etc/cron.d/x' }, body: 'x' }]],
    ['a .. path', [{ header: { name: 'dist/../../outside' }, body: 'x' }]],
    ['an absolute symlink', [{ header: { name: 'l', type: 'symlink' as const, linkname: '/etc' } }]],
    ['an escaping symlink', [{ header: { name: 'a/l', type: 'symlink' as const, linkname: '../../..' } }]],
    ['a file through a symlink', [{ header: { name: 'l', type: 'symlink' as const, linkname: 'd' } }, { header: { name: 'l/x' }, body: 'x' }]],
    ['a device', [{ header: { name: 'dev', type: 'character-device' as const } }]],
    ['a hard link to a non-member', [{ header: { name: 'h', type: 'link' as const, linkname: '/etc/shadow' } }]],
  ])('rejects %s with E_BAD_INPUT', async (_, entries) => {
    const bytes = await tarBytes(entries);
    await expect(ingestTar(store, Readable.from([bytes]))).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
  });

  it('accepts old-style (v7) headers, as Nx writes for terminalOutput and code', async () => {
    const bytes = Buffer.from(await tarBytes([{ header: { name: 'terminalOutput' }, body: 'done\n' }]));
    // Turn the ustar header into a v7 one: clear magic, version, names and device fields, re-checksum.
    bytes.fill(0, 257, 500);
    bytes.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += bytes[i]!;
    bytes.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const r = await ingestTar(store, Readable.from([bytes]), { extraEntries: { terminalOutput: (b) => b.toString() } });
    expect(r.manifest.extras).toEqual({ terminalOutput: 'done\n' });
  });

  it('rejects a truncated archive', async () => {
    const bytes = await tarBytes([{ header: { name: 'a.txt' }, body: 'x'.repeat(5000) }]);
    await expect(ingestTar(store, Readable.from([bytes.subarray(0, 2000)]))).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
  });

  it('rejects garbage', async () => {
    await expect(ingestTar(store, Readable.from([randomBytes(4096)]))).rejects.toMatchObject({ code: ErrorCodes.BAD_INPUT });
  });

  it('enforces entry-count, file-size and total-size limits with E_TOO_LARGE', async () => {
    const bytes = await tarBytes([
      { header: { name: 'a' }, body: 'x'.repeat(3000) },
      { header: { name: 'b' }, body: 'y'.repeat(3000) },
    ]);
    await expect(ingestTar(store, Readable.from([bytes]), { limits: { maxEntries: 1 } })).rejects.toMatchObject({ code: ErrorCodes.TOO_LARGE });
    await expect(ingestTar(store, Readable.from([bytes]), { limits: { maxFileBytes: 2999 } })).rejects.toMatchObject({ code: ErrorCodes.TOO_LARGE });
    await expect(ingestTar(store, Readable.from([bytes]), { limits: { maxTotalBytes: 5999 } })).rejects.toMatchObject({ code: ErrorCodes.TOO_LARGE });
    await expect(ingestTar(store, Readable.from([bytes]), { limits: { maxTotalBytes: 6000 } })).resolves.toMatchObject({ files: 2 });
  });

  it('turns a hard link to an earlier member into a copy, and drops setuid bits', async () => {
    const bytes = await tarBytes([
      { header: { name: 'bin/tool', mode: 0o4755 }, body: 'binary' },
      { header: { name: 'bin/alias', type: 'link', linkname: 'bin/tool' } },
    ]);
    const r = await ingestTar(store, Readable.from([bytes]));
    const m = await getManifest(store, r.digest);
    expect(m!.entries).toEqual([
      { path: 'bin/alias', type: 'file', mode: 0o755, size: 6, chunks: [digestOf('binary')] },
      { path: 'bin/tool', type: 'file', mode: 0o755, size: 6, chunks: [digestOf('binary')] },
    ]);
  });

  it('writes a gzip-compressible tar stream the Nx way (sanity for later protocol code)', async () => {
    const bytes = await tarBytes([{ header: { name: 'x' }, body: 'hello' }]);
    const gz = await readAll(Readable.from([bytes]).pipe(createGzip()), 1 << 20);
    expect(gz[0]).toBe(0x1f);
  });
});
