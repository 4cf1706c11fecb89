/**
 * The action key of `cascache cache build|get`: what a component's build output depends on.
 *
 * key = BLAKE3 action key over ("cli", component, version, task, dependencies, inputs), where
 * dependencies is the canonical JSON of the sorted `name@version` list and inputs is the digest of
 * the canonical JSON of sorted [path, BLAKE3 of content] pairs. Change any ingredient and the key
 * changes; `--explain` prints each one.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { glob } from 'tinyglobby';
import { canonicalJson, CascacheError, computeActionKey, digestFile, digestOf, ErrorCodes, type Digest } from '@cascache/core';

export interface KeyInputs {
  component: string;
  /** Component directory (package.json, inputs). */
  dir: string;
  /** Build target name. */
  task: string;
  version?: string;
  /** `name@version` strings; from package.json when absent. */
  deps?: string[];
  /**
   * Input globs relative to `dir`. Default: in a git work tree, the files git would commit (tracked,
   * and untracked but not ignored: `git ls-files -co --exclude-standard`), so ignored build outputs
   * never count wherever they are restored; elsewhere every file. The excluded directories never
   * count.
   */
  inputs?: string[];
  /**
   * Directories never counted as inputs: the component's outputs (`--source` of a build, `--target`
   * of a get, `--outputs`, and those recorded by earlier builds and gets of the component).
   */
  exclude?: string[];
}

/** Why a file is an input: the rule that picked it (shown by `--explain`; not part of the key). */
export type InputRule = 'tracked by git' | 'untracked, not ignored by git' | 'matches --inputs' | 'every file (not a git work tree)';

export interface KeyExplanation {
  key: Digest;
  component: string;
  version: string;
  task: string;
  deps: string[];
  depsDigest: Digest;
  inputs: Array<{ path: string; digest: Digest; rule: InputRule }>;
  inputsDigest: Digest;
  /** Output directories inside the component, relative to it, that were not counted. */
  outputs: string[];
}

const ALWAYS_EXCLUDED = ['node_modules', '.git', '.cascache', '.nx'];

/**
 * The files under `dir` that git would commit: tracked (and still present) plus untracked files
 * that no ignore rule covers, as paths relative to `dir` mapped to the rule that picked them (from
 * the status tag of `git ls-files -t`: `?` is untracked). Null outside a git work tree or without git.
 */
function gitFiles(dir: string): Map<string, InputRule> | null {
  const r = spawnSync('git', ['ls-files', '-z', '-t', '--cached', '--others', '--exclude-standard'], { cwd: dir, encoding: 'utf8', timeout: 10_000, maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'ignore'] });
  if (r.status !== 0) return null;
  const files = new Map<string, InputRule>();
  for (const line of r.stdout.split('\0')) {
    if (line.length < 3) continue;
    const path = line.slice(2);
    if (!files.has(path) && existsSync(join(dir, path))) files.set(path, line[0] === '?' ? 'untracked, not ignored by git' : 'tracked by git');
  }
  return files;
}

function readPackageJson(dir: string): Record<string, unknown> | null {
  const p = join(dir, 'package.json');
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new CascacheError(ErrorCodes.BAD_INPUT, `${p} is not valid JSON`, { cause: err });
  }
}

/**
 * Computes the key and every ingredient.
 * @throws CascacheError `E_BAD_INPUT` when no version is known or a --dep is malformed.
 */
export async function computeCacheKey(k: KeyInputs): Promise<KeyExplanation> {
  const dir = resolve(k.dir);
  const pkg = readPackageJson(dir);
  const version = k.version ?? (typeof pkg?.version === 'string' ? pkg.version : undefined);
  if (!version) throw new CascacheError(ErrorCodes.BAD_INPUT, `no version for ${k.component}: pass --version or give ${dir} a package.json with a version`);
  let deps = k.deps;
  if (!deps) {
    deps = [];
    for (const field of ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies']) {
      const m = pkg?.[field];
      if (m && typeof m === 'object') for (const [name, range] of Object.entries(m as Record<string, unknown>)) deps.push(`${name}@${String(range)}`);
    }
  }
  for (const d of deps) if (!/^(@[^/@\s]+\/)?[^@\s]+@\S+$/.test(d)) throw new CascacheError(ErrorCodes.BAD_INPUT, `--dep must look like name@version, got ${JSON.stringify(d)}`);
  deps = [...new Set(deps)].sort();

  // Tool directories at any depth, and the output directories (when they lie inside the component).
  const outputDirs = (k.exclude ?? []).map((e) => relative(dir, resolve(e)).split(sep).join('/')).filter((e) => e !== '' && !e.startsWith('..'));
  const ignore = [...ALWAYS_EXCLUDED.map((n) => `**/${n}/**`), ...outputDirs.map((e) => `${e}/**`)];
  const inGit = k.inputs?.length ? null : gitFiles(dir);
  const picked = new Map<string, InputRule>();
  if (inGit) {
    for (const [f, rule] of inGit) if (!f.split('/').some((part) => ALWAYS_EXCLUDED.includes(part)) && !outputDirs.some((o) => f === o || f.startsWith(`${o}/`))) picked.set(f, rule);
  } else {
    const rule: InputRule = k.inputs?.length ? 'matches --inputs' : 'every file (not a git work tree)';
    for (const f of await glob(k.inputs?.length ? k.inputs : ['**/*'], { cwd: dir, dot: true, onlyFiles: true, followSymbolicLinks: false, ignore })) picked.set(f, rule);
  }
  const inputs: KeyExplanation['inputs'] = [];
  for (const f of [...picked.keys()].sort()) inputs.push({ path: f, digest: await digestFile(join(dir, f)), rule: picked.get(f)! });
  const depsDigest = digestOf(canonicalJson(deps));
  const inputsDigest = digestOf(canonicalJson(inputs.map((i) => [i.path, i.digest])));
  const key = computeActionKey(['cli', k.component, version, k.task, canonicalJson(deps), inputsDigest]);
  return { key, component: k.component, version, task: k.task, deps, depsDigest, inputs, inputsDigest, outputs: [...new Set(outputDirs)].sort() };
}
