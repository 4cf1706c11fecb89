// Branch and commit of a run (git.ts), from a real git repository.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultBranch, gitState } from '../src';
import { tempDir } from './support/tmp';

describe('gitState', () => {
  let dir: string;
  let remove: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, remove } = await tempDir());
  });
  afterEach(() => remove());
  const git = (...args: string[]) => execFileSync('git', ['-c', 'user.email=t@cascache.invalid', '-c', 'user.name=t', ...args], { cwd: dir, encoding: 'utf8' }).trim();

  it('reads the branch and the full commit; on a detached HEAD, the branch CI names', () => {
    git('init', '-q', '-b', 'feature/ünï');
    writeFileSync(join(dir, 'a.txt'), 'a');
    git('add', '-A');
    git('commit', '-qm', 'one');
    const sha = git('rev-parse', 'HEAD');
    expect(gitState(dir, {})).toEqual({ branch: 'feature/ünï', commit: sha });
    git('checkout', '-q', '--detach');
    expect(gitState(dir, {})).toEqual({ branch: null, commit: sha });
    expect(gitState(dir, { GITHUB_REF_NAME: 'main', GITHUB_HEAD_REF: 'pr-branch' })).toEqual({ branch: 'pr-branch', commit: sha });
    expect(gitState(dir, { CI_COMMIT_REF_NAME: 'release' })).toEqual({ branch: 'release', commit: sha });
  });

  it('is empty outside a repository, and the default branch comes from nx.json', () => {
    expect(gitState(dir, {})).toEqual({ branch: null, commit: null });
    expect(defaultBranch(undefined, dir)).toBe('main');
    writeFileSync(join(dir, 'nx.json'), JSON.stringify({ defaultBase: 'develop' }));
    expect(defaultBranch(undefined, dir)).toBe('develop');
    expect(defaultBranch('trunk', dir)).toBe('trunk');
  });
});
