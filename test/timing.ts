/**
 * Test-only timing, shared by vitest.config.ts (the runtime's settings) and the tests (what they
 * wait for). No imports: the config loads it in Node, the tests in workerd.
 */

/**
 * A queue consumer's batch waits at most this long for more messages (wrangler.toml says 1 s).
 * The tests exhaust retries on purpose (11 attempts on the usage queue, then 11 on its dead-letter
 * queue), each attempt a batch: at 1 s a record takes about 22 s to be dropped, at 0.1 s about 2 s.
 * What the tests check (at-least-once delivery, one booking per record) does not depend on it.
 */
export const QUEUE_BATCH_TIMEOUT_S = 0.1;

/**
 * How long a test waits, after what it expects has been booked, for a redelivery that must not
 * change anything: ten batch timeouts (each retry waits for a batch) and room for the consumer's
 * own work. Before the shorter test batches these waits were 2–2.5 s, about two batches.
 */
export const QUEUE_QUIET_MS = 10 * QUEUE_BATCH_TIMEOUT_S * 1000;
