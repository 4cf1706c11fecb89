/**
 * @cascache/nx: the Nx plugin. Add it with `nx add @cascache/nx`; it then starts a local cascache
 * agent for the workspace and points Nx's remote cache at it.
 */
export const name = '@cascache/nx';
export { preTasksExecution, postTasksExecution, summaryLine, uploadLine, type RunSummary } from './hooks';
export { ensureAgent, probe, type AgentInfo, type EnsureAgentOptions } from './agent';
export { resolveStoreDir, type CascacheNxOptions } from './options';
