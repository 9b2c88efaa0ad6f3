/**
 * FeedObject: the base of every object that holds a feed (UserQuota, Device, DevicePool,
 * AdminFeed). The runtime wakes the object for a hibernated socket's message, close or error;
 * all three go to the object's FeedHub, and `socketClosed` lets an object react to a close.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import type { FeedHub } from "../src/feed/hub";

export abstract class FeedObject extends DurableObject<Env> {
  protected abstract readonly hub: FeedHub;

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
