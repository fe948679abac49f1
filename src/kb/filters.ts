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

export function parseFilter(input: unknown): AtomFilter | null {
  if (input === undefined || input === null) return null;
  if (typeof input !== "object" || Array.isArray(input)) invalid("filter must be an object");
  if (utf8Length(JSON.stringify(input)) > LIMITS.filterBytes)
    invalid(`filter is larger than ${LIMITS.filterBytes} bytes`);
  const filter = input as Record<string, unknown>;
  for (const key of Object.keys(filter)) {
    const folded = key.normalize("NFKC").toLowerCase();
    if (SCOPE_KEYS.has(folded) || folded.includes("tenant") || folded.includes("namespace")) {
      invalid(`filter key "${printable(key)}" is not allowed: the tenant scope comes from your access token`);
    }
    if (key !== "tags" && key !== "source") {
      invalid(`unknown filter key "${printable(key)}" (allowed: tags, source)`);
    }
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
    if (key !== "any" && key !== "all") invalid(`unknown key "${printable(key)}" in filter.tags (allowed: any, all)`);
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
    if (key !== "in") invalid(`unknown key "${printable(key)}" in filter.source (allowed: in)`);
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
