// What every test needs: the running server (started by scripts/typescript.sh) and a fresh
// tenant on the enterprise tier, with its first key (every scope).
import { randomBytes } from "node:crypto";
import { createPlinthClient, unwrap } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with scripts/typescript.sh`);
  return value;
}

/** The server's address, such as `http://127.0.0.1:41234`. */
export const baseUrl = env("PLINTH_URL");

/** A name no other test run uses. */
export function unique(prefix: string): string {
  return `${prefix}${randomBytes(5).toString("hex")}`;
}

/** A new tenant and its first API key. */
export async function newTenant(): Promise<{ id: string; slug: string; apiKey: string }> {
  const admin = createPlinthClient({ baseUrl, apiKey: env("PLINTH_ADMIN_KEY") });
  const tenant = await unwrap(admin.POST("/v1/tenants", { body: { name: unique("TS "), tier: "enterprise" } }));
  return { id: tenant.id, slug: tenant.slug, apiKey: tenant.api_key };
}
