#!/usr/bin/env node
/** The `cascache` executable: the only place that reads the real argv and sets the exit code. */
import type { Io } from './run-program';
import { isTurboCommand } from './turbo-main';

// The AWS SDK warns once per process that it will need Node 22 from 2027; not a user's concern here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const argv = process.argv.slice(2);
// `cascache turbo` runs before every turbo command: its entry loads only what it needs.
const run = (isTurboCommand(argv) ? require('./turbo-main').runTurbo : require('./program').run) as (argv: string[], io: Io) => Promise<number>;
run(argv, { stdout: process.stdout, stderr: process.stderr }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`cascache: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
