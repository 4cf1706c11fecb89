#!/usr/bin/env node
// Part of `npm run setup`: Debian packages the tests run, installed with apt-get when missing and
// this is root on a Debian-like machine (otherwise it says how, and the tests say so too):
// - chromium: the dashboard test drives a real headless Chromium through playwright-core, which
//   downloads no browser;
// - wrk: the fault suite's load rows (and `npm run bench`'s GET tables).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const PACKAGES = [
  { name: 'chromium', found: () => [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].some((p) => p && existsSync(p)), why: 'the dashboard test (or set CHROMIUM_PATH)' },
  { name: 'wrk', found: () => spawnSync('wrk', ['--version'], { stdio: 'ignore' }).error === undefined, why: 'the fault suite and the benchmarks' },
];

const missing = PACKAGES.filter((p) => !p.found());
if (missing.length === 0) process.exit(0);
const hasApt = spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasApt || process.getuid?.() !== 0) {
  for (const p of missing) console.warn(`setup: ${p.name} is missing; ${p.why} needs it: \`apt-get install ${p.name}\` (Debian)`);
  process.exit(0);
}
const names = missing.map((p) => p.name);
console.log(`setup: installing ${names.join(' and ')} (apt-get) for ${missing.map((p) => p.why).join('; ')}`);
const install = () => spawnSync('apt-get', ['install', '-y', ...names], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
if (!install()) {
  execFileSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (!install()) {
    console.error(`setup: apt-get could not install ${names.join(' ')}`);
    process.exit(1);
  }
}
