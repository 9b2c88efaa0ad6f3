/** The typed client's fleet calls (src/client/api-client.ts): the query they send (a repeated `label`) and the bulk body. */
import { describe, expect, it } from "vitest";
import { ApiClient, ApiError } from "../../src/client/api-client";

function recording(answer: { status: number; body: unknown }) {
  const calls: { url: string; method?: string; body?: unknown }[] = [];
  const api = new ApiClient({
    baseUrl: "https://svc.test/",
    token: "t",
    fetch: async (url, init) => {
      calls.push({ url, method: init?.method, body: init?.body ? JSON.parse(String(init.body)) : undefined });
      return new Response(JSON.stringify(answer.body), { status: answer.status });
    },
  });
  return { api, calls };
}

describe("ApiClient fleet calls", () => {
  it("fleet() repeats `label` for each filter and leaves out what is not set", async () => {
    const { api, calls } = recording({ status: 200, body: { items: [], nextCursor: null } });
    await api.fleet({ pool: "p1", label: ["region:eu", "tier:gold"], q: "pixel 8", limit: 20, status: undefined });
    expect(calls[0]).toMatchObject({ method: "GET" });
    expect(calls[0]!.url).toBe("https://svc.test/admin/devices?pool=p1&label=region%3Aeu&label=tier%3Agold&q=pixel%208&limit=20");
    await api.fleet({ label: "rack:r-1", cursor: "n1.abc" });
    expect(calls[1]!.url).toBe("https://svc.test/admin/devices?label=rack%3Ar-1&cursor=n1.abc");
    await api.fleet();
    expect(calls[2]!.url).toBe("https://svc.test/admin/devices");
  });

  it("bulkDevices() posts {devices}; a refused body throws ApiError with its issues", async () => {
    const ok = recording({ status: 200, body: { results: [], created: 0, updated: 0, unchanged: 0, failed: 0 } });
    const devices = [{ deviceId: "d1", pool: "p", cpuCores: 1, memoryMB: 1, storageMB: 1 }];
    await ok.api.bulkDevices(devices);
    expect(ok.calls[0]).toEqual({ url: "https://svc.test/admin/devices/bulk", method: "POST", body: { devices } });
    const issues = [{ path: "devices.0.cpuCores", message: "Too small" }];
    const bad = recording({ status: 400, body: { error: { code: "VALIDATION_FAILED", message: "x", details: { issues } } } });
    const err = await bad.api.bulkDevices(devices).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 400, code: "VALIDATION_FAILED", details: { issues } });
  });
});
