CREATE TABLE `pools` (
	`name` text PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `usage_records` (
	`allocation_id` text PRIMARY KEY NOT NULL,
	`device_id` text NOT NULL,
	`user_id` text NOT NULL,
	`tenant_id` text,
	`duration_seconds` integer NOT NULL,
	`cpu_cores` integer NOT NULL,
	`memory_mb` integer NOT NULL,
	`storage_mb` integer NOT NULL,
	`allocated_at` integer NOT NULL,
	`released_at` integer NOT NULL,
	`reason` text NOT NULL,
	`received_at` integer NOT NULL
);
