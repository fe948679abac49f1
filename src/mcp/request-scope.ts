import type { Identity } from "../auth/identity";
import type { HandleCodec } from "./handles";

/**
 * Everything a tool may use while serving one request. It is built by the tenant object for the verified caller
 * and passed to the server factory; tools get no other way to reach storage or identity.
 */
export interface RequestScope {
  readonly identity: Identity;
  readonly era: "legacy" | "modern";
  readonly protocolVersion: string;
  readonly requestId: string;
  readonly handles: HandleCodec;
}
