import type { McpServer } from "@modelcontextprotocol/server";
import { DOCUMENT_TOOLS } from "./document-tools";
import { EXTRACTION_TOOLS } from "./extraction-tools";
import { IMPORT_TOOLS } from "./import-tool";
import { KB_TOOLS } from "./kb-tools";
import type { ToolDeclaration, ToolDeps, ToolScope } from "./tool-declaration";
import { runTool, scopeAllows } from "./tool-result";
import { WHOAMI_TOOLS } from "./whoami";

/**
 * Every tool of this server, in the order tools/list shows them. The one list: registration, the scope table
 * (TOOL_SCOPES, checked by the tenant object before dispatch) and the documented tool list (README.md,
 * docs/architecture.md; test/mcp/tool-catalog.test.ts keeps them equal) all come from here.
 */
export const TOOLS: readonly ToolDeclaration[] = [
  ...WHOAMI_TOOLS,
  ...KB_TOOLS,
  ...DOCUMENT_TOOLS,
  ...IMPORT_TOOLS,
  ...EXTRACTION_TOOLS,
];

/** `_meta` key under which tools/list publishes the scope a tool needs beyond the endpoint scope. */
export const TOOL_SCOPE_META_KEY = "tenant-mcp-kb/scope";

/** Tool name → scope, derived from TOOLS (a constant, tenant-neutral). A name declared twice is a startup error. */
export const TOOL_SCOPES: ReadonlyMap<string, ToolScope> = scopeTable(TOOLS);

function scopeTable(tools: readonly ToolDeclaration[]): ReadonlyMap<string, ToolScope> {
  const table = new Map<string, ToolScope>();
  for (const tool of tools) {
    if (table.has(tool.name)) throw new Error(`tool ${tool.name} is declared twice`);
    table.set(tool.name, tool.scope);
  }
  return table;
}

/**
 * Registers, for one request, the tools among `tools` that the caller's scopes allow, each call run through
 * runTool with the request's deps. A tool the caller may not use is not offered (tools/list hides it: clients show
 * every listed tool to the model, and none of them reads per-tool scopes); a call to it anyway is still refused by
 * the tenant object before dispatch with 403 insufficient_scope naming the scope (step-up), as for any client.
 */
export function registerTools(server: McpServer, deps: ToolDeps, tools: readonly ToolDeclaration[] = TOOLS): void {
  const granted = deps.scope.identity.scopes;
  for (const tool of tools) {
    if (!scopeAllows(tool.scope, granted)) continue;
    server.registerTool(
      tool.name,
      {
        title: tool.title,
        description: typeof tool.description === "function" ? tool.description(deps.config) : tool.description,
        inputSchema: tool.input,
        ...(tool.output ? { outputSchema: tool.output } : {}),
        annotations: tool.annotations,
        ...(tool.scope !== null ? { _meta: { [TOOL_SCOPE_META_KEY]: tool.scope } } : {}),
      },
      async (args: unknown, ctx) => runTool(tool, args, deps, ctx),
    );
  }
}
