import { env } from "cloudflare:workers";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { LocalVectorIndex } from "../../src/kb/local-index";
import { VectorSealer } from "../../src/kb/vector-pages";

/** A LocalVectorIndex over a tenant object's SQLite, sealing under that tenant's keyring (shared if given). */
export function localIndex(
  sql: SqlStorage,
  tenant: string,
  dimensions: number,
  keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env)),
): LocalVectorIndex {
  return new LocalVectorIndex(sql, tenant, dimensions, new VectorSealer(keyring, tenant));
}
