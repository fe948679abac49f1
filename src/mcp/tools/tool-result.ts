import type { ServerContext } from "@modelcontextprotocol/server";
import { toKbError } from "../../errors";
import { log } from "../../log";
import type { ToolDeclaration, ToolDeps } from "./tool-declaration";

/**
 * How every tool of this server answers: a JSON result (text and structured), or an `isError` result with a stable
 * ERR_* code. Client errors carry their message; anything else is logged and answered without detail, so an
 * internal message can never reach a client through the SDK's error text.
 */
export type ToolResult = {
  content: { type: "text"; text: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
};

/**
 * Whether a caller holding `granted` may use a tool declared with `scope`. Fails closed: anything but `null` or a
 * granted scope string (a declaration bent past the type checker, an unknown tool) is refused.
 */
export function scopeAllows(scope: unknown, granted: readonly string[]): boolean {
  return scope === null || (typeof scope === "string" && scope.length > 0 && granted.includes(scope));
}

/**
 * Runs one call of a declared tool. The tool's scope is checked first, from its own declaration (the tenant object
 * already refused the request with 403 if it was missing; this is the second line).
 */
export async function runTool(
  tool: ToolDeclaration,
  args: unknown,
  deps: ToolDeps,
  ctx: ServerContext,
): Promise<ToolResult> {
  const { identity, requestId } = deps.scope;
  if (!scopeAllows(tool.scope, identity.scopes)) {
    const needed = typeof tool.scope === "string" ? tool.scope : "(undeclared)";
    return errorResult("ERR_INSUFFICIENT_SCOPE", `this tool requires scope ${needed}`);
  }
  let context: Record<string, unknown> = {};
  try {
    const result = await tool.run(args as never, {
      ...deps,
      ctx,
      onFailureInclude: (fields) => {
        context = { ...context, ...fields };
      },
    });
    return { content: [{ type: "text", text: JSON.stringify(result) }], structuredContent: result };
  } catch (thrown) {
    // Errors may come from another object over RPC (a run, the registry): toKbError restores their code.
    const error = toKbError(thrown);
    if (error.status < 500 || error.code.startsWith("ERR_EGRESS_")) {
      return errorResult(error.code, error.message, context);
    }
    // Server-side failures keep their stable code (e.g. ERR_DECRYPT) but never their message.
    const { code, status } = error;
    log("error", { event: "tool.error", requestId, tenant: identity.tenant, code, detail: tool.name });
    return errorResult(code, status === 503 ? "service unavailable" : "internal error", context);
  }
}

export function errorResult(code: string, message: string, context: Record<string, unknown> = {}): ToolResult {
  const extra = Object.keys(context).length ? ` ${JSON.stringify(context)}` : "";
  return {
    content: [{ type: "text", text: `${code}: ${message}${extra}` }],
    structuredContent: { error: { code, message }, ...context },
    isError: true,
  };
}
