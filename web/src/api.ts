// The adapter's API as the console uses it: the token, what it may do, the node watch.

const TOKEN_KEY = "frp-adapter.token";
const WS_PROTOCOL = "frp-adapter.v1";

export type Node = {
  metadata: { name: string; labels?: Record<string, string> };
  spec: { services: { frpServerIpAddress: string; proxyPort: string; hostName?: string }[] };
  status: {
    services: { status: string }[];
    reason: string;
    lastTransitionTime: string;
    lastHeartbeatTime?: string;
    frpcVersion?: string;
    clientAddress?: string;
    sshHostKey?: string;
  };
};

export type Access = {
  user: string;
  may: {
    list: boolean;
    shell: boolean;
    exec: boolean;
    files: boolean;
    sessions: boolean;
    audit: boolean;
  };
};

// Kept for this tab only: never in a URL or a cookie. A tab of this console opened from
// another (a shell in a tab of its own) is handed the token over the browser's channel
// between this origin's tabs; signing out in one signs every tab out.
const tabs = new BroadcastChannel("frp-adapter.session");
const HANDOVER_MS = 300;

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (value: string): void => sessionStorage.setItem(TOKEN_KEY, value),
  clear: (): void => {
    sessionStorage.removeItem(TOKEN_KEY);
    tabs.postMessage({ type: "signed out" });
  },
};

tabs.onmessage = (event: MessageEvent) => {
  const held = token.get();
  if (event.data?.type === "ask" && held) tabs.postMessage({ type: "token", token: held });
  if (event.data?.type === "signed out" && held) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  }
};

// The token of another signed-in tab of this console, or null when none answers soon.
export function tokenFromAnotherTab(): Promise<string | null> {
  return new Promise((resolve) => {
    const asking = new BroadcastChannel("frp-adapter.session");
    const done = (value: string | null) => {
      clearTimeout(timer);
      asking.close();
      resolve(value);
    };
    const timer = setTimeout(() => done(null), HANDOVER_MS);
    asking.onmessage = (event: MessageEvent) => {
      if (event.data?.type === "token" && typeof event.data.token === "string") {
        done(event.data.token);
      }
    };
    asking.postMessage({ type: "ask" });
  });
}

export function headers(): Record<string, string> {
  const value = token.get();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

export async function access(): Promise<Access | string> {
  const answer = await fetch("/api/v1/access", { headers: headers() });
  const body = await answer.json();
  return answer.ok ? (body as Access) : `${body.error}: ${body.details}`;
}

// A browser cannot put a header on a WebSocket: the token travels as a subprotocol.
export function shellSocket(name: string, cols: number, rows: number): WebSocket {
  const encoded = btoa(token.get() ?? "")
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/v1/nodes/${name}/shell?cols=${cols}&rows=${rows}`;
  return new WebSocket(url, [WS_PROTOCOL, `base64url.bearer.authorization.k8s.io.${encoded}`]);
}

// A WebSocket refused before its upgrade tells the page only 1006: the same request,
// made plainly, answers why (offline, unknown, forbidden, frps unreachable).
export async function shellRefusal(name: string): Promise<string> {
  try {
    const answer = await fetch(`/api/v1/nodes/${name}/shell`, { headers: headers() });
    const body = await answer.json();
    return `${body.error}: ${body.details}`;
  } catch {
    return "the adapter cannot be reached";
  }
}

// NDJSON lines of a streamed answer, as they arrive.
export async function* lines(answer: Response): AsyncGenerator<unknown> {
  if (!answer.body) return;
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    const parts = pending.split("\n");
    pending = parts.pop() ?? "";
    for (const part of parts) if (part.trim()) yield JSON.parse(part);
  }
}

type WatchEvent = { type: string; object: Node };

// Every node the selectors `chosen()` gives choose, then each change; after an error or
// the end of the stream, from scratch, and at once when `restarted()`'s signal aborts (a
// new selector). `onListed` once every node is in (the first BOOKMARK); `onRefused` with
// the adapter's words when it refuses the selector (then nothing until the next restart).
export async function watchNodes(
  chosen: () => Record<string, string>,
  restarted: () => AbortSignal,
  onReset: () => void,
  onEvent: (type: string, node: Node) => void,
  onListed: () => void,
  onRefused: (why: string) => void,
): Promise<never> {
  for (;;) {
    const signal = restarted();
    const query = new URLSearchParams({ watch: "true", ...chosen() });
    try {
      const answer = await fetch(`/api/v1/nodes?${query}`, { headers: headers(), signal });
      if (answer.status === 400) {
        const refusal = await answer.json();
        onRefused(`${refusal.error}: ${refusal.details}`);
        await new Promise((resume) => signal.addEventListener("abort", resume));
        continue;
      }
      if (answer.ok) {
        onReset();
        for await (const line of lines(answer)) {
          const event = line as WatchEvent;
          if (event.type === "ADDED" || event.type === "MODIFIED" || event.type === "DELETED") {
            onEvent(event.type, event.object);
          } else if (event.type === "BOOKMARK") {
            onListed();
          }
        }
      }
    } catch {
      // the adapter restarted, the network blinked, or the selector changed: watch again
    }
    if (!signal.aborted) await new Promise((resume) => setTimeout(resume, 1000));
  }
}

// The adapter's details in words: a sentence, or each field with what is wrong with it.
export function inWords(details: unknown): string {
  if (typeof details === "string") return details;
  if (Array.isArray(details)) return details.map(inWords).join("; ");
  if (details && typeof details === "object")
    return Object.entries(details)
      .map(([field, said]) => `${field}: ${inWords(said)}`)
      .join("; ");
  return String(details);
}
