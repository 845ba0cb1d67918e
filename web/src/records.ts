// What operators did, for admins: the recorded shell sessions (played back by
// asciinema-player, loaded only by its page) and the audit trail.

import { headers, inWords } from "./api";
import { ago, element, uniqueId } from "./dom";

type Session = { name: string; node: string; user: string; start: number; size: number };
type Action = {
  id: string;
  event: string;
  node: string;
  user: string;
  command?: string | null;
  start: string;
  end: string;
  result: string;
  exit_status?: number | null;
  bytes_in: number;
  bytes_out: number;
};

// Filters by node and user, kept in the page's address so a view can be passed on.
function filters(onChange: (query: URLSearchParams) => void): HTMLElement {
  const asked = new URLSearchParams(location.search);
  const node = element("input", {
    type: "search",
    id: "filter-node",
    placeholder: "node (NM name)",
  });
  const user = element("input", { type: "search", id: "filter-user", placeholder: "user" });
  node.value = asked.get("node") ?? "";
  user.value = asked.get("user") ?? "";
  node.setAttribute("aria-label", "only this node");
  user.setAttribute("aria-label", "only this user");
  const apply = () => {
    const query = new URLSearchParams();
    if (node.value.trim()) query.set("node", node.value.trim());
    if (user.value.trim()) query.set("user", user.value.trim());
    history.replaceState(null, "", `${location.pathname}${query.size ? `?${query}` : ""}`);
    onChange(query);
  };
  node.onchange = apply;
  user.onchange = apply;
  queueMicrotask(apply);
  return element("div", { className: "filters" }, node, user);
}

async function items<T>(path: string, query: URLSearchParams, said: HTMLElement): Promise<T[]> {
  const answer = await fetch(`${path}?${query}`, { headers: headers() });
  const body = await answer.json();
  if (!answer.ok) {
    said.textContent = `${body.error}: ${inWords(body.details)}`;
    return [];
  }
  said.textContent = body.items.length ? "" : "none yet";
  return body.items as T[];
}

export function showSessions(root: HTMLElement): void {
  recordsPage<Session>(
    root,
    "Sessions",
    "/api/v1/sessions",
    ["Started", "Node", "User", "Size"],
    (s) => {
      const started = new Date(s.start * 1000).toISOString();
      return element(
        "tr",
        {},
        element(
          "td",
          {},
          element("a", {
            href: `/ui/sessions/${s.name}`,
            textContent: ago(started),
            title: started,
          }),
        ),
        element("td", { textContent: uniqueId(s.node), title: s.node }),
        element("td", { textContent: s.user }),
        element("td", { textContent: `${Math.ceil(s.size / 1024)} KiB` }),
      );
    },
  );
}

export async function showPlayback(root: HTMLElement, name: string): Promise<void> {
  const said = element("p", { id: "records-said" });
  said.setAttribute("role", "status");
  const screen = element("div", { id: "player" });
  root.append(
    element(
      "div",
      { className: "records-page" },
      element("h1", { textContent: name }),
      element("a", { href: "/ui/sessions", textContent: "All sessions" }),
      said,
      screen,
    ),
  );
  const answer = await fetch(`/api/v1/sessions/${encodeURIComponent(name)}`, {
    headers: headers(),
  });
  if (!answer.ok) {
    const body = await answer.json();
    said.textContent = `${body.error}: ${inWords(body.details)}`;
    return;
  }
  const recording = await answer.text();
  const player = await import("./player");
  player.play(screen, recording);
}

export function showAudit(root: HTMLElement): void {
  const columns = ["When", "User", "Action", "Node", "What", "Result", "Bytes in / out"];
  recordsPage<Action>(root, "Audit", "/api/v1/audit", columns, (a) =>
    element(
      "tr",
      { className: a.result.startsWith("error") ? "failed" : "" },
      element("td", { textContent: ago(a.start), title: `${a.start} to ${a.end || "now"}` }),
      element("td", { textContent: a.user }),
      element("td", { textContent: a.event }),
      element("td", { textContent: uniqueId(a.node), title: a.node }),
      element("td", { className: "what", textContent: a.command ?? "", title: a.command ?? "" }),
      element("td", {
        textContent:
          a.exit_status === null || a.exit_status === undefined
            ? a.result
            : `${a.result} (${a.exit_status})`,
      }),
      element("td", { textContent: `${a.bytes_in} / ${a.bytes_out}` }),
    ),
  );
}

// A page of records from `path`: filters by node and user, one table row each.
function recordsPage<T>(
  root: HTMLElement,
  title: string,
  path: string,
  columns: string[],
  row: (record: T) => HTMLElement,
): void {
  const said = element("p", { id: "records-said" });
  said.setAttribute("role", "status");
  const table = element("table", { id: title.toLowerCase(), className: "records" });
  const page = element("div", { className: "records-page" }, element("h1", { textContent: title }));
  root.append(page);
  page.append(
    filters(async (query) => {
      const found = await items<T>(path, query, said);
      table.replaceChildren(
        element("tr", {}, ...columns.map((t) => element("th", { textContent: t }))),
        ...found.map(row),
      );
    }),
    said,
    table,
  );
}
