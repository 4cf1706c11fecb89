/**
 * A local npm registry (Verdaccio, as Nx's own e2e uses) that serves this repo's packages, published
 * from npm pack tarballs, and proxies everything else to the public registry. Lets `nx add` run for
 * real: Nx installs @cascache/nx by name and runs its init generator.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { cleanEnv, tempWorkspaceDir } from './nx-workspace';
import { packAll } from './pack';

export interface Registry {
  url: string;
  /** Points a project at this registry: writes its project-level .npmrc (user config stays in force). */
  use(projectDir: string): void;
  publish(tarball: string): void;
  stop(): void;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitUntilUp(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | null = null;
  child.once('exit', (code) => (exited = code ?? -1));
  for (;;) {
    if (exited !== null) throw new Error(`verdaccio exited with ${exited}`);
    try {
      if ((await fetch(`${url}/-/ping`)).ok) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error('verdaccio did not start in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startRegistry(dir: string, upstream = 'https://registry.npmjs.org/'): Promise<Registry> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = join(dir, 'config.yaml');
  writeFileSync(
    config,
    [
      `storage: ${join(dir, 'storage')}`,
      'auth:',
      '  htpasswd:',
      `    file: ${join(dir, 'htpasswd')}`,
      '    max_users: 10',
      'uplinks:',
      '  npmjs:',
      `    url: ${upstream}`,
      '    timeout: 120s',
      'packages:',
      "  '@cascache/*':",
      '    access: $all',
      '    publish: $authenticated',
      "  'cascache':",
      '    access: $all',
      '    publish: $authenticated',
      "  '**':",
      '    access: $all',
      '    proxy: npmjs',
      'logs: { type: file, path: ' + join(dir, 'verdaccio.log') + ', level: warn }',
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, [require.resolve('verdaccio/bin/verdaccio'), '--config', config, '--listen', `127.0.0.1:${port}`], {
    stdio: 'ignore',
    env: cleanEnv(),
  });
  await waitUntilUp(url, child, 60_000);
  const res = await fetch(`${url}/-/user/org.couchdb.user:e2e`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'e2e', password: 'e2e-password-123', email: 'e2e@example.invalid' }),
  });
  const { token } = (await res.json()) as { token?: string };
  if (!token) throw new Error(`could not create a registry user (${res.status})`);
  // Project-level npmrc files, so the machine's own user config (node-gyp's nodedir, proxies) still applies.
  const publishDir = join(dir, 'publish');
  mkdirSync(publishDir, { recursive: true });
  writeFileSync(join(publishDir, '.npmrc'), `registry=${url}/\n//127.0.0.1:${port}/:_authToken=${token}\n`);
  return {
    url,
    use(projectDir) {
      writeFileSync(join(projectDir, '.npmrc'), `registry=${url}/\n`);
    },
    publish(tarball) {
      execFileSync('npm', ['publish', tarball, '--loglevel=error', '--provenance=false'], {
        cwd: publishDir,
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'inherit'],
      });
    },
    stop() {
      child.kill();
    },
  };
}

/**
 * A registry in a new temp directory (pushed onto `dirs`, for the caller to remove) with this
 * repo's four packages published from fresh npm pack tarballs: what `nx add @cascache/nx` will see
 * once they are on the npm registry.
 */
export async function registryWithOurPackages(dirs: string[]): Promise<Registry> {
  const t = packAll();
  const dir = tempWorkspaceDir('cascache-registry-');
  dirs.push(dir);
  const registry = await startRegistry(dir);
  for (const tgz of [t.core, t.server, t.nx, t.cli]) registry.publish(tgz);
  return registry;
}
