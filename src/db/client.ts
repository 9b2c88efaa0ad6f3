/** The D1 database through drizzle (schema in ./schema.ts). */
import { drizzle, type DrizzleD1Database } from "drizzle-orm/d1";
import type { Env } from "../env";

export type Db = DrizzleD1Database<Record<string, never>>;
export const dbOf = (env: Pick<Env, "DB">): Db => drizzle(env.DB);
