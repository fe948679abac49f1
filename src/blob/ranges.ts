import { KbError } from "../errors";

/** Byte ranges of a document (HTTP `Range` and get_document offsets), in plaintext bytes. */
export interface ByteRange {
  /** Inclusive start and exclusive end in plaintext bytes. */
  readonly start: number;
  readonly end: number;
}

export type RangeRequest = { readonly offset: number; readonly length?: number } | { readonly suffix: number };

/** Plaintext range for an HTTP-style request; 416-style errors for unsatisfiable ones. */
export function resolveRange(range: RangeRequest, size: number): ByteRange {
  if ("suffix" in range) {
    if (!Number.isSafeInteger(range.suffix) || range.suffix <= 0 || size === 0) throw unsatisfiable();
    return { start: Math.max(0, size - range.suffix), end: size };
  }
  const { offset, length } = range;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) throw unsatisfiable();
  if (length !== undefined && (!Number.isSafeInteger(length) || length <= 0)) throw unsatisfiable();
  return { start: offset, end: length === undefined ? size : Math.min(size, offset + length) };
}

function unsatisfiable(): KbError {
  return new KbError("ERR_RANGE", "Range Not Satisfiable");
}
