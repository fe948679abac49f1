import { createApp } from "./http/app";

export { ExtractionRun } from "./extract/extraction-run";
export { TenantRegistry } from "./tenant/registry";
export { TenantServer } from "./tenant/tenant-server";

export default createApp();
