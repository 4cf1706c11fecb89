/**
 * @cascache/nx: the Nx plugin. Add it with `nx add @cascache/nx`; it then starts a local cascache
 * agent for the workspace and points Nx's remote cache at it.
 */
export const name = '@cascache/nx';

/**
 * Adds no dependencies. It is here for Nx's plugin isolation (the default): a plugin with no
 * graph-phase hook gets its worker process shut down right after loading and started again for
 * `preTasksExecution`, which cost every run ~250 ms before the first task (Nx 24
 * `project-graph/plugins/isolation/plugin-lifecycle-manager.ts`). With a graph hook, the worker
 * that loaded the plugin stays up through the graph and serves the task hooks.
 */
export const createDependencies = async (): Promise<never[]> => [];
export { preTasksExecution, postTasksExecution, summaryLine, uploadLine, type RunSummary } from './hooks';
export { ensureAgent, probe, type AgentInfo, type EnsureAgentOptions } from './agent';
export { resolveStoreDir, type CascacheNxOptions } from './options';
