import { base64url, fromBase64url } from "../util/bytes";

/**
 * Short-lived sign-in records in OAUTH_KV (the signed-in tenant and subject waiting for consent; the upstream
 * leg's PKCE verifier, nonce and the client's query), sealed with AES-256-GCM under a key derived (HKDF-SHA-256)
 * from the secret that names them: the consent handle or the upstream `state`, which only the browser holding the
 * flow has. KV keys are a hash of that secret, so a copy of OAUTH_KV yields neither who signed in nor anything a
 * flow could be resumed with. The purpose label is the HKDF info and the associated data, so one kind of record
 * never opens as another.
 */
async function keyFor(secret: string, purpose: string): Promise<CryptoKey> {
  const material = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: new TextEncoder().encode(purpose) },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

export async function sealRecord(secret: string, purpose: string, value: unknown): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plain = new TextEncoder().encode(JSON.stringify(value));
  const additionalData = new TextEncoder().encode(purpose);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData }, await keyFor(secret, purpose), plain),
  );
  const out = new Uint8Array(iv.length + sealed.length);
  out.set(iv);
  out.set(sealed, iv.length);
  return base64url(out);
}

/** The record, or null when it is missing, not sealed for this secret and purpose, or tampered with. */
export async function openRecord<T>(secret: string, purpose: string, text: string | null): Promise<T | null> {
  const bytes = text === null ? null : fromBase64url(text);
  if (!bytes || bytes.length < 12 + 16) return null;
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: bytes.slice(0, 12), additionalData: new TextEncoder().encode(purpose) },
      await keyFor(secret, purpose),
      bytes.slice(12),
    );
    return JSON.parse(new TextDecoder().decode(plain)) as T;
  } catch {
    return null;
  }
}
