/**
 * "This month": a small chart of the month's use and spend, drawn as inline SVG from the usage
 * records the usage card read (no chart library). Bars are device-hours per day; the line is the
 * spend so far. Days are UTC days, as the API's month is the UTC month.
 */
import { card, h } from "./dom";
import { fmtDuration, fmtMoney } from "./format";
import type { MonthUsage } from "./user-usage";

const SVG = "http://www.w3.org/2000/svg";
const DAY = 86_400_000;
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
// The drawing's own units (the SVG scales to its card): room on the left for hours, on the right for money.
const W = 360;
const H = 160;
const M = { left: 38, right: 50, top: 10, bottom: 22 };

function s(tag: string, attrs: Record<string, string | number>, ...children: (SVGElement | string)[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** A round number at or above `v` (1, 2, 2.5 or 5 times a power of ten), for an axis's top. */
function niceCeil(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 2.5, 5, 10].find((f) => f * p >= v * 0.9999) ?? 10) * p;
}

/** The bars' unit: hours once a day reaches one, else minutes (a short month would read 0.001 h). */
function unitFor(maxHours: number): { per: number; name: string } {
  return maxHours >= 1 ? { per: 1, name: "h" } : { per: 60, name: "min" };
}

export class MonthChart {
  readonly el: HTMLElement;
  private readonly figure: HTMLElement;

  constructor() {
    this.figure = h("figure", { class: "chart", id: "month-chart" }, h("p", { class: "muted" }, "Loading…"));
    this.el = card("This month", { id: "month-card" }, this.figure);
  }

  show(m: MonthUsage): void {
    const from = Date.parse(m.from);
    const month = new Date(from);
    const days = new Date(Date.UTC(month.getUTCFullYear(), month.getUTCMonth() + 1, 0)).getUTCDate();
    const hours = new Array<number>(days).fill(0);
    const spend = new Array<number>(days).fill(0);
    for (const u of m.items) {
      const i = Math.min(days - 1, Math.max(0, Math.floor((Date.parse(u.releasedAt) - from) / DAY)));
      hours[i]! += u.durationSeconds / 3600;
      spend[i]! += u.chargeMinor ?? 0;
    }
    // The spend line runs up to today (the report's end), not into days still to come.
    const today = Math.min(days - 1, Math.max(0, Math.floor((Date.parse(m.to) - 1 - from) / DAY)));
    const cumulative: number[] = [];
    spend.forEach((x, i) => cumulative.push((cumulative[i - 1] ?? 0) + x));
    const spent = cumulative[today] ?? 0;
    const unit = unitFor(Math.max(...hours));
    const amount = (hrs: number) => `${+(hrs * unit.per).toFixed(1)} ${unit.name}`;
    const topH = niceCeil(Math.max(1, Math.max(...hours) * unit.per)) / unit.per;
    // Headroom above the spend so far, so the line does not run along the top edge.
    const topS = niceCeil(spent * 1.15);
    const pw = W - M.left - M.right;
    const ph = H - M.top - M.bottom;
    const bw = pw / days;
    const y = (v: number, top: number) => M.top + ph - (v / top) * ph;
    const monthName = `${MONTHS[month.getUTCMonth()]} ${month.getUTCFullYear()}`;

    const bars = hours.map((x, i) =>
      s(
        "rect",
        {
          class: "bar",
          "data-day": i + 1,
          "data-hours": +x.toFixed(4),
          x: M.left + i * bw + bw * 0.15,
          // A day with any use shows at least a sliver.
          y: Math.min(y(x, topH), x > 0 ? M.top + ph - 1.5 : Infinity),
          width: bw * 0.7,
          height: Math.max(M.top + ph - y(x, topH), x > 0 ? 1.5 : 0),
        },
        s("title", {}, `${i + 1} ${monthName}: ${amount(x)}, ${fmtMoney(spend[i], m.currency)}`),
      ),
    );
    // The spend at the end of each day, from nothing at the month's start: a day's charges rise across that day.
    const points = [`${M.left},${y(0, topS)}`]
      .concat(cumulative.slice(0, today + 1).map((v, i) => `${(M.left + (i + 1) * bw).toFixed(1)},${y(v, topS).toFixed(1)}`))
      .join(" ");
    const label = (x: number, yy: number, text: string, anchor: "start" | "middle" | "end", cls = "") =>
      s("text", { x, y: yy, "text-anchor": anchor, class: `axis ${cls}`.trim() }, text);
    const xTicks = [1, 8, 15, 22, days].map((d) => label(M.left + (d - 0.5) * bw, H - 6, String(d), "middle"));
    const summary =
      `${fmtDuration(m.totals.durationSeconds)} of device time and ${fmtMoney(m.totals.chargesMinor, m.currency)} spent in ${monthName} ` +
      `(${m.totals.records} record(s); days in UTC)`;

    const svg = s(
      "svg",
      {
        viewBox: `0 0 ${W} ${H}`,
        role: "img",
        "aria-label": summary,
        id: "usage-chart",
        "data-days": days,
        "data-hours": +hours.reduce((a, b) => a + b, 0).toFixed(4),
        "data-spend-minor": spent,
      },
      s("title", {}, summary),
      s("line", { class: "grid-line", x1: M.left, x2: W - M.right, y1: M.top, y2: M.top }),
      s("line", { class: "base-line", x1: M.left, x2: W - M.right, y1: M.top + ph, y2: M.top + ph }),
      ...bars,
      s("polyline", { class: "spend", points, fill: "none" }),
      s("circle", { class: "spend-dot", cx: M.left + (today + 1) * bw, cy: y(spent, topS), r: 2.5 }),
      label(M.left - 4, M.top + 4, amount(topH), "end", "hours"),
      label(M.left - 4, M.top + ph, "0", "end", "hours"),
      label(W - M.right + 4, M.top + 4, fmtMoney(topS, m.currency), "start", "money"),
      label(W - M.right + 4, M.top + ph, fmtMoney(0, m.currency), "start", "money"),
      ...xTicks,
    );
    this.figure.replaceChildren(
      svg,
      h(
        "figcaption",
        { class: "small" },
        h("span", { class: "key key-hours" }, `device time per day (${unit.name})`),
        h("span", { class: "key key-spend" }, "spend so far"),
        h("span", { class: "muted", id: "month-summary" }, summary, m.partial ? " — the chart shows the newest 1,000 records" : ""),
      ),
    );
  }
}
