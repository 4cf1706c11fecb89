/**
 * A store on a full disk stays checkable (issue: `verify` crashed with `SqliteError: database or disk
 * is full` in the index rebuild). A real full filesystem: a small tmpfs mounted in a private user and
 * mount namespace (`unshare -rm`, no root needed), filled with `dd` up to a few kB of slack.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = join(__dirname, '../dist/bin.js');

/** Whether this machine lets us mount a tmpfs in a private namespace (Linux with user namespaces). */
function canMountTmpfs(): boolean {
  if (process.platform !== 'linux') return false;
  const dir = mkdtempSync(join(tmpdir(), 'cascache-probe-'));
  try {
    return spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o size=64k tmpfs ${dir}`], { encoding: 'utf8' }).status === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const mountable = canMountTmpfs();
if (!mountable) console.warn('full-disk.spec: skipped, this machine cannot mount a tmpfs in a user namespace (unshare -rm)');

(mountable ? describe : describe.skip)('a store on a full disk', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cascache-full-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is verified and its stats are read from the files, with a warning, when the index cannot be rebuilt', () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    // 400 distinct small files: an index rebuild needs more room than the slack left below.
    for (let i = 0; i < 400; i++) writeFileSync(join(src, `f${i}.txt`), `file ${i} ${'x'.repeat(i % 17)}\n`);
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    // Several amounts of slack: with too little SQLite cannot even open the index; with a few kB
    // it opens and the rebuild runs out of room, which is the case that crashed.
    const script = `
set -e
mount -t tmpfs -o size=4m tmpfs ${mnt}
node ${BIN} store add full --source ${src} --store-dir ${mnt}/s > /dev/null
set +e
for slack in 8 16 32 64; do
  rm -f ${mnt}/filler
  free=$(df -k --output=avail ${mnt} | tail -1)
  dd if=/dev/zero of=${mnt}/filler bs=1k count=$((free - slack)) 2>/dev/null
  echo "== slack $slack"
  node ${BIN} verify --rebuild-index --store-dir ${mnt}/s 2>&1; echo "EXIT=$?"
  node ${BIN} stats --json --store-dir ${mnt}/s > ${dir}/stats.json; echo "EXIT=$?"
  node -e "console.log('BLOBS=' + require('${dir}/stats.json').store.blobs)"
done`;
    const r = spawnSync('unshare', ['-rm', 'sh', '-c', script], { encoding: 'utf8', timeout: 120_000 });
    const out = `${r.stdout}${r.stderr}`;
    expect(r.status).toBe(0);
    expect(out).not.toMatch(/SqliteError|at StoreIndex/);
    expect(out.match(/EXIT=\d+/g)).toEqual(Array(8).fill('EXIT=0'));
    expect(out.match(/no problems found/g)).toHaveLength(4);
    // 400 files' chunks and the manifest, counted from the files when the index cannot be used.
    expect(out.match(/BLOBS=\d+/g)).toEqual(Array(4).fill('BLOBS=401'));
    // The case that crashed: SQLite opened the index, then ran out of room rebuilding it.
    expect(out).toContain('could not rebuild the store index: database or disk is full; verifying the files without it');
  });
});
