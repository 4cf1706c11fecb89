/**
 * `cascache keygen --out <file>`: a new Ed25519 signing key for a trusted writer (main-branch CI).
 * The private key goes to `<file>` only (created, mode 0600, never overwritten); the public key and
 * its id go to stdout, for CASCACHE_TRUSTED_KEYS on every reader. `--public <file>` prints the public
 * key of an existing private key. See docs/security.md.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CascacheError, ErrorCodes, generateSigningKey, publicKeyOf } from '@cascache/core';
import type { Io } from '../program';

interface KeygenFlags {
  out?: string;
  public?: string;
  namespace: string;
  json?: boolean;
}

export function registerKeygen(program: Command, io: Io): void {
  program
    .command('keygen')
    .description('Create an Ed25519 signing key for a trusted writer; print its public key for readers')
    .option('--out <file>', 'write the new private key here (created with mode 0600; never overwritten)')
    .option('--public <file>', 'print the public key of an existing private key file instead')
    .option('--namespace <name>', 'the namespace the printed CASCACHE_TRUSTED_KEYS example names', 'main')
    .option('--json', 'print {"publicKey", "keyId", "file"} as JSON')
    .action((flags: KeygenFlags) => {
      if (!flags.out === !flags.public) throw new CascacheError(ErrorCodes.CONFIG, 'give --out <file> for a new key, or --public <file> for the public key of an existing one');
      let file: string;
      let pub: { publicKey: string; keyId: string };
      if (flags.public) {
        file = resolve(flags.public);
        pub = publicKeyOf(readFileSync(file, 'utf8'));
      } else {
        file = resolve(flags.out!);
        const k = generateSigningKey();
        try {
          writeFileSync(file, `${k.privateKey}\n`, { mode: 0o600, flag: 'wx' });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CascacheError(ErrorCodes.EXISTS, `${file} already exists; a signing key is never overwritten`);
          throw err;
        }
        pub = { publicKey: k.publicKey, keyId: k.keyId };
      }
      if (flags.json) {
        io.stdout.write(`${JSON.stringify({ ...pub, file })}\n`);
        return;
      }
      io.stdout.write(`${pub.publicKey}\n`);
      io.stderr.write(
        `cascache: key ${pub.keyId}${flags.out ? `, private key written to ${file}` : ''}\n` +
          `  the trusted writer (e.g. main-branch CI) signs with it: CASCACHE_SIGNING_KEY="$(cat ${flags.out ?? flags.public})", kept secret\n` +
          `  every reader trusts it: CASCACHE_TRUSTED_KEYS='${JSON.stringify({ [flags.namespace]: [pub.publicKey] })}'\n`,
      );
    });
}
