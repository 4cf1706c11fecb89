#!/usr/bin/env node
// Part of `npm run setup`: the dashboard test drives a real headless Chromium (Debian's `chromium`
// package, with playwright-core, which downloads no browser). Installs it with apt-get when it is
// missing and this is root on a Debian-like machine; otherwise says how, and the test says so too.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const found = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p));
if (found) process.exit(0);
const hasApt = spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasApt || process.getuid?.() !== 0) {
  console.warn('setup: no Chromium found; the dashboard test needs one: `apt-get install chromium` (Debian), or set CHROMIUM_PATH');
  process.exit(0);
}
console.log('setup: installing Chromium (apt-get install chromium) for the dashboard test');
const install = () => spawnSync('apt-get', ['install', '-y', 'chromium'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
if (!install()) {
  execFileSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (!install()) {
    console.error('setup: apt-get could not install chromium');
    process.exit(1);
  }
}
