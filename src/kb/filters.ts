import { z } from "zod";
import { KbError } from "../errors";
import { LIMITS, utf8Length } from "./limits";

/**
 * Client search filters. The allow-list is `tags` and `source`; nothing else is accepted. A filter that names a
 * tenant, namespace or index, uses an operator, or has any other key is refused with invalid-params (never
 * ignored, never widened): the tenant scope is always the server's, taken from the verified token.
 */
export interface AtomFilter {
  readonly tagsAny: readonly string[];
  readonly tagsAll: readonly string[];
  readonly sources: readonly string[];
}

// Constant lookup table (never mutated, tenant-neutral).
const SCOPE_KEYS = new Set(["tenant", "tenant_id", "tenantid", "namespace", "index", "org", "account"]);

/** Refusal text for keys a filter clause does not allow; keys are echoed printable-only. */
export function filterKeyRefusal(keys: readonly string[], where: string, allowed: string): string {
  const key = keys[0] ?? "";
  const folded = key.normalize("NFKC").toLowerCase();
  if (SCOPE_KEYS.has(folded) || folded.includes("tenant") || folded.includes("namespace")) {
    return `${where} key "${printable(key)}" is not allowed: the tenant scope comes from your access token`;
  }
  return `unknown key "${printable(key)}" in ${where} (allowed: ${allowed})`;
}

const refuseKeys = (where: string, allowed: string) => (issue: { code?: string; keys?: string[] }) =>
  issue.code === "unrecognized_keys" ? filterKeyRefusal(issue.keys ?? [], where, allowed) : undefined;
const filterValues = z.array(z.string().min(1).max(LIMITS.sourceChars)).min(1).max(LIMITS.filterValues);

/**
 * The filter's shape as the search tool publishes it (tools/list) and the SDK checks it before the tool runs:
 * strict at every level (additionalProperties false), so a client sees exactly what is accepted. parseFilter
 * below still checks everything itself (size, emptiness) and is the only code that turns input into a filter.
 */
export const FILTER_SCHEMA = z
  .strictObject(
    {
      tags: z
        .union([
          filterValues,
          z.strictObject(
            { any: filterValues.optional(), all: filterValues.optional() },
            { error: refuseKeys("filter.tags", "any, all") },
          ),
        ])
        .optional()
        .describe("A list (any of them), or {any: [...], all: [...]}."),
      source: z
        .union([
          z.string().min(1).max(LIMITS.sourceChars),
          z.strictObject({ in: filterValues }, { error: refuseKeys("filter.source", "in") }),
        ])
        .optional()
        .describe("One source, or {in: [...]}."),
    },
    { error: refuseKeys("filter", "tags, source") },
  )
  .describe("Allowed keys: tags, source (the tenant always comes from your access token).");

export function parseFilter(input: unknown): AtomFilter | null {
  if (input === undefined || input === null) return null;
  if (typeof input !== "object" || Array.isArray(input)) invalid("filter must be an object");
  if (utf8Length(JSON.stringify(input)) > LIMITS.filterBytes)
    invalid(`filter is larger than ${LIMITS.filterBytes} bytes`);
  const filter = input as Record<string, unknown>;
  for (const key of Object.keys(filter)) {
    if (key !== "tags" && key !== "source") invalid(filterKeyRefusal([key], "filter", "tags, source"));
  }
  const tags = parseTags(filter.tags);
  const sources = parseSources(filter.source);
  // An empty filter ({}, {tags: {}}, or one whose only key was dropped before parsing, such as __proto__) would
  // match nothing; refuse it rather than answer an empty result.
  if (!tags.tagsAny.length && !tags.tagsAll.length && !sources.length) {
    invalid("filter must name tags (a list or {any, all}) or source");
  }
  return { ...tags, sources };
}

function parseTags(value: unknown): { tagsAny: string[]; tagsAll: string[] } {
  if (value === undefined) return { tagsAny: [], tagsAll: [] };
  if (Array.isArray(value)) return { tagsAny: stringList(value, "tags"), tagsAll: [] };
  if (typeof value !== "object" || value === null) invalid("filter.tags must be a list or {any, all}");
  const clause = value as Record<string, unknown>;
  for (const key of Object.keys(clause)) {
    if (key !== "any" && key !== "all") invalid(filterKeyRefusal([key], "filter.tags", "any, all"));
  }
  return {
    tagsAny: clause.any === undefined ? [] : stringList(clause.any, "tags.any"),
    tagsAll: clause.all === undefined ? [] : stringList(clause.all, "tags.all"),
  };
}

function parseSources(value: unknown): string[] {
  if (value === undefined) return [];
  if (typeof value === "string") return stringList([value], "source");
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    invalid("filter.source must be a string or {in: [...]}");
  }
  const clause = value as Record<string, unknown>;
  for (const key of Object.keys(clause)) {
    if (key !== "in") invalid(filterKeyRefusal([key], "filter.source", "in"));
  }
  return stringList(clause.in, "source.in");
}

function stringList(value: unknown, name: string): string[] {
  if (!Array.isArray(value)) invalid(`filter.${name} must be a list of strings`);
  if (value.length === 0 || value.length > LIMITS.filterValues) {
    invalid(`filter.${name} must have 1 to ${LIMITS.filterValues} values`);
  }
  for (const item of value) {
    if (typeof item !== "string" || item.length === 0 || item.length > LIMITS.sourceChars) {
      invalid(`filter.${name} values must be non-empty strings of at most ${LIMITS.sourceChars} characters`);
    }
  }
  return [...new Set(value as string[])];
}

function printable(key: string): string {
  return key.slice(0, 40).replace(/[^\x20-\x7e]/g, "?");
}

function invalid(message: string): never {
  throw new KbError("ERR_INVALID_PARAMS", message);
}
