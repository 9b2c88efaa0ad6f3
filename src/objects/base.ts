/**
 * ServiceObject: the base of every Durable Object of the service. It owns the platform's entry
 * points, and each object fills in hooks:
 * - set-up: the subclass's constructor ends with `start(migrations)`, which applies them, starts
 *   the feed and re-arms the alarm for what is due, before any request is let in;
 * - `alarm`: the object's `schedule` (see ./schedule.ts) runs, one run at a time (`runAlarm`);
 *   an object changes what the alarm does by overriding `onAlarm`;
 * - `fetch`: a feed socket; the Worker checked the ticket, the object says who may open it
 *   (`openFeed`);
 * - WebSocket messages, closes and errors go to the feed (`hub`); `socketClosed` lets an object
 *   react to a close.
 * Storage (`sql`) and the alarm's time (`clock`) are composed helpers of every object.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { feedRequestOf, type FeedHub, type FeedRequest } from "./feed";
import { AlarmClock } from "./clock";
import type { Schedule } from "./schedule";
import { Sql, type Migration } from "./sql";
import { countAlarm, metered, meterStorage } from "../meter";

export abstract class ServiceObject extends DurableObject<Env> {
  protected readonly sql: Sql;
  protected readonly clock: AlarmClock;
  /** The object's feed: its event log and sockets. */
  protected abstract readonly hub: FeedHub;
  /** What the alarm runs (an object without an alarm has none). */
  protected readonly schedule: Schedule | null = null;
  private alarmRun: Promise<void> | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    // Counted for the benchmarks when METER is on (src/meter.ts); the same env otherwise.
    super(ctx, metered(env));
    meterStorage(ctx.storage, new.target.name);
    this.sql = new Sql(ctx.storage);
    this.clock = new AlarmClock(ctx.storage);
  }

  /** The last step of a subclass's constructor: schema, feed and alarm, before any request runs. */
  protected start(migrations: readonly Migration[]): void {
    void this.ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(migrations);
      this.hub.start();
      if (this.schedule) {
        await this.clock.load();
        // A due row may have outlived its alarm (an alarm lost in a restart).
        await this.schedule.rearm();
      }
    });
  }

  override async alarm(): Promise<void> {
    countAlarm();
    this.clock.fired();
    await this.runAlarm();
  }

  /** The alarm's work, one run at a time: a second caller waits for the running one. */
  protected runAlarm(): Promise<void> {
    if (!this.alarmRun)
      this.alarmRun = this.onAlarm().finally(() => {
        this.alarmRun = null;
      });
    return this.alarmRun;
  }

  /** By default the schedule's alarm: the due tasks, the outbox, the next alarm. */
  protected async onAlarm(): Promise<void> {
    await this.schedule?.alarm();
  }

  /** A feed socket (the Worker checked the ticket; who may watch and single use are checked by the object). */
  override async fetch(request: Request): Promise<Response> {
    const f = feedRequestOf(request);
    return f instanceof Response ? f : this.openFeed(f);
  }

  protected abstract openFeed(f: FeedRequest): Response | Promise<Response>;

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.hub.onMessage(ws, message);
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.hub.onClose(ws, code);
    await this.socketClosed(ws);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.hub.onClose(ws, 1011);
    await this.socketClosed(ws);
  }

  /** After one of the object's sockets closed (or failed). */
  protected async socketClosed(_ws: WebSocket): Promise<void> {}
}
