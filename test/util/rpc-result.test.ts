import { describe, expect, it } from "vitest";
import { InsufficientScopeError, KbError, MethodNotAllowedError, QuotaError } from "../../src/errors";
import { settle, unwrap } from "../../src/util/rpc-result";

async function roundTrip(error: unknown): Promise<unknown> {
  // Structured clone stands for the RPC boundary: only data crosses it.
  const answer = structuredClone(await settle(() => Promise.reject(error)));
  try {
    unwrap(answer);
  } catch (thrown) {
    return thrown;
  }
  throw new Error("unwrap did not throw");
}

describe("RPC results: a refusal crosses an object boundary as data and is thrown again as itself", () => {
  it("a value passes through", async () => {
    expect(unwrap(structuredClone(await settle(async () => ({ n: 1 }))))).toEqual({ n: 1 });
  });

  it("keeps code and message", async () => {
    const again = await roundTrip(new KbError("ERR_NOT_FOUND", "unknown tenant"));
    expect(again).toBeInstanceOf(KbError);
    expect(again).toMatchObject({ code: "ERR_NOT_FOUND", message: "unknown tenant" });
  });

  it("keeps the details of each subclass (scopes, Retry-After, Allow)", async () => {
    expect(await roundTrip(new InsufficientScopeError(["kb.write"]))).toMatchObject({ scopes: ["kb.write"] });
    const quota = await roundTrip(new QuotaError("ERR_QUOTA", "too many", 7));
    expect(quota).toBeInstanceOf(QuotaError);
    expect(quota).toMatchObject({ code: "ERR_QUOTA", retryAfterS: 7 });
    const method = await roundTrip(new MethodNotAllowedError(["POST"]));
    expect(method).toBeInstanceOf(MethodNotAllowedError);
    expect(method).toMatchObject({ allow: ["POST"] });
  });

  it("anything that is not one of our errors is thrown by settle itself (never turned into a refusal)", async () => {
    const bug = new TypeError("a bug");
    await expect(settle(() => Promise.reject(bug))).rejects.toBe(bug);
  });

  it("a refusal with a code that is not ours becomes ERR_INTERNAL", () => {
    let thrown: unknown;
    try {
      unwrap({ ok: false, refusal: { code: "ERR_MADE_UP", message: "x" } });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: "ERR_INTERNAL" });
  });
});
