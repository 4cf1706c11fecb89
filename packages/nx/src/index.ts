/**
 * @cascache/nx: the Nx plugin. Add it with `nx add @cascache/nx`; it then starts a local cascache
 * agent for the workspace and points Nx's remote cache at it.
 */
import { startAgentEarly } from './hooks';
import type { CascacheNxOptions } from './options';

export const name = '@cascache/nx';

/**
 * Adds no dependencies. It is here for two reasons. Nx's plugin isolation (the default) shuts down
 * the worker of a plugin with no graph-phase hook right after loading it and starts another for
 * `preTasksExecution`, which cost every run ~250 ms before the first task (Nx 24
 * `project-graph/plugins/isolation/plugin-lifecycle-manager.ts`); with a graph hook, the worker that
 * loaded the plugin stays up through the graph and serves the task hooks. And it starts the agent
 * while Nx computes the graph, so a cold start overlaps it.
 */
export const createDependencies = async (options: CascacheNxOptions | undefined, context: { workspaceRoot: string }): Promise<never[]> => {
  startAgentEarly(options, context.workspaceRoot);
  return [];
};
export { preTasksExecution, postTasksExecution, summaryLine, type RunSummary } from './hooks';
export { uploadLine } from './agent';
export { ensureAgent, probe, type AgentInfo, type EnsureAgentOptions } from './agent';
export { resolveStoreDir, type CascacheNxOptions } from './options';
