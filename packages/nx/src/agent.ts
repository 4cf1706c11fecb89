/** The agent's lifecycle lives in `@cascache/server/agent-control` (shared with `cascache turbo`). */
export * from '@cascache/server/agent-control';
