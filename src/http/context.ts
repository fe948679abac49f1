import type { Identity } from "../auth/identity";
import type { Config } from "../config";
import type { Env } from "../env";
import { KbError } from "../errors";

/** Typed Hono context of the edge: set by the first middleware of src/http/app.ts, read by the routes. */
export interface AppVariables {
  requestId: string;
  config: Config | null;
  identity: Identity | null;
  tokenSent: boolean;
}

export type AppEnv = { Bindings: Env; Variables: AppVariables };

export function requireConfig(config: Config | null): Config {
  if (!config) throw new KbError("ERR_CONFIG", "configuration unavailable");
  return config;
}
