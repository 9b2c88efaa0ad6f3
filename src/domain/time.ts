/** Times as the API shows them: ISO 8601 in UTC. */
export const iso = (t: number): string => new Date(t).toISOString();
/** The same for a time that may be unset. */
export const isoOrNull = (t: number | null | undefined): string | null => (t == null ? null : iso(t));
