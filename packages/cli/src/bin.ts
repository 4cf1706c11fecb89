#!/usr/bin/env node
/** The `cascache` executable: the only place that reads the real argv and sets the exit code. */
import { run } from './program';

// The AWS SDK warns once per process that it will need Node 22 from 2027; not a user's concern here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`cascache: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
