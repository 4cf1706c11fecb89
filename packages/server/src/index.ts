/**
 * @cascache/server: HTTP adapters over @cascache/core (Nx `/v1/cache`, Turborepo `/v8/artifacts`,
 * the cascache chunk API). The server itself arrives with the Nx remote-cache work; this entry point
 * exists so the package builds, packs and installs like the others from the start.
 */
export const SERVER_API_VERSION = 1;
