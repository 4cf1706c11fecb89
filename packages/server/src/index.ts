/**
 * @cascache/server public API: `createServer` builds the HTTP app over a store without listening;
 * the CLI (`cascache serve`) and the Nx plugin's agent listen.
 */
export { createServer, type CascacheServer, type ServerOptions, type UploadEvent } from './server';
export { CRASH_POINTS, parseCrashPoint, type CrashPoint } from './artifacts';
export { Authorizer, isLoopback, readsNamespace, writesNamespace, type Access, type AuthResult, type Principal, type ScopedToken, type TokenConfig } from './auth';
export { ActivityLog, type ActivityTotals, type HashActivity } from './report';
export { DEFAULT_UPLOAD_LIMITS, type UploadLimits } from './upload-guard';
export { listen, type ListenOptions, type Listening } from './listen';
export { AutoEvictor, type AutoEvictOptions } from './auto-evict';
export { dashboardData, listenDashboard, registerDashboard, type DashboardData, type DashboardOptions, type TierHealth } from './dashboard';
