import { listDurableObjectIds } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { importJWK, type JWTPayload, SignJWT } from "jose";
import { expect } from "vitest";
import { ISSUER, privateJwk, RESOURCE } from "./tokens";

/** What every error response from the edge must look like, whatever the error. */
export async function expectSafeErrorResponse(response: Response, status: number): Promise<Record<string, unknown>> {
  expect(response.status).toBe(status);
  expect(mediaType(response)).toBe("application/json");
  expect(response.headers.get("cache-control")).toBe("no-store");
  expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  const text = await response.text();
  // V8 stack frames: "at fn (file.js:1:2)" or "at file.js:1:2".
  expect(text).not.toMatch(/\bat \S+ \(|\bat \S*:\d+:\d+/);
  expect(text).not.toMatch(/\bError:/);
  expect(text).not.toContain("stack");
  return JSON.parse(text) as Record<string, unknown>;
}

/** The `data.code` of a JSON-RPC error body, or undefined. */
export function jsonRpcErrorCode(body: Record<string, unknown>): unknown {
  expect(body).toMatchObject({ jsonrpc: "2.0", id: null });
  const error = body.error as { data?: { code?: unknown } } | undefined;
  return error?.data?.code;
}

export function mediaType(response: Response): string {
  return (response.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

/** Whether the tenant's Durable Object has ever been created (it writes its schema on construction). */
export async function tenantObjectExists(tenant: string): Promise<boolean> {
  const wanted = env.TENANT_SERVER.idFromName(tenant);
  const ids = await listDurableObjectIds(env.TENANT_SERVER);
  return ids.some((id) => id.equals(wanted));
}

/**
 * Signs an arbitrary payload with a trusted test key, with no defaults filled in afterwards (mintToken always sets
 * `aud` to the resource, so a wrong-audience token needs this).
 */
export async function signRawToken(payload: JWTPayload): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISSUER, aud: RESOURCE, sub: "alice", iat: now, exp: now + 600, ...payload })
    .setProtectedHeader({ alg: "ES256", kid: "test-es256", typ: "at+jwt" })
    .sign(await importJWK(await privateJwk("ES256"), "ES256"));
}
