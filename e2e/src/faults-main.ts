/**
 * `npm run test:faults`: the whole fault suite (faults.ts), its table on stdout, and with
 * `--json <file>` its rows. `--short` runs the version `npm test` runs. Exit 1 when anything was
 * stored or served wrongly, crashed, or failed a build.
 */
import { writeFileSync } from 'node:fs';
import { faultTable, runFaults } from './faults';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const json = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
  const t0 = Date.now();
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1]?.split(',') : undefined;
  const rows = await runFaults({ short: args.includes('--short'), only, log: (l) => process.stderr.write(`faults: ${l}\n`) });
  process.stdout.write(`${faultTable(rows)}\n\n(${((Date.now() - t0) / 1000).toFixed(0)} s, ${new Date().toISOString()}, node ${process.version})\n`);
  if (json) writeFileSync(json, `${JSON.stringify(rows, null, 2)}\n`);
  if (rows.some((r) => r.wrong > 0 || r.crashes > 0 || r.buildsFailed > 0 || r.handled < r.attempts)) process.exitCode = 1;
}

void main();
