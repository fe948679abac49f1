import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { unwrapKey, wrapKey } from "../crypto/key-wrap";
import type { MasterKeys } from "../crypto/master-keys";
import { KbError } from "../errors";
import { base64url } from "../util/bytes";

/**
 * The server's own token-signing keys (ES256), used only for RFC 8693 exchanged tokens. They live in the
 * registry object's SQLite: the public JWK in the clear (published at /.well-known/jwks.json), the private JWK
 * encrypted with AES-256-GCM under a one-off 256-bit key that is itself wrapped under the current master epoch
 * (the same wrapping as tenant data keys, with the pseudo-tenant "platform-signing"). Rotation keeps retired keys
 * published for RETIRED_PUBLISH_MS, longer than any exchanged token lives.
 */
export const EXCHANGED_TOKEN_MAX_TTL_S = 300;
const RETIRED_PUBLISH_MS = 24 * 3600_000;
const WRAP_TENANT = "platform-signing";

export const SIGNING_SCHEMA = `CREATE TABLE IF NOT EXISTS signing_keys (
  kid         TEXT PRIMARY KEY,
  version     INTEGER NOT NULL UNIQUE,
  epoch       TEXT NOT NULL,
  wrapped_key BLOB NOT NULL,
  sealed_jwk  BLOB NOT NULL,
  public_jwk  TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  retired_at  INTEGER
)`;

type KeyRow = {
  kid: string;
  version: number;
  epoch: string;
  wrapped_key: ArrayBuffer;
  sealed_jwk: ArrayBuffer;
  public_jwk: string;
  created_at: number;
  retired_at: number | null;
};

export class SigningKeys {
  readonly #sql: SqlStorage;
  readonly #master: MasterKeys;

  constructor(sql: SqlStorage, master: MasterKeys) {
    this.#sql = sql;
    this.#master = master;
    sql.exec(SIGNING_SCHEMA);
  }

  /** Public keys to publish: the active one and those retired less than a day ago. */
  jwks(now = Date.now()): { keys: JWK[] } {
    return {
      keys: this.#sql
        .exec<KeyRow>(
          `SELECT * FROM signing_keys WHERE retired_at IS NULL OR retired_at > ? ORDER BY version DESC`,
          now - RETIRED_PUBLISH_MS,
        )
        .toArray()
        .map((row) => JSON.parse(row.public_jwk) as JWK),
    };
  }

  async sign(claims: Record<string, unknown>, issuer: string, ttlSeconds: number, now = Date.now()): Promise<string> {
    if (ttlSeconds <= 0 || ttlSeconds > EXCHANGED_TOKEN_MAX_TTL_S)
      throw new RangeError("exchanged tokens live at most 5 minutes");
    const row = this.#active() ?? (await this.rotate(now));
    const key = await this.#privateKey(row);
    const iat = Math.floor(now / 1000);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: row.kid, typ: "at+jwt" })
      .setIssuer(issuer)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttlSeconds)
      .setJti(crypto.randomUUID())
      .sign(key);
  }

  /** Creates a new active key and retires the previous one (still published for a day). */
  async rotate(now = Date.now()): Promise<KeyRow> {
    const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
    const version =
      (this.#sql.exec<{ v: number | null }>(`SELECT MAX(version) AS v FROM signing_keys`).one().v ?? 0) + 1;
    const kid = `kb-${version}-${base64url(crypto.getRandomValues(new Uint8Array(6)))}`;
    const sealingKey = crypto.getRandomValues(new Uint8Array(32));
    const wrapped = await wrapKey(this.#master, WRAP_TENANT, version, sealingKey);
    const sealed = await seal(sealingKey, new TextEncoder().encode(JSON.stringify(await exportJWK(privateKey))), kid);
    sealingKey.fill(0);
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
    this.#sql.exec(`UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL`, now);
    this.#sql.exec(
      `INSERT INTO signing_keys (kid, version, epoch, wrapped_key, sealed_jwk, public_jwk, created_at, retired_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, NULL)`,
      kid,
      version,
      wrapped.epoch,
      wrapped.wrapped,
      sealed,
      JSON.stringify(publicJwk),
      now,
    );
    return this.#active() as KeyRow;
  }

  /** Master epoch rotation for the signing keys: rewrap their sealing keys under the current epoch. */
  async rewrap(): Promise<number> {
    let count = 0;
    for (const row of this.#sql.exec<KeyRow>(`SELECT * FROM signing_keys`).toArray()) {
      if (row.epoch === this.#master.current) continue;
      const key = await unwrapKey(this.#master, {
        tenant: WRAP_TENANT,
        version: row.version,
        epoch: row.epoch,
        wrapped: new Uint8Array(row.wrapped_key),
      });
      const wrapped = await wrapKey(this.#master, WRAP_TENANT, row.version, key);
      key.fill(0);
      this.#sql.exec(
        `UPDATE signing_keys SET epoch = ?, wrapped_key = ? WHERE kid = ?`,
        wrapped.epoch,
        wrapped.wrapped,
        row.kid,
      );
      count++;
    }
    return count;
  }

  #active(): KeyRow | undefined {
    return this.#sql.exec<KeyRow>(`SELECT * FROM signing_keys WHERE retired_at IS NULL`).toArray()[0];
  }

  async #privateKey(row: KeyRow): Promise<CryptoKey> {
    const sealingKey = await unwrapKey(this.#master, {
      tenant: WRAP_TENANT,
      version: row.version,
      epoch: row.epoch,
      wrapped: new Uint8Array(row.wrapped_key),
    });
    const jwk = JSON.parse(
      new TextDecoder().decode(await open(sealingKey, new Uint8Array(row.sealed_jwk), row.kid)),
    ) as JWK;
    sealingKey.fill(0);
    const key = await importJWK(jwk, "ES256");
    if (!(key instanceof CryptoKey)) throw new KbError("ERR_INTERNAL", "signing key unavailable");
    return key;
  }
}

async function seal(rawKey: Uint8Array, plaintext: Uint8Array, kid: string): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", rawKey, "AES-GCM", false, ["encrypt"]);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: new TextEncoder().encode(kid) }, key, plaintext),
  );
  const out = new Uint8Array(12 + sealed.byteLength);
  out.set(iv);
  out.set(sealed, 12);
  return out;
}

async function open(rawKey: Uint8Array, sealed: Uint8Array, kid: string): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", rawKey, "AES-GCM", false, ["decrypt"]);
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: sealed.subarray(0, 12), additionalData: new TextEncoder().encode(kid) },
        key,
        sealed.subarray(12),
      ),
    );
  } catch {
    throw new KbError("ERR_DECRYPT", "decryption failed");
  }
}
