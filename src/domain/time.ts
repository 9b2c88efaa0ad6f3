/** Times as the API shows them: ISO 8601 in UTC. */
export const iso = (t: number): string => new Date(t).toISOString();
