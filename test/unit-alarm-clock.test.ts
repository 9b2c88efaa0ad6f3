/**
 * AlarmClock (src/objects/clock.ts) on a real Durable Object's storage: the alarm time is read once,
 * kept in memory, only ever moved earlier, and forgotten when the alarm fires.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { AlarmClock } from "../src/objects/clock";
import { uid } from "./helpers";

describe("AlarmClock", () => {
  it("sets, keeps the earliest, and is told when the alarm fired", async () => {
    // A user object with no allocations arms nothing of its own.
    const stub = env.USER_QUOTA.getByName(uid("clock"));
    await runInDurableObject(stub, async (_instance, state) => {
      await state.storage.deleteAlarm();
      const clock = new AlarmClock(state.storage);
      await clock.load();
      expect(clock.at).toBeNull();

      const t = Date.now() + 600_000;
      await clock.arm(t);
      expect(await state.storage.getAlarm()).toBe(t);
      await clock.arm(t + 1_000); // later: stays
      expect(await state.storage.getAlarm()).toBe(t);
      await clock.arm(null); // nothing due: stays
      expect(await state.storage.getAlarm()).toBe(t);
      await clock.arm(t - 1_000); // earlier: moves
      expect(await state.storage.getAlarm()).toBe(t - 1_000);
      expect(clock.at).toBe(t - 1_000);

      // Another instance (a restart) reads what is stored.
      const again = new AlarmClock(state.storage);
      await again.load();
      expect(again.at).toBe(t - 1_000);

      // Once the alarm fired, a later time is set again.
      clock.fired();
      await clock.arm(t + 5_000);
      expect(await state.storage.getAlarm()).toBe(t + 5_000);
      await state.storage.deleteAlarm();
    });
  });

  it("without load(), the first arm reads the stored alarm before deciding", async () => {
    const stub = env.USER_QUOTA.getByName(uid("clock-cold"));
    await runInDurableObject(stub, async (_instance, state) => {
      const t = Date.now() + 600_000;
      await state.storage.setAlarm(t);
      const clock = new AlarmClock(state.storage);
      expect(clock.at).toBeUndefined();
      await clock.arm(t + 1_000);
      expect(await state.storage.getAlarm()).toBe(t);
      await state.storage.deleteAlarm();
    });
  });
});
