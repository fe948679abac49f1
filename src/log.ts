/**
 * Structured JSON logs. Fields are an explicit allow-list: there is no way to log a token, a key, a request body
 * or atom text through this function, and the request log names the matched route pattern (e.g.
 * "/v1/documents/:id"), never the raw path or query: both can carry secrets or tenant identifiers.
 */
export interface LogFields {
  readonly event: string;
  readonly requestId?: string;
  readonly tenant?: string;
  readonly subject?: string;
  readonly outcome?: "ok" | "rejected" | "error";
  readonly status?: number;
  readonly code?: string;
  readonly method?: string;
  /** A route pattern from the router, never a concrete URL path. */
  readonly route?: string;
  readonly era?: "legacy" | "modern";
  readonly ms?: number;
  readonly detail?: string;
}

export type LogLevel = "info" | "warn" | "error";

export function log(level: LogLevel, fields: LogFields): void {
  const line = JSON.stringify({ ts: new Date().toISOString(), level, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}
