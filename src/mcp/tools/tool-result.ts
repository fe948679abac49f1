import { toKbError } from "../../errors";
import { log } from "../../log";
import type { RequestScope } from "../request-scope";
import { TOOL_SCOPES } from "../tool-scopes";

/**
 * How every tool of this server answers: a JSON result (text and structured), or an `isError` result with a stable
 * ERR_* code. Client errors carry their message; anything else is logged and answered without detail, so an
 * internal message can never reach a client through the SDK's error text. The tool's scope is checked first
 * (the tenant object already refused the request with 403 if it was missing; this is the second line).
 */
export type ToolResult = {
  content: { type: "text"; text: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
};

/**
 * `context`, if given, is read when the tool fails and its fields go next to `error` in the error result (e.g. the
 * run handle of an ingest that had already started, so the client can still poll it); codes are unchanged.
 */
export function toolRunner(scope: RequestScope) {
  return (
    tool: string,
    fn: () => Promise<Record<string, unknown>>,
    context: () => Record<string, unknown> = () => ({}),
  ) =>
    async (): Promise<ToolResult> => {
      const needed = TOOL_SCOPES[tool];
      if (needed && !scope.identity.scopes.includes(needed)) {
        return errorResult("ERR_INSUFFICIENT_SCOPE", `this tool requires scope ${needed}`);
      }
      try {
        const result = await fn();
        return { content: [{ type: "text", text: JSON.stringify(result) }], structuredContent: result };
      } catch (thrown) {
        // Errors may come from another object over RPC (a run, the registry): kbErrorOf restores their code.
        const error = toKbError(thrown);
        if (error.status < 500 || error.code.startsWith("ERR_EGRESS_")) {
          return errorResult(error.code, error.message, context());
        }
        // Server-side failures keep their stable code (e.g. ERR_DECRYPT) but never their message.
        const { code, status } = error;
        log("error", {
          event: "tool.error",
          requestId: scope.requestId,
          tenant: scope.identity.tenant,
          code,
          detail: tool,
        });
        return errorResult(code, status === 503 ? "service unavailable" : "internal error", context());
      }
    };
}

export function errorResult(code: string, message: string, context: Record<string, unknown> = {}): ToolResult {
  const extra = Object.keys(context).length ? ` ${JSON.stringify(context)}` : "";
  return {
    content: [{ type: "text", text: `${code}: ${message}${extra}` }],
    structuredContent: { error: { code, message }, ...context },
    isError: true,
  };
}
