/** D1 schema (drizzle), the one place it is defined; `npm run db:generate` writes migrations/. */
import { integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** Pools that exist (a pool comes into being with its first device). Off the allocation path. */
export const pools = sqliteTable("pools", {
  name: text("name").primaryKey(),
  createdAt: integer("created_at").notNull(),
});

/** One row per ended allocation; `allocation_id` unique makes redelivery harmless. */
export const usageRecords = sqliteTable("usage_records", {
  allocationId: text("allocation_id").primaryKey(),
  deviceId: text("device_id").notNull(),
  userId: text("user_id").notNull(),
  tenantId: text("tenant_id"),
  durationSeconds: integer("duration_seconds").notNull(),
  cpuCores: integer("cpu_cores").notNull(),
  memoryMB: integer("memory_mb").notNull(),
  storageMB: integer("storage_mb").notNull(),
  allocatedAt: integer("allocated_at").notNull(),
  releasedAt: integer("released_at").notNull(),
  reason: text("reason").notNull(),
  receivedAt: integer("received_at").notNull(),
});
