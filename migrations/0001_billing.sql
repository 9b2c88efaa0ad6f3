CREATE TABLE `accounts` (
	`user_id` text PRIMARY KEY NOT NULL,
	`plan_id` text NOT NULL,
	`balance` integer NOT NULL,
	`last_seq` integer NOT NULL,
	`reconciled_through` integer NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `failed_usage` (
	`allocation_id` text PRIMARY KEY NOT NULL,
	`user_id` text,
	`record` text NOT NULL,
	`error` text NOT NULL,
	`attempts` integer NOT NULL,
	`status` text NOT NULL,
	`first_failed_at` integer NOT NULL,
	`last_failed_at` integer NOT NULL,
	`resolved_at` integer
);
--> statement-breakpoint
CREATE INDEX `failed_usage_status` ON `failed_usage` (`status`,`last_failed_at`);--> statement-breakpoint
CREATE TABLE `invoices` (
	`invoice_id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`period` text NOT NULL,
	`period_start` integer NOT NULL,
	`period_end` integer NOT NULL,
	`currency` text NOT NULL,
	`opening_balance` integer NOT NULL,
	`charges` integer NOT NULL,
	`credits` integer NOT NULL,
	`debits` integer NOT NULL,
	`closing_balance` integer NOT NULL,
	`usage_count` integer NOT NULL,
	`usage_seconds` integer NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `invoices_user_period` ON `invoices` (`user_id`,`period`);--> statement-breakpoint
CREATE TABLE `ledger` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`entry_id` text NOT NULL,
	`user_id` text NOT NULL,
	`kind` text NOT NULL,
	`amount` integer NOT NULL,
	`balance_after` integer NOT NULL,
	`allocation_id` text,
	`plan_id` text,
	`reference` text,
	`memo` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `ledger_entry_id_unique` ON `ledger` (`entry_id`);--> statement-breakpoint
CREATE INDEX `ledger_user_seq` ON `ledger` (`user_id`,`seq`);--> statement-breakpoint
CREATE INDEX `ledger_user_created` ON `ledger` (`user_id`,`created_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `ledger_allocation` ON `ledger` (`allocation_id`);--> statement-breakpoint
CREATE TABLE `notifications` (
	`key` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`type` text NOT NULL,
	`data` text NOT NULL,
	`created_at` integer NOT NULL,
	`delivered_at` integer,
	`attempts` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE INDEX `notifications_pending` ON `notifications` (`delivered_at`,`created_at`);--> statement-breakpoint
CREATE TABLE `pricing_plans` (
	`plan_id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`currency` text NOT NULL,
	`base_per_second` integer NOT NULL,
	`cpu_core_per_second` integer NOT NULL,
	`memory_gb_per_second` integer NOT NULL,
	`storage_gb_per_second` integer NOT NULL,
	`starting_credit` integer NOT NULL,
	`low_balance_threshold` integer NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `usage_records` ADD `source` text DEFAULT 'device' NOT NULL;--> statement-breakpoint
CREATE INDEX `usage_user_released` ON `usage_records` (`user_id`,`released_at`);--> statement-breakpoint
CREATE INDEX `usage_device_released` ON `usage_records` (`device_id`,`released_at`);