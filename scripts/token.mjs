#!/usr/bin/env node
// Prints an access token from the local dev issuer. Usage:
//   npm run token -- --tenant acme --sub alice [--scope "mcp kb.read kb.write"] [--ttl 3600] [--aud URL]
//   npm run token -- --admin [--sub operator]      (platform-admin token for the admin API)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { importJWK, SignJWT } from "jose";
import { devKeyPaths, ensureDevKeys } from "./dev-keys.mjs";

export const DEV_ISSUER = "https://dev-issuer.invalid";
export const DEFAULT_AUDIENCE = "http://localhost:8787/mcp";

/** The resource of the last `npm start` (scripts/start.mjs records it), or null. */
export function devServerResource() {
  try {
    return JSON.parse(readFileSync(join(devKeyPaths().dir, "dev-server.json"), "utf8")).resource ?? null;
  } catch {
    return null;
  }
}

export async function mintDevToken({ tenant, sub, scope, ttl, aud, keysDir, admin = false }) {
  if (!admin && !/^[a-z0-9][a-z0-9-]{1,62}$/.test(tenant ?? "")) {
    throw new Error("--tenant must match ^[a-z0-9][a-z0-9-]{1,62}$ (or pass --admin)");
  }
  const paths = await ensureDevKeys(keysDir);
  const jwk = JSON.parse(readFileSync(paths.privateKey, "utf8"));
  const key = await importJWK(jwk, "ES256");
  // Platform-admin tokens carry no tenant and are for the admin audience only (see src/admin/admin-api.ts).
  const claims = admin ? { scope: "platform:admin" } : { tenant_id: tenant, scope };
  return new SignJWT({ ...claims, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: "ES256", kid: jwk.kid, typ: "at+jwt" })
    .setIssuer(DEV_ISSUER)
    .setAudience(aud)
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
    .sign(key);
}

function parseTtl(text) {
  const match = /^(\d+)([smhd]?)$/.exec(text);
  if (!match) throw new Error("--ttl must be seconds or a number with s/m/h/d");
  return Number(match[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2]];
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  try {
    const { values } = parseArgs({
      options: {
        tenant: { type: "string" },
        sub: { type: "string", default: "dev-user" },
        scope: { type: "string", default: "mcp kb.read kb.write" },
        ttl: { type: "string", default: "3600" },
        aud: { type: "string" },
        admin: { type: "boolean", default: false },
      },
    });
    const resource = process.env.MCP_RESOURCE ?? devServerResource() ?? DEFAULT_AUDIENCE;
    const aud = values.aud ?? (values.admin ? `${new URL(resource).origin}/admin` : resource);
    const token = await mintDevToken({ ...values, aud, ttl: parseTtl(values.ttl) });
    process.stdout.write(`${token}\n`);
  } catch (error) {
    console.error(`token: ${error.message}`);
    process.exit(2);
  }
}
