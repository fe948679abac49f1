import { TOOL_SCOPES } from "./tools/catalog";

/**
 * The OAuth scope each MCP operation needs beyond the endpoint scope. Tool scopes come from the tool declarations
 * (src/mcp/tools/catalog.ts); checked by the tenant object before a request is dispatched (403 insufficient_scope,
 * naming the scope) and again inside the tools.
 */
export const METHOD_SCOPES: Readonly<Record<string, string>> = {
  "resources/read": "kb.read",
  "resources/list": "kb.read",
};

/** The scope a JSON-RPC request needs, or null. Batches need the union (the first missing one is reported). */
export function requiredScopes(body: unknown): string[] {
  const messages = Array.isArray(body) ? body : [body];
  const scopes = new Set<string>();
  for (const message of messages) {
    if (typeof message !== "object" || message === null) continue;
    const { method, params } = message as { method?: unknown; params?: { name?: unknown } };
    if (method === "tools/call" && typeof params?.name === "string") {
      // A name no tool declares needs no scope here: the SDK answers it as an unknown tool, and nothing runs.
      const scope = TOOL_SCOPES.get(params.name);
      if (scope) scopes.add(scope);
    }
    if (typeof method === "string" && Object.hasOwn(METHOD_SCOPES, method)) scopes.add(METHOD_SCOPES[method] as string);
  }
  return [...scopes];
}
