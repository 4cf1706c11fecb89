/**
 * Manifests: the tree of one task output, stored as a canonical-JSON blob whose digest is the
 * output's root digest.
 *
 * ```json
 * {"entries":[{"mode":493,"path":"dist","type":"dir"},
 *             {"chunks":["<digest>",...],"mode":420,"path":"dist/main.js","size":1234,"type":"file"},
 *             {"path":"dist/latest","target":"main.js","type":"symlink"}],
 *  "extras":{"code":0},"format":"cascache.manifest/v1"}
 * ```
 *
 * Invariants, enforced by {@link validateManifest} on everything built or parsed (manifests can come
 * from a hostile remote or a hostile tar):
 * - paths are relative POSIX paths: no leading `/`, no `.` or `..` or empty segments, no NUL or `\`;
 * - entries are unique and sorted by path (UTF-16 code-unit order, as RFC 8785 sorts member names),
 *   so identical trees give identical bytes whatever order they were read in;
 * - nothing lives below a file or a symlink, so a restore never writes through a link;
 * - symlink targets are relative and, resolved through the manifest's own links, stay inside the
 *   root (dangling targets inside the root are allowed, as in `node_modules/.bin`);
 * - modes keep the permission bits only (setuid, setgid and sticky are dropped);
 * - a file's size equals the sum of its chunks' raw lengths (checked on restore).
 */
import { canonicalJson } from './canonical-json';
import { isDigest, type Digest } from './digest';
import { CascacheError, ErrorCodes } from './errors';

/** Format tag of version-1 manifests. */
export const MANIFEST_FORMAT = 'cascache.manifest/v1';

/** A regular file: its content is the concatenation of its chunks. */
export interface FileEntry {
  path: string;
  type: 'file';
  /** Permission bits (0..0o777). */
  mode: number;
  /** Length in bytes. */
  size: number;
  /** Digests of the chunks, in order. Empty for an empty file. */
  chunks: Digest[];
}

/** A directory (listed so that empty directories and their modes survive). */
export interface DirEntry {
  path: string;
  type: 'dir';
  /** Permission bits (0..0o777). */
  mode: number;
}

/** A symbolic link, kept as a link and never followed. */
export interface SymlinkEntry {
  path: string;
  type: 'symlink';
  /** Relative link target, as stored in the link. */
  target: string;
}

export type ManifestEntry = FileEntry | DirEntry | SymlinkEntry;

/** Small tool-specific values kept with a tree (Nx: `terminalOutput`, `code`). */
export type ManifestExtras = Record<string, string | number | boolean>;

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  entries: ManifestEntry[];
  extras?: ManifestExtras;
}

/** Bounds on what a manifest may hold; they keep hostile input from exhausting memory. */
export const MANIFEST_LIMITS = Object.freeze({
  /** Longest path in UTF-8 bytes. */
  pathBytes: 4096,
  /** Longest symlink target in UTF-8 bytes. */
  targetBytes: 4096,
  /** Most symlinks followed while resolving one target (Linux's ELOOP limit). */
  symlinkHops: 40,
  /** Largest extras value in UTF-8 bytes. */
  extraBytes: 8 * 1024 * 1024,
});

/**
 * Checks a relative path and returns it unchanged.
 * @throws CascacheError `E_BAD_INPUT` for absolute paths, `..`, `.` or empty segments, NUL,
 * backslashes, or over-long paths.
 */
export function assertSafePath(path: string, what = 'path'): string {
  const bad = (why: string): never => {
    throw new CascacheError(ErrorCodes.BAD_INPUT, `${what} ${JSON.stringify(path.slice(0, 200))} ${why}`, {
      details: { path: path.slice(0, 1000) },
    });
  };
  if (typeof path !== 'string' || path.length === 0) bad('is empty');
  if (Buffer.byteLength(path, 'utf8') > MANIFEST_LIMITS.pathBytes) bad(`is longer than ${MANIFEST_LIMITS.pathBytes} bytes`);
  if (path.includes('\0')) bad('contains a NUL byte');
  if (path.includes('\\')) bad('contains a backslash');
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) bad('is absolute');
  for (const seg of path.split('/')) {
    if (seg === '..') bad('climbs out of the root with ".."');
    if (seg === '' || seg === '.') bad('has an empty or "." segment');
  }
  return path;
}

/**
 * Normalizes a path as written in a tar header or walked from disk into manifest form: strips a
 * leading `./` and a trailing `/`. Returns `''` for the root itself. The result is then checked with
 * {@link assertSafePath}.
 */
export function normalizeEntryPath(raw: string): string {
  let p = raw;
  while (p.startsWith('./')) p = p.slice(2);
  while (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
  if (p === '.' || p === '' || p === '/') return '';
  // Collapse internal "./" segments and duplicate slashes, as tar implementations do; ".." stays
  // and is rejected by assertSafePath.
  const segs = p.split('/').filter((s, i) => s !== '.' && (s !== '' || i === 0));
  return segs.join('/');
}

/** Keeps the permission bits of a mode (drops file type, setuid, setgid, sticky). */
export function permissionBits(mode: number): number {
  return mode & 0o777;
}

/** Compares paths the way entries are sorted. */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Builds a valid manifest from entries in any order: sorts them, checks every invariant.
 * @throws CascacheError `E_BAD_INPUT` when an invariant fails.
 */
export function createManifest(entries: Iterable<ManifestEntry>, extras?: ManifestExtras): Manifest {
  const sorted = [...entries].sort((a, b) => comparePaths(a.path, b.path));
  const manifest: Manifest = { format: MANIFEST_FORMAT, entries: sorted };
  if (extras && Object.keys(extras).length > 0) manifest.extras = { ...extras };
  validateManifest(manifest);
  return manifest;
}

/** Canonical bytes of a manifest (RFC 8785 JSON, UTF-8). Its BLAKE3 is the root digest. */
export function encodeManifest(manifest: Manifest): Buffer {
  return Buffer.from(canonicalJson(manifest), 'utf8');
}

/**
 * Parses and validates manifest bytes from any source (another machine, a remote tier).
 * @throws CascacheError `E_BAD_INPUT` for malformed JSON or any broken invariant.
 */
export function parseManifest(bytes: Uint8Array): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new CascacheError(ErrorCodes.BAD_INPUT, 'manifest is not valid JSON', { cause: err });
  }
  validateManifest(value);
  return value;
}

/**
 * Checks every manifest invariant (see the module comment).
 * @throws CascacheError `E_BAD_INPUT` naming the first broken one.
 */
export function validateManifest(value: unknown): asserts value is Manifest {
  const bad = (why: string): never => {
    throw new CascacheError(ErrorCodes.BAD_INPUT, `invalid manifest: ${why}`);
  };
  if (!isPlainObject(value)) return bad('not an object');
  if (value.format !== MANIFEST_FORMAT) bad(`unknown format ${JSON.stringify(value.format)}`);
  for (const k of Object.keys(value)) if (k !== 'format' && k !== 'entries' && k !== 'extras') bad(`unknown field ${k}`);
  if (value.extras !== undefined) {
    if (!isPlainObject(value.extras)) bad('extras must be an object');
    for (const [k, v] of Object.entries(value.extras as Record<string, unknown>)) {
      const t = typeof v;
      if (t !== 'string' && t !== 'boolean' && !(t === 'number' && Number.isFinite(v))) bad(`extra ${k} has a ${t} value`);
      if (t === 'string' && Buffer.byteLength(v as string) > MANIFEST_LIMITS.extraBytes) bad(`extra ${k} is too large`);
    }
  }
  const entries = value.entries;
  if (!Array.isArray(entries)) return bad('entries must be an array');
  const types = new Map<string, ManifestEntry['type']>();
  let previous: string | undefined;
  for (const e of entries as unknown[]) {
    if (!isPlainObject(e)) return bad('an entry is not an object');
    const path = e.path;
    if (typeof path !== 'string') return bad('an entry has no path');
    assertSafePath(path, 'manifest path');
    if (previous !== undefined && comparePaths(previous, path) >= 0) {
      bad(previous === path ? `duplicate path ${path}` : `entries not sorted at ${path}`);
    }
    previous = path;
    switch (e.type) {
      case 'file': {
        expectKeys(e, ['path', 'type', 'mode', 'size', 'chunks'], bad);
        checkMode(e.mode, path, bad);
        if (!Number.isSafeInteger(e.size) || (e.size as number) < 0) bad(`${path}: size must be a non-negative integer`);
        if (!Array.isArray(e.chunks) || !e.chunks.every(isDigest)) bad(`${path}: chunks must be digests`);
        if ((e.size as number) === 0 && (e.chunks as unknown[]).length !== 0) bad(`${path}: an empty file has no chunks`);
        if ((e.size as number) > 0 && (e.chunks as unknown[]).length === 0) bad(`${path}: a non-empty file needs chunks`);
        break;
      }
      case 'dir':
        expectKeys(e, ['path', 'type', 'mode'], bad);
        checkMode(e.mode, path, bad);
        break;
      case 'symlink':
        expectKeys(e, ['path', 'type', 'target'], bad);
        if (typeof e.target !== 'string' || e.target.length === 0) bad(`${path}: symlink target must be a non-empty string`);
        if (Buffer.byteLength(e.target as string) > MANIFEST_LIMITS.targetBytes) bad(`${path}: symlink target too long`);
        if ((e.target as string).includes('\0')) bad(`${path}: symlink target contains NUL`);
        if ((e.target as string).startsWith('/')) bad(`${path}: symlink target is absolute`);
        break;
      default:
        bad(`${path}: unknown entry type ${JSON.stringify(e.type)}`);
    }
    // Nothing may live below a file or a link: a restore must never write through a symlink.
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      const parentType = types.get(path.slice(0, i));
      if (parentType !== undefined && parentType !== 'dir') bad(`${path} lies below the ${parentType} ${path.slice(0, i)}`);
    }
    types.set(path, e.type as ManifestEntry['type']);
  }
  const links = new Map<string, string>();
  for (const e of entries as ManifestEntry[]) if (e.type === 'symlink') links.set(e.path, e.target);
  for (const [path, target] of links) {
    if (symlinkEscapes(path, target, links)) bad(`symlink ${path} -> ${target} points outside the root`);
  }
}

/**
 * True when the link at `path` with `target`, resolved segment by segment through the other links of
 * the same tree, leaves the root (or loops more than {@link MANIFEST_LIMITS.symlinkHops} times).
 * Resolution follows POSIX: `..` applies to the directory reached so far, after any link in it has
 * been followed, so `a -> d/l/../..` with `d/l -> ..` is caught even though it looks harmless
 * lexically.
 */
export function symlinkEscapes(path: string, target: string, links: ReadonlyMap<string, string>): boolean {
  if (target.startsWith('/')) return true;
  const stack = path.split('/').slice(0, -1);
  let queue = target.split('/');
  let hops = 0;
  while (queue.length > 0) {
    const seg = queue.shift()!;
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (stack.length === 0) return true;
      stack.pop();
      continue;
    }
    stack.push(seg);
    const linked = links.get(stack.join('/'));
    if (linked !== undefined) {
      if (++hops > MANIFEST_LIMITS.symlinkHops || linked.startsWith('/')) return true;
      stack.pop();
      queue = linked.split('/').concat(queue);
    }
  }
  return false;
}

/** Digests of every chunk a manifest references, deduplicated, in first-use order. */
export function manifestChunks(manifest: Manifest): Digest[] {
  const seen = new Set<Digest>();
  for (const e of manifest.entries) if (e.type === 'file') for (const c of e.chunks) seen.add(c);
  return [...seen];
}

/** Sum of file sizes in bytes (the logical size of the tree). */
export function manifestSize(manifest: Manifest): number {
  let total = 0;
  for (const e of manifest.entries) if (e.type === 'file') total += e.size;
  return total;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkMode(mode: unknown, path: string, bad: (why: string) => never): void {
  if (!Number.isInteger(mode) || (mode as number) < 0 || (mode as number) > 0o777) bad(`${path}: mode must be 0..0o777`);
}

function expectKeys(e: Record<string, unknown>, allowed: string[], bad: (why: string) => never): void {
  for (const k of Object.keys(e)) if (!allowed.includes(k)) bad(`${String(e.path)}: unexpected field ${k}`);
}
