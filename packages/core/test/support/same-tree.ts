import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Asserts that two flat directories hold the same file names with byte-identical content. */
export async function expectSameFlatTree(a: string, b: string): Promise<void> {
  const names = (await readdir(a)).sort();
  expect((await readdir(b)).sort()).toEqual(names);
  for (const n of names) expect((await readFile(join(b, n))).equals(await readFile(join(a, n)))).toBe(true);
}
