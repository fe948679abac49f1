#!/usr/bin/env node
// Creates the local dev issuer's ES256 key pair on first use (in the git-ignored .dev-keys/ folder) and makes the
// local Worker trust its public JWKS by writing AUTH_JWKS into the git-ignored .dev.vars. Idempotent.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { exportJWK, generateKeyPair } from "jose";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export function devKeyPaths(dir = process.env.DEV_KEYS_DIR ?? join(root, ".dev-keys")) {
  return { dir, privateKey: join(dir, "private.jwk.json"), publicKeys: join(dir, "public.jwks.json") };
}

export async function ensureDevKeys(dir) {
  const paths = devKeyPaths(dir);
  if (!existsSync(paths.privateKey)) {
    mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
    const kid = `dev-${Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString("hex")}`;
    writeFileSync(paths.privateKey, JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: "ES256" }), {
      mode: 0o600,
    });
    chmodSync(paths.privateKey, 0o600);
    const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" }] };
    writeFileSync(paths.publicKeys, JSON.stringify(jwks));
    console.error(`dev-keys: created a dev signing key (${kid}) in ${paths.dir}`);
  }
  return paths;
}

/** Writes AUTH_JWKS=<public jwks> into a .dev.vars file, keeping its other lines. */
export function writeDevVars(file, jwksJson, extra = {}) {
  const lines = existsSync(file) ? readFileSync(file, "utf8").split("\n") : [];
  const values = { AUTH_JWKS: jwksJson, ...extra };
  const kept = lines.filter((line) => line.trim() && !Object.keys(values).some((key) => line.startsWith(`${key}=`)));
  // Single quotes: dotenv keeps the JSON literally (no escapes to undo).
  for (const [key, value] of Object.entries(values)) kept.push(`${key}='${value}'`);
  writeFileSync(file, `${kept.join("\n")}\n`, { mode: 0o600 });
}

/** A dev master key (epoch "dev1"), created once next to the signing key. */
export function ensureDevMasterKey(dir) {
  const file = join(devKeyPaths(dir).dir, "master-dev1.key");
  if (!existsSync(file)) {
    writeFileSync(file, Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"), { mode: 0o600 });
  }
  return { MASTER_KEY_EPOCH: "dev1", MASTER_KEY_DEV1: readFileSync(file, "utf8").trim() };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const paths = await ensureDevKeys();
  writeDevVars(join(root, ".dev.vars"), readFileSync(paths.publicKeys, "utf8").trim(), ensureDevMasterKey());
  console.error(
    "dev-keys: .dev.vars trusts the dev issuer; mint a token with `npm run token -- --tenant acme --sub alice`",
  );
}
