import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { unwrapKeyIn, type WrappedKey, wrapKeyIn } from "../crypto/key-wrap";
import type { MasterKeys } from "../crypto/master-keys";
import { KbError } from "../errors";
import { base64url } from "../util/bytes";

/**
 * The server's own token-signing keys (ES256), used only for RFC 8693 exchanged tokens. They live in the
 * registry object's SQLite: the public JWK in the clear (published at /.well-known/jwks.json), the private JWK
 * encrypted with AES-256-GCM under a one-off 256-bit key that is itself wrapped under the current master epoch in
 * the "signing-key" key domain (key-wrap.ts), which no tenant data key can share whatever its tenant id. Rotation
 * keeps retired keys published for RETIRED_PUBLISH_MS, longer than any exchanged token lives.
 *
 * Migration (wrap_format): rows written before the key domains existed (format 1) were wrapped as data keys of the
 * pseudo-tenant "platform-signing" (now a reserved tenant name). They are read in that format once and rewrapped
 * to format 2 under the current epoch, guarded so that only a row still in format 1 is rewritten; the master
 * rewrap also converts them. Nothing else ever reads or writes format 1.
 */
export const EXCHANGED_TOKEN_MAX_TTL_S = 300;
const RETIRED_PUBLISH_MS = 24 * 3600_000;
/** Owner field of signing keys in the "signing-key" domain (the domain label is what separates them). */
const SIGNING_OWNER = "registry";
/** Format 1 only: the pseudo-tenant under which signing keys were wrapped as data keys. */
const LEGACY_WRAP_TENANT = "platform-signing";
const WRAP_FORMAT_LEGACY = 1;
const WRAP_FORMAT_DOMAIN = 2;

export const SIGNING_SCHEMA = `CREATE TABLE IF NOT EXISTS signing_keys (
  kid         TEXT PRIMARY KEY,
  version     INTEGER NOT NULL UNIQUE,
  epoch       TEXT NOT NULL,
  wrapped_key BLOB NOT NULL,
  sealed_jwk  BLOB NOT NULL,
  public_jwk  TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  retired_at  INTEGER,
  wrap_format INTEGER NOT NULL DEFAULT 1
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
  wrap_format: number;
};

export class SigningKeys {
  readonly #sql: SqlStorage;
  readonly #master: MasterKeys;
  /**
   * The imported private key of the active signing key, kept for this instance's lifetime (the registry keeps one
   * instance per object), so signing does not unwrap and import on every exchange. Holds one key: platform-wide,
   * tenant-neutral. Replaced when the active kid changes (rotation).
   */
  #imported: { kid: string; key: CryptoKey } | null = null;

  constructor(sql: SqlStorage, master: MasterKeys) {
    this.#sql = sql;
    this.#master = master;
    sql.exec(SIGNING_SCHEMA);
    try {
      sql.exec(`SELECT wrap_format FROM signing_keys LIMIT 0`);
    } catch {
      // A table from before the key domains: its rows are format 1 (the column default).
      sql.exec(`ALTER TABLE signing_keys ADD COLUMN wrap_format INTEGER NOT NULL DEFAULT ${WRAP_FORMAT_LEGACY}`);
    }
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
    if (this.#imported?.kid !== row.kid) this.#imported = { kid: row.kid, key: await this.#privateKey(row) };
    const key = this.#imported.key;
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
    const wrapped = await wrapKeyIn("signing-key", this.#master, SIGNING_OWNER, version, sealingKey);
    const sealed = await seal(sealingKey, new TextEncoder().encode(JSON.stringify(await exportJWK(privateKey))), kid);
    sealingKey.fill(0);
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
    this.#sql.exec(`UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL`, now);
    this.#sql.exec(
      `INSERT INTO signing_keys (kid, version, epoch, wrapped_key, sealed_jwk, public_jwk, created_at, retired_at,
         wrap_format)
       VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ${WRAP_FORMAT_DOMAIN})`,
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
      if (row.epoch === this.#master.current && row.wrap_format === WRAP_FORMAT_DOMAIN) continue;
      const key = await this.#unwrapSealingKey(row);
      await this.#storeWrapped(row, key);
      key.fill(0);
      count++;
    }
    return count;
  }

  #active(): KeyRow | undefined {
    return this.#sql.exec<KeyRow>(`SELECT * FROM signing_keys WHERE retired_at IS NULL`).toArray()[0];
  }

  /** The row's sealing key, in whichever wrapping format the row has. */
  async #unwrapSealingKey(row: KeyRow): Promise<Uint8Array> {
    const record: Omit<WrappedKey, "tenant"> = {
      version: row.version,
      epoch: row.epoch,
      wrapped: new Uint8Array(row.wrapped_key),
    };
    if (row.wrap_format === WRAP_FORMAT_DOMAIN) {
      return unwrapKeyIn("signing-key", this.#master, { ...record, tenant: SIGNING_OWNER });
    }
    if (row.wrap_format === WRAP_FORMAT_LEGACY) {
      return unwrapKeyIn("data-key", this.#master, { ...record, tenant: LEGACY_WRAP_TENANT });
    }
    throw new KbError("ERR_KEY_UNAVAILABLE", "key unavailable");
  }

  /** Rewraps a row's sealing key in the signing-key domain under the current epoch (format 2). */
  async #storeWrapped(row: KeyRow, sealingKey: Uint8Array): Promise<void> {
    const wrapped = await wrapKeyIn("signing-key", this.#master, SIGNING_OWNER, row.version, sealingKey);
    // Guarded: only the row as it was read is rewritten (a concurrent rewrap of the same row is a no-op).
    this.#sql.exec(
      `UPDATE signing_keys SET epoch = ?, wrapped_key = ?, wrap_format = ${WRAP_FORMAT_DOMAIN}
       WHERE kid = ? AND epoch = ? AND wrap_format = ?`,
      wrapped.epoch,
      wrapped.wrapped,
      row.kid,
      row.epoch,
      row.wrap_format,
    );
  }

  async #privateKey(row: KeyRow): Promise<CryptoKey> {
    const sealingKey = await this.#unwrapSealingKey(row);
    if (row.wrap_format === WRAP_FORMAT_LEGACY) await this.#storeWrapped(row, sealingKey);
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
