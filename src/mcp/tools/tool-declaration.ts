import type { ServerContext, ToolAnnotations } from "@modelcontextprotocol/server";
import type { z } from "zod";
import type { Config } from "../../config";
import type { TenantContext } from "../../tenant/tenant-context";
import type { RequestScope } from "../request-scope";

/**
 * The OAuth scope a tool needs beyond the endpoint scope (REQUIRED_SCOPES, checked at the edge), or `null` for a
 * tool the endpoint scope alone allows. Every declaration must say which: there is no default.
 */
export type ToolScope = "kb.read" | "kb.write" | null;

/** What a tool may use while serving one request of one verified caller (built by the tenant object). */
export interface ToolDeps {
  readonly scope: RequestScope;
  readonly tenant: TenantContext;
  readonly config: Config;
  /** Queues work for the tenant object's alarm (asynchronous ingest). */
  readonly schedule: () => Promise<void>;
}

/** One call of a tool: the request's deps, the SDK's context, and fields to add to an error result. */
export interface ToolCall extends ToolDeps {
  readonly ctx: ServerContext;
  /**
   * Fields that go next to `error` if the call fails from now on (e.g. the run handle of an ingest that had
   * already started, so the client can still poll it); codes are unchanged.
   */
  onFailureInclude(fields: Record<string, unknown>): void;
}

/**
 * A tool, declared once: registration, the scope table the tenant object checks before dispatch, the scope check
 * inside the call and the documented tool list are all derived from its declaration (src/mcp/tools/catalog.ts).
 * Declarations are module constants and hold nothing per tenant or per request: what a call needs comes in
 * through `ToolCall`.
 */
export interface ToolDeclaration<Input extends z.ZodObject = z.ZodObject> {
  readonly name: string;
  readonly scope: ToolScope;
  readonly title: string;
  /** A function when the text depends on the deployment's configuration (e.g. a configured byte limit). */
  readonly description: string | ((config: Config) => string);
  /** Strict (unknown keys refused, never ignored); published in tools/list as the tool's JSON Schema. */
  readonly input: Input;
  readonly output?: z.ZodObject;
  readonly annotations: ToolAnnotations;
  /** The tool's work; its result is the structured content. Method syntax: declarations of any input mix. */
  run(args: z.output<Input>, call: ToolCall): Promise<Record<string, unknown>>;
}

/** Identity function that infers `run`'s argument type from `input`. */
export function defineTool<Input extends z.ZodObject>(tool: ToolDeclaration<Input>): ToolDeclaration<Input> {
  return tool;
}
