/**
 * @cascache/nx: the Nx plugin (init generator, preTasksExecution / postTasksExecution hooks). The
 * hooks arrive with the Nx remote-cache work; this entry point exists so the package builds, packs
 * and installs like the others from the start.
 */
export const PLUGIN_NAME = '@cascache/nx';
