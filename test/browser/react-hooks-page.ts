/**
 * The page the React hooks' browser test renders (bundled by the test with esbuild): one panel
 * per hook, configured from the URL fragment, in StrictMode. Each panel shows its connection, its
 * hook's derived values and latest events as data attributes, and every callback call is logged
 * on the page and in `window.hookCalls` for the test to read.
 */
import { createElement as h, StrictMode, useState, type ReactNode } from "react";
import { createRoot } from "react-dom/client";
import {
  RealtimeProvider,
  useRealtimeApp,
  useRealtimeBilling,
  useRealtimeDevice,
  useRealtimeQuota,
  type FeedEventsResult,
  type RealtimeAppOptions,
  type RealtimeBillingOptions,
  type RealtimeDeviceOptions,
  type RealtimeQuotaOptions,
} from "../../src/react";

/** One hook on the page: which, the panel's id (and the name its calls are logged under), and its filters. */
export type PanelConfig =
  | { hook: "quota"; id: string; options: Pick<RealtimeQuotaOptions, "userId"> }
  | { hook: "billing"; id: string; options: Pick<RealtimeBillingOptions, "userId" | "feed"> }
  | { hook: "app"; id: string; options: Pick<RealtimeAppOptions, "userId" | "deviceId"> }
  | { hook: "device"; id: string; options: Pick<RealtimeDeviceOptions, "userId" | "deviceId" | "feed"> };

/** What the test asks for, in the fragment as JSON. */
export interface HooksPageConfig {
  token: string;
  panels: PanelConfig[];
  /** Mounted only when #mount-late is clicked: a hook that comes after its feed's events (it must share the socket and state). */
  late?: PanelConfig;
}

export interface HookCall {
  hook: string;
  callback: string;
  type: string;
  seq: number;
  userId: string;
  data: Record<string, unknown>;
}

declare global {
  interface Window {
    hookCalls: HookCall[];
  }
}

window.hookCalls = [];
const config = JSON.parse(decodeURIComponent(location.hash.slice(1))) as HooksPageConfig;

/** A callback that logs its call under the hook's and its own name. */
function logged(hook: string, callback: string, onLog: (c: HookCall) => void) {
  return (data: object, event: { type: string; seq: number; userId: string }) => {
    const call = { hook, callback, type: event.type, seq: event.seq, userId: event.userId, data: data as Record<string, unknown> };
    window.hookCalls.push(call);
    onLog(call);
  };
}

function useCalls(): [HookCall[], (c: HookCall) => void] {
  const [calls, setCalls] = useState<HookCall[]>([]);
  return [calls, (c) => setCalls((all) => [...all, c])];
}

function Panel(props: {
  id: string;
  title: string;
  result: FeedEventsResult<any>;
  values: Record<string, string | number | null | undefined>;
  calls: HookCall[];
}): ReactNode {
  const { result } = props;
  const attrs = Object.fromEntries(Object.entries(props.values).map(([k, v]) => [`data-${k}`, v ?? ""]));
  return h(
    "section",
    {
      id: props.id,
      className: "panel",
      "data-state": result.state,
      "data-hello": result.hello ? "1" : "0",
      "data-error": result.error?.code ?? "",
      "data-close": result.close?.code ?? "",
      ...attrs,
    },
    h("h2", null, props.title),
    h("p", { className: "conn" }, `${result.state}${result.connected ? " (connected)" : ""}${result.error ? ` ${result.error.code}` : ""}`),
    h(
      "dl",
      null,
      Object.entries(props.values).flatMap(([k, v]) => [h("dt", { key: `${k}-t` }, k), h("dd", { key: `${k}-d` }, String(v ?? "—"))]),
    ),
    h("h3", null, `latest events (${result.events.length})`),
    h(
      "ol",
      { className: "events" },
      result.events.map((e) =>
        h("li", { key: e.seq, "data-type": e.type, "data-seq": e.seq }, `#${e.seq} ${e.type} ${e.userId} ${summary(e.data)}`),
      ),
    ),
    h("h3", null, "callbacks"),
    h(
      "ol",
      { className: "calls" },
      props.calls.map((c) => h("li", { key: `${c.callback}-${c.seq}`, "data-callback": c.callback }, `${c.callback}(${summary(c.data)})`)),
    ),
  );
}

function summary(data: object): string {
  const text = JSON.stringify(data);
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

function QuotaPanel({ id, options }: { id: string; options: Pick<RealtimeQuotaOptions, "userId"> }): ReactNode {
  const [calls, log] = useCalls();
  const result = useRealtimeQuota({
    ...options,
    onQuotaUpdated: logged(id, "onQuotaUpdated", log),
    onQuotaExceeded: logged(id, "onQuotaExceeded", log),
    onQuotaRenewed: logged(id, "onQuotaRenewed", log),
  });
  const values = {
    tier: result.quota?.tier,
    status: result.quota?.status,
    "max-devices": result.quota?.limits.maxDevices,
    "valid-until": result.renewed?.validUntil,
    "exceeded-devices": result.exceeded?.usage.devices,
  };
  return h(Panel, { id, title: `useRealtimeQuota(${JSON.stringify(options)})`, result, values, calls });
}

function BillingPanel({ id, options }: { id: string; options: Pick<RealtimeBillingOptions, "userId" | "feed"> }): ReactNode {
  const [calls, log] = useCalls();
  const result = useRealtimeBilling({
    ...options,
    onLowBalance: logged(id, "onLowBalance", log),
    onPaymentSuccess: logged(id, "onPaymentSuccess", log),
    onInvoiceGenerated: logged(id, "onInvoiceGenerated", log),
    onCharged: logged(id, "onCharged", log),
  });
  const values = {
    balance: result.balance,
    "last-payment": result.lastPayment?.paymentId,
    "last-charge": result.lastCharge?.allocationId,
    "low-balance": result.lowBalance?.balance,
  };
  return h(Panel, { id, title: `useRealtimeBilling(${JSON.stringify(options)})`, result, values, calls });
}

function AppPanel({ id, options }: { id: string; options: Pick<RealtimeAppOptions, "userId" | "deviceId"> }): ReactNode {
  const [calls, log] = useCalls();
  const result = useRealtimeApp({
    ...options,
    onAppInstalled: logged(id, "onAppInstalled", log),
    onAppInstallFailed: logged(id, "onAppInstallFailed", log),
    onAppUpdated: logged(id, "onAppUpdated", log),
  });
  const values = {
    installed: result.lastInstalled?.appName,
    failed: result.lastInstallFailed?.reason,
    updated: result.lastUpdated ? `${result.lastUpdated.appName} ${result.lastUpdated.newVersion}` : null,
  };
  return h(Panel, { id, title: `useRealtimeApp(${JSON.stringify(options)})`, result, values, calls });
}

function DevicePanel({ id, options }: { id: string; options: Pick<RealtimeDeviceOptions, "userId" | "deviceId" | "feed"> }): ReactNode {
  const [calls, log] = useCalls();
  const result = useRealtimeDevice({
    ...options,
    onDeviceAllocated: logged(id, "onDeviceAllocated", log),
    onDeviceExtended: logged(id, "onDeviceExtended", log),
    onDeviceExpiring: logged(id, "onDeviceExpiring", log),
    onDeviceReleased: logged(id, "onDeviceReleased", log),
    onDeviceStatusChanged: logged(id, "onDeviceStatusChanged", log),
    onDeviceDraining: logged(id, "onDeviceDraining", log),
  });
  const values = {
    "device-status": result.device?.status,
    allocation: result.device?.allocation?.allocationId,
    holder: result.device?.allocation?.userId,
    "expires-at": result.device?.allocation?.expiresAt,
  };
  return h(Panel, { id, title: `useRealtimeDevice(${JSON.stringify(options)})`, result, values, calls });
}

function HookPanel({ panel }: { panel: PanelConfig }): ReactNode {
  switch (panel.hook) {
    case "quota":
      return h(QuotaPanel, panel);
    case "billing":
      return h(BillingPanel, panel);
    case "app":
      return h(AppPanel, panel);
    case "device":
      return h(DevicePanel, panel);
  }
}

function Late({ panel }: { panel: PanelConfig }): ReactNode {
  const [shown, setShown] = useState(false);
  if (shown) return h(HookPanel, { panel });
  return h("button", { id: "mount-late", onClick: () => setShown(true) }, `mount ${panel.id} now`);
}

function Page(): ReactNode {
  return h(
    RealtimeProvider,
    { token: config.token },
    h(
      "main",
      null,
      config.panels.map((panel) => h(HookPanel, { key: panel.id, panel })),
      config.late && h(Late, { panel: config.late }),
    ),
  );
}

createRoot(document.getElementById("root")!).render(h(StrictMode, null, h(Page)));
