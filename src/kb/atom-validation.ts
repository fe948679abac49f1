import { KbError } from "../errors";
import { flagText } from "../extract/injection-flags";
import { base64url } from "../util/bytes";
import type { Provenance } from "./atom-cipher";
import { LIMITS, utf8Length } from "./limits";

/**
 * Input checks of the knowledge base, pure: every atom of a batch and every id list is checked against LIMITS
 * before anything is embedded, sealed or written; the first problem refuses the whole call.
 */

export interface AtomInput {
  readonly id?: string;
  readonly text: string;
  readonly title?: string;
  readonly source?: string;
  readonly tags?: readonly string[];
  /** Set by server code only (extraction runs); the add_atoms tool schema has no such field. */
  readonly provenance?: Provenance;
  readonly flags?: readonly string[];
}

export interface ValidAtom {
  readonly id: string;
  readonly text: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly flags: string[];
  readonly provenance: Provenance | null;
}

/** Validates a whole batch before anything is embedded or written; the first problem refuses the batch. */
export function validateBatch(inputs: readonly AtomInput[]): ValidAtom[] {
  if (!Array.isArray(inputs) || inputs.length === 0) throw invalid("atoms must be a non-empty list");
  if (inputs.length > LIMITS.batchSize) throw limit(`at most ${LIMITS.batchSize} atoms per call`);
  const seen = new Set<string>();
  return inputs.map((input, i) => {
    const at = `atoms[${i}]`;
    if (typeof input !== "object" || input === null) throw invalid(`${at} must be an object`);
    if (typeof input.text !== "string" || input.text.trim() === "") throw invalid(`${at}.text must not be empty`);
    if (utf8Length(input.text) > LIMITS.atomTextBytes) {
      throw limit(`${at}.text is longer than ${LIMITS.atomTextBytes} bytes`);
    }
    const id = input.id ?? `a_${base64url(crypto.getRandomValues(new Uint8Array(12)))}`;
    if (typeof id !== "string" || !LIMITS.idPattern.test(id)) {
      throw invalid(`${at}.id must match ${LIMITS.idPattern.source}`);
    }
    if (seen.has(id)) throw invalid(`${at}.id "${id}" appears more than once in this batch`);
    seen.add(id);
    const title = optionalString(input.title, LIMITS.titleChars, `${at}.title`);
    const source = optionalString(input.source, LIMITS.sourceChars, `${at}.source`);
    const tags = input.tags ?? [];
    if (!Array.isArray(tags) || tags.length > LIMITS.tagsPerAtom) {
      throw invalid(`${at}.tags must be a list of at most ${LIMITS.tagsPerAtom} tags`);
    }
    for (const tag of tags) {
      if (typeof tag !== "string" || !LIMITS.tagPattern.test(tag)) {
        throw invalid(`${at}.tags: each tag must be 1-${LIMITS.tagChars} letters, digits or " ._:/-"`);
      }
    }
    const flags = [...new Set([...flagText(input.text), ...(input.flags ?? [])])];
    return {
      id,
      text: input.text,
      title,
      source,
      tags: [...new Set(tags as string[])],
      flags,
      provenance: input.provenance ?? null,
    };
  });
}

function optionalString(value: unknown, max: number, name: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || value.length === 0 || value.length > max) {
    throw invalid(`${name} must be a non-empty string of at most ${max} characters`);
  }
  return value;
}

export function checkIds(ids: readonly string[]): void {
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > LIMITS.idsPerCall) {
    throw invalid(`ids must be a list of 1 to ${LIMITS.idsPerCall} atom ids`);
  }
  for (const id of ids) {
    if (typeof id !== "string" || !LIMITS.idPattern.test(id)) throw invalid(`invalid atom id`);
  }
}

export function embeddingText(atom: ValidAtom): string {
  return atom.title ? `${atom.title}\n${atom.text}` : atom.text;
}

export function invalid(message: string): KbError {
  return new KbError("ERR_INVALID_PARAMS", message);
}

function limit(message: string): KbError {
  return new KbError("ERR_LIMIT", message);
}
