/**
 * `nx g @cascache/nx:init` (run by `nx add @cascache/nx`): registers the plugin in nx.json with its
 * options and ignores the local store in git. Idempotent: a second run changes nothing and says so;
 * options a user already set are kept.
 */
import { formatFiles, logger, readNxJson, updateNxJson, type Tree } from '@nx/devkit';
import { parseTierConfigs } from '@cascache/core';
import type { InitGeneratorSchema } from './schema';

const PLUGIN = '@cascache/nx';
const IGNORE_LINE = '.cascache';

type PluginEntry = string | { plugin: string; options?: unknown };

export async function initGenerator(tree: Tree, schema: InitGeneratorSchema): Promise<() => void> {
  if (schema.remote !== undefined) checkRemote(schema.remote);
  const changes: string[] = [];
  const nxJson = readNxJson(tree) ?? {};
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
  if (changes.length > 0) updateNxJson(tree, { ...nxJson, plugins: plugins as never });

  const gitignore = tree.exists('.gitignore') ? tree.read('.gitignore', 'utf-8')! : '';
  const ignored = gitignore.split(/\r?\n/).some((l) => l.trim() === IGNORE_LINE || l.trim() === `/${IGNORE_LINE}` || l.trim() === `${IGNORE_LINE}/`);
  if (!ignored) {
    tree.write('.gitignore', `${gitignore}${gitignore && !gitignore.endsWith('\n') ? '\n' : ''}# cascache local store\n${IGNORE_LINE}\n`);
    changes.push('.gitignore: ignored .cascache');
  }

  if (!schema.skipFormat && changes.length > 0) await formatFiles(tree);
  return () => {
    if (changes.length === 0) {
      logger.info('cascache: already set up; nothing changed.');
      return;
    }
    for (const c of changes) logger.info(`cascache: ${c}`);
    logger.info('cascache: every cacheable task now goes through a local cascache agent. Set CASCACHE_SECRET (32+ bytes) to sign cache entries.');
    if (schema.remote) logger.info('cascache: every machine sharing the remote tier needs the same CASCACHE_SECRET.');
  };
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
