import { createApp } from "./http/app";

export { TenantServer } from "./tenant/tenant-server";

export default createApp();
