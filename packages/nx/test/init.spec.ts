import { createTreeWithEmptyWorkspace } from 'nx/src/devkit-testing-exports';
import { initGenerator, type Tree } from '../src/generators/init/generator';

/** nx.json as the generator left it (the real Nx Tree; no devkit helper, as the generator has none). */
function readNxJson(tree: Tree): { plugins?: Array<string | { plugin: string; options?: unknown }> } & Record<string, unknown> {
  return JSON.parse(tree.read('nx.json', 'utf-8')!);
}

describe('init generator', () => {
  let tree: Tree;
  beforeEach(() => {
    tree = createTreeWithEmptyWorkspace();
  });

  it('registers the plugin with its options and ignores the store', async () => {
    await initGenerator(tree, { skipFormat: true });
    expect(readNxJson(tree)?.plugins).toContainEqual({ plugin: '@cascache/nx', options: { signingSecretEnv: 'CASCACHE_SECRET', readOnly: false, tiers: [] } });
    expect(tree.read('.gitignore', 'utf-8')).toContain('\n.cascache\n');
  });

  it('passes storeDir, secret variable and read-only through', async () => {
    await initGenerator(tree, { storeDir: '/shared/cascache', signingSecretEnv: 'MY_SECRET', readOnly: true, skipFormat: true });
    expect(readNxJson(tree)?.plugins).toContainEqual({ plugin: '@cascache/nx', options: { storeDir: '/shared/cascache', signingSecretEnv: 'MY_SECRET', readOnly: true, tiers: [] } });
  });

  it('adds a remote tier with --remote, once, also to an existing setup; refuses credentials in it', async () => {
    await initGenerator(tree, { skipFormat: true });
    await initGenerator(tree, { remote: 's3://acme-cache/nx?region=eu-west-1', skipFormat: true });
    await initGenerator(tree, { remote: 's3://acme-cache/nx?region=eu-west-1', skipFormat: true });
    const entry = readNxJson(tree)?.plugins?.find((p) => typeof p !== 'string' && p.plugin === '@cascache/nx') as { options: { tiers: string[] } };
    expect(entry.options.tiers).toEqual(['s3://acme-cache/nx?region=eu-west-1']);
    await expect(initGenerator(tree, { remote: 's3://KEY:secret@acme-cache/nx', skipFormat: true })).rejects.toThrow('must not carry credentials');
    await expect(initGenerator(tree, { remote: 'ftp://x/y', skipFormat: true })).rejects.toThrow('s3://, gs:// or https://');
    // As the agent checks them: bucket names S3 refuses, unknown parameters, plain http beyond loopback.
    await expect(initGenerator(tree, { remote: 's3://c/nx', skipFormat: true })).rejects.toThrow('"c" is not a valid bucket name');
    await expect(initGenerator(tree, { remote: 's3://acme-cache/nx?regoin=eu-west-1', skipFormat: true })).rejects.toThrow('does not take the parameter "regoin"');
    await expect(initGenerator(tree, { remote: 'http://cache.example.com/', skipFormat: true })).rejects.toThrow('loopback only');
  });

  it('is idempotent: a second run changes no file and says so', async () => {
    await initGenerator(tree, { skipFormat: true });
    const nxJson = tree.read('nx.json', 'utf-8');
    const gitignore = tree.read('.gitignore', 'utf-8');
    const said = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const callback = await initGenerator(tree, { skipFormat: true });
    callback();
    expect(tree.read('nx.json', 'utf-8')).toBe(nxJson);
    expect(tree.read('.gitignore', 'utf-8')).toBe(gitignore);
    expect(said.mock.calls.map((c) => c[0])).toEqual(['cascache: already set up; nothing changed.']);
    said.mockRestore();
    expect(readNxJson(tree)?.plugins?.filter((p) => (typeof p === 'string' ? p : p.plugin) === '@cascache/nx')).toHaveLength(1);
  });

  it('keeps options the user already set, and other plugins', async () => {
    const nxJson = readNxJson(tree)!;
    nxJson.plugins = ['@nx/js', { plugin: '@cascache/nx', options: { storeDir: 'custom' } }];
    tree.write('nx.json', JSON.stringify(nxJson));
    tree.write('.gitignore', 'node_modules\n/.cascache\n');
    await initGenerator(tree, { skipFormat: true });
    expect(readNxJson(tree)?.plugins).toEqual(['@nx/js', { plugin: '@cascache/nx', options: { storeDir: 'custom' } }]);
    expect(tree.read('.gitignore', 'utf-8')).toBe('node_modules\n/.cascache\n');
  });

  it('upgrades a bare string entry to one with options', async () => {
    const nxJson = readNxJson(tree)!;
    nxJson.plugins = ['@cascache/nx'];
    tree.write('nx.json', JSON.stringify(nxJson));
    await initGenerator(tree, { skipFormat: true });
    expect(readNxJson(tree)?.plugins).toEqual([{ plugin: '@cascache/nx', options: { signingSecretEnv: 'CASCACHE_SECRET', readOnly: false, tiers: [] } }]);
  });

  it('refuses an nx.json it cannot edit safely, and changes nothing', async () => {
    for (const text of ['{ // comment\n "plugins": [] }', '[]', '{ "plugins": "@cascache/nx" }']) {
      tree.write('nx.json', text);
      await expect(initGenerator(tree, { skipFormat: true })).rejects.toMatchObject({ code: 'E_CONFIG' });
      expect(tree.read('nx.json', 'utf-8')).toBe(text);
    }
  });

  it('writes nx.json when the workspace has none, and leaves it alone when only .gitignore changes', async () => {
    tree.delete('nx.json');
    await initGenerator(tree, { skipFormat: true });
    expect(readNxJson(tree)).toEqual({ plugins: [{ plugin: '@cascache/nx', options: { signingSecretEnv: 'CASCACHE_SECRET', readOnly: false, tiers: [] } }] });
    const written = tree.read('nx.json', 'utf-8');
    tree.write('.gitignore', 'node_modules\n');
    await initGenerator(tree, { skipFormat: false });
    expect(tree.read('nx.json', 'utf-8')).toBe(written);
    expect(tree.read('.gitignore', 'utf-8')).toBe('node_modules\n# cascache local store\n.cascache\n');
  });
});
