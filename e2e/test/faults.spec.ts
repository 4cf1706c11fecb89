/**
 * The short version of the fault suite (`npm run test:faults` runs the whole one and prints the
 * table docs/reliability.md shows): hostile requests, kill -9 mid-upload and at named points beside
 * other writers, two serve replicas racing on one hash over a shared S3 tier, the store deleted
 * under a running agent, read-only, or on a disk that fills up, load (wrk GETs, a PUT/GET mix, slow-header
 * connections), and real nx and turbo runs against a remote tier that is down, hangs, answers 503,
 * sits behind a slow link that cuts connections mid-transfer, or holds damaged packs.
 */
import { faultTable, runFaults } from '../src/faults';

describe('fault suite, short version', () => {
  it('stores and serves nothing wrongly, never crashes, and never fails a build', async () => {
    const log: string[] = [];
    const rows = await runFaults({ short: true, log: (l) => log.push(l) });
    const table = faultTable(rows);
    expect(rows.map((r) => r.scenario)).toHaveLength(23);
    for (const r of rows) {
      // Each row on its own, so a failure names the scenario (and the log says what happened).
      expect({ scenario: r.scenario, wrong: r.wrong, crashes: r.crashes, buildsFailed: r.buildsFailed, handled: r.handled, log: r.handled === r.attempts ? '' : log.join('\n') }).toEqual({
        scenario: r.scenario,
        wrong: 0,
        crashes: 0,
        buildsFailed: 0,
        handled: r.attempts,
        log: '',
      });
    }
    process.stdout.write(`${table}\n`);
  });
});
