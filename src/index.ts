import { createApp } from "./http/app";

export { TenantRegistry } from "./tenant/registry";
export { TenantServer } from "./tenant/tenant-server";

export default createApp();
