-- The default pricing plan. Rates are micro-units of a cent per second:
--   base 2500 = 9.00 cents per device-hour, cpu 1000 = 3.60 cents per core-hour,
--   memory 500 = 1.80 cents per GB-hour, storage 10 = 0.036 cents per GB-hour.
-- A new account starts with 10.00 USD; billing.low_balance fires below 2.00 USD.
INSERT INTO `pricing_plans` (`plan_id`, `name`, `currency`, `base_per_second`, `cpu_core_per_second`, `memory_gb_per_second`, `storage_gb_per_second`, `starting_credit`, `low_balance_threshold`, `created_at`, `updated_at`)
VALUES ('standard', 'Standard', 'USD', 2500, 1000, 500, 10, 1000, 200, 0, 0)
ON CONFLICT (`plan_id`) DO NOTHING;
