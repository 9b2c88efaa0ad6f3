/**
 * The object's one alarm, with its time kept in memory. Here an alarm write costs about as much
 * as a storage commit, and an awaited `getAlarm()` between a write and `setAlarm()` splits one
 * commit into two; so the time is read once per instance (`load()`, in the constructor) and the
 * alarm is only ever moved earlier. An alarm that fires early finds nothing due and re-arms.
 */
import { countCommit } from "../meter";
export class AlarmClock {
  /** undefined: not read yet; null: no alarm. */
  private known: number | null | undefined = undefined;

  constructor(private readonly storage: DurableObjectStorage) {}

  /** Reads the stored alarm (call inside blockConcurrencyWhile, so arm() never has to await a read). */
  async load(): Promise<void> {
    this.known = await this.storage.getAlarm();
  }

  /** Call first thing in alarm(): the alarm that fired is gone unless the handler sets a new one. */
  fired(): void {
    this.known = null;
  }

  /** The alarm time as this instance knows it (null: none; undefined: unknown). */
  get at(): number | null | undefined {
    return this.known;
  }

  /** Sets the alarm to `at` unless one at or before `at` is already set. */
  async arm(at: number | null): Promise<void> {
    if (at === null) return;
    if (this.known === undefined) this.known = await this.storage.getAlarm();
    if (this.known !== null && this.known <= at) return;
    this.known = at;
    countCommit(this.storage);
    await this.storage.setAlarm(at);
  }
}
