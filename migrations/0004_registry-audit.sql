CREATE TABLE `audit_log` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`target` text NOT NULL,
	`change` text NOT NULL,
	`request_id` text
);
--> statement-breakpoint
CREATE INDEX `audit_target_seq` ON `audit_log` (`target`,`seq`);--> statement-breakpoint
CREATE TABLE `devices` (
	`device_id` text PRIMARY KEY NOT NULL,
	`pool` text NOT NULL,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `devices_pool` ON `devices` (`pool`);--> statement-breakpoint
CREATE TABLE `token_revocations` (
	`user_id` text PRIMARY KEY NOT NULL,
	`not_before` integer NOT NULL,
	`actor` text NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `ledger` ADD `actor` text;