/**
 * `cascache turbo -- <command...>`: Turborepo through the store's local agent, as zero-config as the
 * Nx plugin (Turborepo has no plugin hooks, so the wrapper is the hook). It starts or reuses the
 * agent of the store (the same `agent.json` the Nx plugin uses, so both tools share one agent and one
 * dedup pool), runs the command with `TURBO_API`, `TURBO_TOKEN` and `TURBO_TEAM` pointing at it,
 * then prints one summary line, records the run for `cascache stats` and, with remote tiers, shares
 * it for prefetch. Under CI (`CI=true`) it waits for uploads before exiting. The exit code is the
 * command's. A cache that fails never fails the build: without an agent the command runs as is.
 *
 * `cascache env turbo` prints the same variables as `export` lines, for `eval "$(cascache env turbo)"`.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
// Light entries only: this runs before every turbo command (turbo-main.ts).
import { CascacheError, ErrorCodes } from '@cascache/core/errors';
import { formatBytes, NAMESPACE_RE } from '@cascache/core/format';
import { defaultBranch, gitState } from '@cascache/core/git';
import { callAgent, ensureAgent, isCi, setAsideLine, unservableLine, uploadLine, type AgentInfo, type FlushReport } from '@cascache/server/agent-control';
import type { StoreFlags } from '../context';
import type { Io } from '../run-program';

/** The store commands' context (the store, tiers, config files): loaded only when a run needs it. */
const context = () => require('../context') as typeof import('../context');
const usesConfig = (flags: StoreFlags, env: NodeJS.ProcessEnv) => Boolean(flags.config || env.CASCACHE_CONFIG);

/** As every store command resolves it (context.ts), without loading the store when no config file is named. */
function storeDirOf(flags: StoreFlags, env: NodeJS.ProcessEnv, cwd: string): string {
  return usesConfig(flags, env) ? context().resolveCliStoreDir(flags, env, cwd) : resolve(cwd, flags.storeDir ?? env.CASCACHE_DIR ?? '.cascache');
}

/** The configured remote tiers as JSON for the agent, or undefined for none. */
function tiersOf(flags: StoreFlags, env: NodeJS.ProcessEnv): string | undefined {
  if (!flags.remote && !env.CASCACHE_REMOTE && !env.CASCACHE_TIERS && !usesConfig(flags, env)) return undefined;
  const tiers = context().resolveTiers(flags, env);
  return tiers.length > 0 ? JSON.stringify(tiers) : undefined;
}

interface TurboFlags extends StoreFlags {
  team: string;
  readOnly?: boolean;
  uploadWait: number;
}

/** One team's activity as the agent's report route returns it (`prefix` mode). */
interface TurboReport {
  hits: number;
  misses: number;
  stored: number;
  localHits: number;
  bytesReceived: number;
  bytesStored: number;
  bytesSent: number;
  pending: number;
  /** Entries found but not served, by `AcMissReason`. */
  unservable?: Record<string, number>;
  /** Uploads set aside after permanent errors, all tiers. */
  setAside?: number;
  tasks: Array<{ id: string; hits: number; misses: number; stored: number; localHits: number; conflicts: number }>;
}


function withAgentFlags(cmd: Command): Command {
  return cmd
    .option('--store-dir <path>', 'local store (env CASCACHE_DIR; default ./.cascache)')
    .option('--config <file>', 'cascache config file: storeDir and tiers are used (env CASCACHE_CONFIG)')
    .option('--remote <url>', 'a remote tier behind the agent (env CASCACHE_REMOTE or CASCACHE_TIERS)')
    .option('--team <name>', 'Turborepo team: the namespace of its entries (env TURBO_TEAM)', process.env.TURBO_TEAM ?? 'cascache')
    .option('--read-only', 'hand turbo the read-only token: hits, never uploads');
}

/** Starts or finds the agent for these flags. @throws CascacheError `E_CONFIG` for a bad team or tiers. */
async function agentFor(flags: TurboFlags, io: Io): Promise<{ info: AgentInfo; storeDir: string; tiers: boolean }> {
  // The team is the namespace of turbo's entries.
  if (!NAMESPACE_RE.test(flags.team)) throw new CascacheError(ErrorCodes.CONFIG, `--team must be 1-64 characters of A-Z a-z 0-9 . _ -, got ${JSON.stringify(flags.team)}`);
  const storeDir = storeDirOf(flags, process.env, process.cwd());
  mkdirSync(storeDir, { recursive: true });
  const env = process.env;
  const secret = env.CASCACHE_SECRET || undefined;
  // Keys and namespaces as the Nx plugin passes them, so both start the same agent.
  const trustedKeys = env.CASCACHE_TRUSTED_KEYS || undefined;
  let tiers = tiersOf(flags, env);
  if (tiers && !secret && !trustedKeys) {
    io.stderr.write('cascache: remote tiers need $CASCACHE_SECRET (32+ bytes, the same on every machine) or trusted keys (CASCACHE_TRUSTED_KEYS); this run uses the local store only\n');
    tiers = undefined;
  }
  const info = await ensureAgent({
    storeDir,
    secret,
    signingKey: env.CASCACHE_SIGNING_KEY || undefined,
    trustedKeys,
    namespace: env.CASCACHE_NAMESPACE || undefined,
    readNamespaces: env.CASCACHE_READ_NAMESPACES || undefined,
    tiers,
    maxSize: env.CASCACHE_MAX_SIZE || undefined,
  });
  return { info, storeDir, tiers: tiers !== undefined };
}

/** The variables that point turbo at the agent. */
function turboEnv(info: AgentInfo, flags: TurboFlags): Record<string, string> {
  return { TURBO_API: `http://127.0.0.1:${info.port}`, TURBO_TOKEN: flags.readOnly ? info.readOnlyToken : info.token, TURBO_TEAM: flags.team };
}

/**
 * What turbo got for one task, as far as the agent saw: served and used (`hit`), served but then
 * uploaded again, so turbo did not use it (`rejected`: its signature did not verify), turbo's own
 * cache (`local-cache`), or ran (`miss`).
 */
export function turboTaskStatus(t: TurboReport['tasks'][number]): 'hit' | 'rejected' | 'local-cache' | 'miss' {
  if (t.hits > 0) return t.conflicts > 0 || t.stored > 0 ? 'rejected' : 'hit';
  return t.localHits > 0 ? 'local-cache' : 'miss';
}

/** `cascache: 9 tasks, 7 from cascache, 1 from turbo's own cache, 1 run; received 3.1 MB of outputs, stored 41 kB new`. */
export function turboSummaryLine(r: TurboReport): string {
  const count = (s: ReturnType<typeof turboTaskStatus>) => r.tasks.filter((t) => turboTaskStatus(t) === s).length;
  const rejected = count('rejected');
  const parts = [`${r.tasks.length} task${r.tasks.length === 1 ? '' : 's'}`, `${count('hit')} from cascache`];
  if (count('local-cache')) parts.push(`${count('local-cache')} from turbo's own cache`);
  parts.push(`${count('miss') + rejected} run`);
  let line = `cascache: ${parts.join(', ')}; received ${formatBytes(r.bytesReceived)} of outputs, stored ${formatBytes(r.bytesStored)} new`;
  if (r.pending > 0) line += `; ${r.pending} more being stored`;
  if (rejected > 0) line += `\ncascache: turbo did not use ${rejected} artifact(s) it was served: stored without a signature, or signed with another key (keys are write-once; give signed runs their own --team, see docs/turbo.md)`;
  return line;
}

/** Runs `argv` with `env`, inheriting stdio; resolves its exit code (signals as 128 + n). */
function run(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env, shell: process.platform === 'win32' });
    child.once('error', (err) => reject(new CascacheError(ErrorCodes.CONFIG, `could not run ${argv[0]}: ${err.message}`, { cause: err })));
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0)));
  });
}

export function registerTurbo(program: Command, io: Io, setExitCode: (code: number) => void): void {
  withAgentFlags(
    program
      .command('turbo')
      .description('Run a command (turbo run ...) with Turborepo\'s remote cache pointed at the store\'s local agent')
      .argument('<command...>', 'the command, after --: e.g. cascache turbo -- npx turbo run build')
      .option('--upload-wait <ms>', 'under CI, wait this long for uploads before exiting', (v) => Number(v), 120_000)
      .passThroughOptions(),
  ).action(async (argv: string[], flags: TurboFlags) => {
    if (process.env.TURBO_API && !process.env.CASCACHE_TURBO_API) {
      io.stderr.write(`cascache: TURBO_API is already set (${process.env.TURBO_API}); running the command against it, not cascache\n`);
      setExitCode(await run(argv, process.env));
      return;
    }
    const startTime = Date.now();
    let agent: Awaited<ReturnType<typeof agentFor>> | null = null;
    try {
      agent = await agentFor(flags, io);
    } catch (err) {
      if (err instanceof CascacheError && err.code === ErrorCodes.CONFIG) throw err;
      io.stderr.write(`cascache: the local agent could not start (${(err as Error).message}); running the command without a remote cache\n`);
    }
    if (!agent) {
      setExitCode(await run(argv, process.env));
      return;
    }
    const { info, storeDir } = agent;
    const git = gitState(process.cwd(), process.env);
    if (agent.tiers) {
      // Fetch what the last run of this branch produced while turbo starts and hashes its tasks.
      await callAgent(info, '/_cascache/prefetch', { tool: 'turbo', branches: [...new Set([git.branch, defaultBranch(undefined, process.cwd())])], ...(git.commit ? { commit: git.commit } : {}) }, 1000);
    }
    const env = { ...process.env, ...turboEnv(info, flags), CASCACHE_TURBO_API: `http://127.0.0.1:${info.port}` };
    const code = await run(argv, env);
    setExitCode(code);

    const ci = isCi(process.env);
    const waitMs = ci ? flags.uploadWait : 250;
    const report = await callAgent<TurboReport>(info, '/_cascache/report', { prefix: `turbo:${flags.team}:`, since: startTime, waitMs }, waitMs + 2000);
    if (!report) {
      io.stderr.write(`cascache: could not ask the agent what this run did (see ${join(storeDir, 'agent.log')})\n`);
      return;
    }
    io.stderr.write(`${turboSummaryLine(report)}\n`);
    const unservable = unservableLine(report.unservable);
    if (unservable) io.stderr.write(`${unservable}\n`);
    const aside = !isCi(process.env) && setAsideLine(report.setAside);
    if (aside) io.stderr.write(`${aside}\n`);
    const hashOf = (id: string) => id.slice(`turbo:${flags.team}:`.length);
    if (agent.tiers && !flags.readOnly) {
      const produced = report.tasks.filter((t) => turboTaskStatus(t) === 'hit' || t.stored > 0).map((t) => hashOf(t.id));
      const targets = targetsOf(argv);
      await callAgent(info, '/_cascache/run', { tool: 'turbo', namespace: flags.team, branch: git.branch, commit: git.commit, targets, startTime, hashes: produced }, 5000);
      if (ci) {
        const flushed = await callAgent<FlushReport>(info, '/_cascache/flush', { timeoutMs: flags.uploadWait, since: startTime }, flags.uploadWait + 5000);
        io.stderr.write(`${flushed ? uploadLine(flushed) : 'cascache: could not ask the agent about pending uploads; they stay journaled'}\n`);
      }
    }
    try {
      // For `cascache stats`: what each task of this run got.
      const dir = join(storeDir, 'v1', 'runs');
      mkdirSync(dir, { recursive: true });
      const tasks = report.tasks.map((t) => {
        const status = turboTaskStatus(t);
        return { id: hashOf(t.id), hash: hashOf(t.id), status: status === 'rejected' ? 'miss' : status };
      });
      const name = `${startTime}-${process.pid}.json`;
      writeFileSync(join(dir, `.${name}.tmp`), `${JSON.stringify({ tool: 'turbo', startTime, endTime: Date.now(), tasks })}\n`);
      renameSync(join(dir, `.${name}.tmp`), join(dir, name));
    } catch {
      // Stats are best-effort: never fail a build over them.
    }
  });

  const envCmd = program.command('env').description('Print shell variables that point a tool at the store\'s local agent');
  withAgentFlags(envCmd.command('turbo').description('TURBO_API, TURBO_TOKEN and TURBO_TEAM for the local agent: eval "$(cascache env turbo)"')).action(async (flags: TurboFlags) => {
    const { info } = await agentFor(flags, io);
    for (const [k, v] of Object.entries(turboEnv(info, flags))) io.stdout.write(`export ${k}=${shellQuote(v)}\n`);
  });
}

/** The tasks a `turbo run a b --flag` names, for the run record (best effort). */
function targetsOf(argv: string[]): string[] {
  const i = argv.findIndex((a) => a === 'run');
  if (i < 0) return [];
  const out: string[] = [];
  for (const a of argv.slice(i + 1)) {
    if (a.startsWith('-')) break;
    if (/^[A-Za-z0-9:._#-]{1,200}$/.test(a)) out.push(a);
  }
  return out;
}

function shellQuote(v: string): string {
  return `'${v.replace(/'/g, `'\\''`)}'`;
}
