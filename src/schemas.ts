/**
 * Request and response schemas (zod), shared by validation and the OpenAPI document: one file
 * per concern in src/schemas/, all exported from here (the building blocks of src/schemas/parts.ts
 * are not).
 */
export * from "./schemas/common";
export * from "./schemas/allocations";
export * from "./schemas/admin";
export * from "./schemas/quotas";
export * from "./schemas/billing";
export * from "./schemas/feed";
export * from "./schemas/events";
export * from "./schemas/batch";
export * from "./schemas/queue";
export * from "./schemas/audit";
export * from "./schemas/catalogue";
export * from "./schemas/access";
export * from "./schemas/fleet";
