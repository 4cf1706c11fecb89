#!/usr/bin/env node
// @ts-check
/**
 * `npm run add-to -- <workspace> [init options]`: puts this clone's cascache into an existing Nx
 * workspace, until the packages are on the npm registry (then `nx add @cascache/nx` does this).
 *
 * 1. builds this repo (cached by Nx after the first time);
 * 2. `npm pack`s @cascache/core, server, nx and the cascache CLI into `<workspace>/.cascache-packages/`
 *    (commit that directory, or teammates' installs cannot find the tarballs);
 * 3. installs them as devDependencies with npm, with zstd-napi, @cascache/core's optional peer (the
 *    faster zstd; it compiles on install, so it is approved in `allowScripts`);
 * 4. runs `nx g @cascache/nx:init` with the options given (e.g. `--remote s3://bucket/prefix`).
 *
 * npm only: installing tarballs that depend on each other needs overrides under pnpm and yarn. Their
 * workspaces install the published packages with `nx add @cascache/nx` and no approvals (the e2e
 * runs that through a local registry: e2e/test/package-managers.spec.ts); the script refuses them
 * in one line instead of leaving a half-installed workspace.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '..');
const NATIVE_BUILDS = ['zstd-napi'];
const ZSTD_NAPI = JSON.parse(readFileSync(join(REPO, 'packages', 'core', 'package.json'), 'utf8')).peerDependencies['zstd-napi'];

/** @param {string} message */
function fail(message) {
  console.error(`add-to: ${message}`);
  process.exit(1);
}

/** @param {string} cmd @param {string[]} args @param {string} cwd */
function run(cmd, args, cwd) {
  console.log(`add-to: ${relative(process.cwd(), cwd) || '.'}$ ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd, stdio: 'inherit' });
}

const argv = process.argv.slice(2);
// --skip-build: the packages are built already (the e2e, which runs inside this repo's own Nx run).
const skipBuild = argv[0] === '--skip-build';
const [target, ...initArgs] = skipBuild ? argv.slice(1) : argv;
if (!target || target === '--help' || target === '-h') {
  console.log('usage: npm run add-to -- [--skip-build] <nx-workspace-dir> [nx g @cascache/nx:init options, e.g. --remote s3://bucket/prefix]');
  process.exit(target ? 0 : 1);
}
const ws = resolve(target);
if (!existsSync(join(ws, 'package.json'))) fail(`${ws} has no package.json: give the root of an Nx workspace`);
if (!existsSync(join(ws, 'nx.json'))) fail(`${ws} has no nx.json: give the root of an Nx workspace`);
if (!existsSync(join(ws, 'node_modules', 'nx', 'package.json'))) fail(`${ws} has no node_modules/nx: install the workspace first`);
const nxVersion = JSON.parse(readFileSync(join(ws, 'node_modules', 'nx', 'package.json'), 'utf8')).version;
const manager = existsSync(join(ws, 'pnpm-lock.yaml')) ? 'pnpm' : existsSync(join(ws, 'yarn.lock')) ? 'yarn' : 'npm';
if (manager !== 'npm') {
  fail(`${manager} workspaces: this script installs tarballs with npm only; ${manager} installs the published packages with \`nx add @cascache/nx\` (docs/nx.md)`);
}

if (!skipBuild) run('npm', ['run', 'build', '--silent'], REPO);
const dest = join(ws, '.cascache-packages');
rmSync(dest, { recursive: true, force: true });
mkdirSync(dest, { recursive: true });
// The e2e suite's own packing (e2e/src/pack.ts), built with the rest by `npm run build`.
const { packAll, PACKAGES } = (await import('../e2e/dist/pack.js')).default;
console.log(`add-to: npm pack of ${PACKAGES.join(', ')} into ${dest}`);
const tarballs = Object.values(packAll(dest)).map((t) => relative(dest, t)).sort();

// npm 11 runs a dependency's install script only when the project approves it.
const pkgPath = join(ws, 'package.json');
const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
const allow = { ...(pkg.allowScripts ?? {}) };
const approved = NATIVE_BUILDS.filter((n) => allow[n] !== true);
if (approved.length > 0) {
  for (const n of approved) allow[n] = true;
  writeFileSync(pkgPath, `${JSON.stringify({ ...pkg, allowScripts: allow }, null, 2)}\n`);
  console.log(`add-to: package.json: approved the native builds of ${approved.join(', ')} ("allowScripts")`);
}
const started = Date.now();
// zstd-napi is @cascache/core's optional peer: the faster zstd, approved above (without it cascache
// uses the prebuilt @toondepauw/node-zstd; docs/decisions.md has the figures).
run('npm', ['install', '--save-dev', '--no-audit', '--no-fund', ...tarballs.map((t) => `./${relative(ws, join(dest, t))}`), `zstd-napi@${ZSTD_NAPI}`], ws);
console.log(`add-to: installed in ${((Date.now() - started) / 1000).toFixed(1)} s (Nx ${nxVersion})`);
run(join(ws, 'node_modules', '.bin', 'nx'), ['g', '@cascache/nx:init', ...initArgs], ws);
console.log(`add-to: done. Commit ${relative(ws, dest)}/ with package.json and the lockfile so teammates install the same tarballs.`);
