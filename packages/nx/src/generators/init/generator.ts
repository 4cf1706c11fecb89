/**
 * `nx g @cascache/nx:init` (run by `nx add @cascache/nx`): registers the plugin in nx.json with its
 * options and ignores the local store in git. Idempotent: a second run changes nothing and says so;
 * options a user already set are kept.
 *
 * It uses only the `Tree` that Nx hands every generator, not `@nx/devkit`: each devkit major accepts
 * only three Nx majors as its peer, so depending on one would install a devkit that does not match
 * the workspace's Nx on every other major (issue 14). nx.json is formatted with the workspace's own
 * prettier when it has one, as devkit's `formatFiles` does.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { CascacheError, ErrorCodes, parseTierConfigs } from '@cascache/core';
import type { InitGeneratorSchema } from './schema';

/** The part of Nx's generator `Tree` (nx/src/generators/tree.ts, stable since Nx 13) this generator uses. */
export interface Tree {
  root: string;
  read(filePath: string, encoding: 'utf-8'): string | null;
  write(filePath: string, content: string): void;
  exists(filePath: string): boolean;
}

const NX_JSON = 'nx.json';

const PLUGIN = '@cascache/nx';
const IGNORE_LINE = '.cascache';

type PluginEntry = string | { plugin: string; options?: unknown };

export async function initGenerator(tree: Tree, schema: InitGeneratorSchema): Promise<() => void> {
  if (schema.remote !== undefined) checkRemote(schema.remote);
  const changes: string[] = [];
  const nxJson = readNxJson(tree);
  if (nxJson.plugins !== undefined && !Array.isArray(nxJson.plugins)) throw new CascacheError(ErrorCodes.CONFIG, 'nx.json: "plugins" is not an array');
  const plugins: PluginEntry[] = [...((nxJson.plugins as PluginEntry[] | undefined) ?? [])];
  const options = {
    ...(schema.storeDir ? { storeDir: schema.storeDir } : {}),
    signingSecretEnv: schema.signingSecretEnv ?? 'CASCACHE_SECRET',
    readOnly: schema.readOnly ?? false,
    tiers: schema.remote ? [schema.remote] : [],
  };
  const index = plugins.findIndex((p) => (typeof p === 'string' ? p : p.plugin) === PLUGIN);
  if (index === -1) {
    plugins.push({ plugin: PLUGIN, options });
    changes.push(`nx.json: added ${PLUGIN} to "plugins" (store: ${schema.storeDir ?? 'CASCACHE_DIR or .cascache'}, secret from $${options.signingSecretEnv})`);
  } else if (typeof plugins[index] === 'string') {
    plugins[index] = { plugin: PLUGIN, options };
    changes.push(`nx.json: gave ${PLUGIN} its options`);
  } else if (schema.remote) {
    const entry = plugins[index] as { plugin: string; options?: { tiers?: unknown[] } };
    const tiers = Array.isArray(entry.options?.tiers) ? entry.options!.tiers : [];
    if (!tiers.some((t) => (typeof t === 'string' ? t : (t as { url?: string })?.url) === schema.remote)) {
      plugins[index] = { ...entry, options: { ...entry.options, tiers: [...tiers, schema.remote] } };
      changes.push(`nx.json: added the remote tier ${schema.remote}`);
    }
  }
  const nxJsonChanged = changes.length > 0;
  if (nxJsonChanged) tree.write(NX_JSON, `${JSON.stringify({ ...nxJson, plugins }, null, 2)}\n`);

  const gitignore = tree.exists('.gitignore') ? tree.read('.gitignore', 'utf-8')! : '';
  const ignored = gitignore.split(/\r?\n/).some((l) => l.trim() === IGNORE_LINE || l.trim() === `/${IGNORE_LINE}` || l.trim() === `${IGNORE_LINE}/`);
  if (!ignored) {
    tree.write('.gitignore', `${gitignore}${gitignore && !gitignore.endsWith('\n') ? '\n' : ''}# cascache local store\n${IGNORE_LINE}\n`);
    changes.push('.gitignore: ignored .cascache');
  }

  if (!schema.skipFormat && nxJsonChanged) await formatNxJson(tree);
  return () => {
    if (changes.length === 0) {
      console.log('cascache: already set up; nothing changed.');
      return;
    }
    for (const c of changes) console.log(`cascache: ${c}`);
    console.log('cascache: every cacheable task now goes through a local cascache agent. Set CASCACHE_SECRET (32+ bytes) to sign cache entries.');
    if (schema.remote) console.log('cascache: every machine sharing the remote tier needs the same CASCACHE_SECRET.');
  };
}

/**
 * nx.json as an object; `{}` when there is none (the generator then writes one).
 * @throws CascacheError `E_CONFIG` when nx.json is not plain JSON (comments, trailing commas) or not an object.
 */
function readNxJson(tree: Tree): Record<string, unknown> & { plugins?: unknown } {
  const text = tree.read(NX_JSON, 'utf-8');
  if (text === null) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new CascacheError(ErrorCodes.CONFIG, `nx.json is not plain JSON (${(err as Error).message}); add { "plugin": "@cascache/nx" } to its "plugins" by hand`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new CascacheError(ErrorCodes.CONFIG, 'nx.json is not a JSON object');
  return parsed as Record<string, unknown>;
}

/** Formats nx.json with the workspace's prettier and its config, if the workspace has prettier; else leaves it. */
async function formatNxJson(tree: Tree): Promise<void> {
  let prettier: { format(text: string, options: object): string | Promise<string>; resolveConfig?(file: string): Promise<object | null> };
  try {
    prettier = createRequire(join(tree.root, 'package.json'))('prettier');
  } catch {
    return; // no prettier in the workspace: JSON.stringify's two-space layout stays
  }
  try {
    const file = join(tree.root, NX_JSON);
    const config = (await prettier.resolveConfig?.(file)) ?? {};
    tree.write(NX_JSON, await prettier.format(tree.read(NX_JSON, 'utf-8')!, { ...config, filepath: file }));
  } catch {
    // A prettier that fails on our file changes nothing that matters: the JSON is already valid.
  }
}

/**
 * The agent's own check of a tier URL (scheme, bucket name rules, parameters, no credentials, https
 * beyond loopback), so a URL the agent would refuse never reaches nx.json.
 * @throws CascacheError `E_CONFIG` with the reason.
 */
function checkRemote(url: string): void {
  parseTierConfigs([url], '--remote');
}

export default initGenerator;
