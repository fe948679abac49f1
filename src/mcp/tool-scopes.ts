/**
 * The OAuth scope each MCP operation needs beyond the endpoint scope. Checked by the tenant object before a
 * request is dispatched (403 insufficient_scope, naming the scope) and again inside the tools.
 */
export const TOOL_SCOPES: Readonly<Record<string, string>> = {
  add_atoms: "kb.write",
  delete_atoms: "kb.write",
  search: "kb.read",
  get_atom: "kb.read",
  list_atoms: "kb.read",
  kb_stats: "kb.read",
  put_document: "kb.write",
  get_document: "kb.read",
  import_url: "kb.write",
  ingest_document: "kb.write",
  ingest_status: "kb.read",
  purge_source: "kb.write",
};

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
    if (method === "tools/call" && typeof params?.name === "string" && Object.hasOwn(TOOL_SCOPES, params.name)) {
      scopes.add(TOOL_SCOPES[params.name] as string);
    }
    if (typeof method === "string" && Object.hasOwn(METHOD_SCOPES, method)) scopes.add(METHOD_SCOPES[method] as string);
  }
  return [...scopes];
}
