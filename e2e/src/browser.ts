/**
 * Headless Chromium for page tests: Debian's `chromium` (installed by `npm run setup`), driven by
 * playwright-core, which downloads no browser of its own.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** Where test artifacts (screenshots) are kept: `e2e/artifacts/`, not committed. */
export const ARTIFACTS = join(__dirname, '..', 'artifacts');

/** The Chromium executable: `CHROMIUM_PATH`, else Debian's. @throws Error naming how to install it. */
export function chromiumPath(): string {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter((p): p is string => Boolean(p));
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`no Chromium found (looked at ${candidates.join(', ')}): \`npm run setup\` installs Debian's chromium, or set CHROMIUM_PATH`);
  return found;
}
