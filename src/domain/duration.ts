/**
 * Durations as requests give them: whole minutes, or seconds through the test-only switch
 * (ALLOW_SHORT_DURATIONS), which wins when present.
 */

/** The duration in milliseconds. */
export const durationMsOf = (minutes: number, seconds?: number): number => (seconds !== undefined ? seconds * 1000 : minutes * 60_000);

/** The whole minutes it stands for (what views and bookings show). */
export const minutesOf = (minutes: number, seconds?: number): number => (seconds !== undefined ? Math.ceil(seconds / 60) : minutes);
