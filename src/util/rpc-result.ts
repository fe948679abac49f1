import { KbError, kbErrorOf } from "../errors";

/**
 * The answer of a Durable Object RPC method that may refuse: the value, or one of our own refusals carried as data.
 * workerd logs every error thrown out of an RPC method as an "uncaught exception" with its stack (under wrangler dev
 * and in the tests), so an expected refusal (unknown tenant, offboarded, a malformed body) would look like a crash.
 * It crosses the boundary as a value instead and is thrown again on the caller's side by `unwrap`, with the same
 * code, message and details (scopes, Retry-After, Allow) it had. Anything that is not a KbError is still thrown.
 */
export type RpcResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly refusal: Refusal };

interface Refusal {
  readonly code: string;
  readonly message: string;
  readonly scopes?: readonly string[];
  readonly retryAfterS?: number;
  readonly allow?: readonly string[];
}

/** Runs `fn` in the object; a KbError becomes a refusal, anything else propagates. */
export async function settle<T>(fn: () => T | Promise<T>): Promise<RpcResult<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    const known = kbErrorOf(error);
    if (!known) throw error;
    const { scopes, retryAfterS, allow } = known as KbError & Omit<Refusal, "code" | "message">;
    return {
      ok: false,
      refusal: {
        code: known.code,
        message: known.message,
        ...(scopes ? { scopes } : {}),
        ...(retryAfterS !== undefined ? { retryAfterS } : {}),
        ...(allow ? { allow } : {}),
      },
    };
  }
}

/** The value, or the refusal thrown again as the KbError it was (ERR_INTERNAL if its code is not one of ours). */
export function unwrap<T>(result: RpcResult<T>): T {
  if (result.ok) return result.value;
  const carrier = Object.assign(new Error(result.refusal.message), { ...result.refusal, name: "KbError" });
  throw kbErrorOf(carrier) ?? new KbError("ERR_INTERNAL", "internal error");
}
