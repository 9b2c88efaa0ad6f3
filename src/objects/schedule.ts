/**
 * The one schedule of an object's alarm. Each concern of the object names a task: when it is
 * next due, read from its own rows (the rows are the schedule, so it cannot drift from them),
 * and what runs when it is. The alarm runs the due tasks in order (each one's time read again
 * after the one before ran), delivers the outbox and re-arms at the earliest time left.
 */
import type { AlarmClock } from "./clock";

export interface Task {
  /** When the task is next due, as of `now` (null: nothing to do). */
  due(now: number): number | null;
  /** What runs when it is due; absent when another step of the alarm does that work (its time still arms the alarm). */
  run?(now: number): Promise<void> | void;
}

export interface ScheduleOptions {
  /** An outbox whose next item also arms the alarm, delivered after the tasks. */
  outbox?: { nextAt(): number | null; flush(): Promise<void> };
  /** After an alarm, a time still due (its work failed, e.g. another object did not answer) is tried again this much later, not at once. */
  retryMs?: number;
}

export class Schedule {
  constructor(
    private readonly clock: AlarmClock,
    private readonly tasks: readonly Task[],
    private readonly opts: ScheduleOptions = {},
  ) {}

  /** Runs the tasks that are due, in order. */
  async runDue(): Promise<void> {
    for (const task of this.tasks) {
      if (!task.run) continue;
      const now = Date.now();
      const at = task.due(now);
      if (at !== null && at <= now) await task.run(now);
    }
  }

  /** The alarm's work: the due tasks, the outbox, then the alarm for what is left. */
  async alarm(): Promise<void> {
    await this.runDue();
    await this.opts.outbox?.flush();
    await this.rearm(true);
  }

  /** Arms the alarm for the earliest due time (the clock only ever moves it earlier). */
  async rearm(afterAlarm = false): Promise<void> {
    const now = Date.now();
    const retry = this.opts.retryMs;
    const times = [...this.tasks.map((t) => t.due(now)), this.opts.outbox?.nextAt() ?? null]
      .filter((x): x is number => x !== null)
      .map((x) => (afterAlarm && retry !== undefined && x <= now ? now + retry : x));
    if (times.length) await this.clock.arm(Math.min(...times));
  }
}

/** The earliest of some times (null: none). */
export function earliest(...times: (number | null | undefined)[]): number | null {
  const t = times.filter((x): x is number => x !== null && x !== undefined);
  return t.length ? Math.min(...t) : null;
}
