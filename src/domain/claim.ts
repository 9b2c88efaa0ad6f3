/** Step 2 of the allocation protocol, as a request: the claim a device is asked for once step 1 has held the quota. */
import type { AllocateInput, ClaimRequest, HandOverBegun } from "../contracts";

export const claimRequest = (input: AllocateInput, begun: HandOverBegun): ClaimRequest => ({
  allocationId: begun.allocationId,
  userId: input.userId,
  pool: input.pool,
  min: input.spec,
  max: begun.max,
  durationMs: begun.durationMs,
  via: input.via,
});
