/**
 * Writes a small file so readers see the old content or the new, never a mix: write a uniquely
 * named temp file beside it, rename it into place, remove the temp file on failure (cacache's
 * write.js pattern). For records (roots, CLI cache records), not for blobs, which hash while writing.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { toIoError } from './errors';

/** @throws CascacheError `E_IO` when the directory cannot be made or the file written. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}`);
  try {
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(tmp, data, { flag: 'wx' });
    await fsp.rename(tmp, path);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw toIoError(err, `writing ${path}`);
  }
}
