// The fleet: every node, filtered and sorted, live; and a command run on many of them.

import { type Access, headers, inWords, lines, type Node, watchNodes } from "./api";
import { ago, element, uniqueId } from "./dom";

const ROW_HEIGHT = 28;
// Changes are drawn at most this often: a fleet's first list arrives as thousands of
// events, and each redraw filters and sorts them all.
const REDRAW_MS = 200;

// `value` sorts and filters; `shown`, when given, is what a cell says and its hover.
type Column = {
  title: string;
  key: string; // its cells' class, `c-<key>`: a narrow window hides the least needed
  badge?: boolean; // its value shown as a coloured badge
  value: (node: Node) => string;
  shown?: (node: Node) => { text: string; title: string };
};

const COLUMNS: Column[] = [
  {
    title: "Node",
    key: "node",
    value: (n) => n.metadata.name,
    // The NMs' common prefix hid what tells nodes apart: the unique id.
    shown: (n) => ({ text: uniqueId(n.metadata.name), title: n.metadata.name }),
  },
  { title: "State", key: "state", badge: true, value: (n) => n.status.services[0]?.status ?? "" },
  {
    title: "Last heartbeat",
    key: "heartbeat",
    value: (n) => n.status.lastHeartbeatTime ?? "",
    shown: (n) => ({
      text: ago(n.status.lastHeartbeatTime),
      title: n.status.lastHeartbeatTime ? `${n.status.lastHeartbeatTime} UTC` : "",
    }),
  },
  {
    title: "Last change",
    key: "change",
    value: (n) => n.status.lastTransitionTime,
    // The reason first: a narrow cell cuts the end, and the time is on hover too.
    shown: (n) => ({
      text: `${n.status.reason} · ${ago(n.status.lastTransitionTime)}`,
      title: `${n.status.reason} at ${n.status.lastTransitionTime} UTC`,
    }),
  },
  { title: "frps", key: "frps", value: (n) => n.spec.services[0]?.frpServerIpAddress ?? "" },
  { title: "Port", key: "port", value: (n) => n.spec.services[0]?.proxyPort ?? "" },
  { title: "frpc", key: "frpc", value: (n) => n.status.frpcVersion ?? "" },
  { title: "Host", key: "host", value: (n) => n.spec.services[0]?.hostName ?? "" },
  { title: "Labels", key: "labels", value: (n) => labelText(n) },
];
const LABELS = COLUMNS.length - 1;

// Online and offline nodes, in all and per frps; a server's count chooses its nodes.
function tally(nodes: Node[], choose: (server: string) => void): HTMLElement[] {
  const per = new Map<string, { online: number; offline: number }>();
  const all = { online: 0, offline: 0 };
  for (const node of nodes) {
    const server = COLUMNS[4].value(node);
    const counted = per.get(server) ?? { online: 0, offline: 0 };
    const online = COLUMNS[1].value(node) === "online";
    counted[online ? "online" : "offline"] += 1;
    all[online ? "online" : "offline"] += 1;
    per.set(server, counted);
  }
  const said = (c: { online: number; offline: number }) => [
    element("span", { className: "badge online", textContent: `${c.online} online` }),
    " ",
    element("span", { className: "badge offline", textContent: `${c.offline} offline` }),
  ];
  const total = element("span", { className: "tally", id: "total" }, ...said(all));
  const servers = [...per.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([server, c]) => {
      const button = element("button", { className: "tally", title: `only frps ${server}` });
      button.dataset.frps = server;
      button.append(`frps ${server || "(none)"} `, ...said(c));
      button.onclick = () => choose(server);
      return button;
    });
  return [total, ...servers];
}

function labelText(node: Node): string {
  return Object.entries(node.metadata.labels ?? {})
    .map(([key, value]) => `${key}=${value}`)
    .sort()
    .join(",");
}

export function showList(root: HTMLElement, access: Access): void {
  const nodes = new Map<string, Node>();
  const selected = new Set<string>();
  let shown: Node[] = [];
  let sortBy = 0;
  let descending = false;

  const search = element("input", { type: "search", placeholder: "name contains", id: "search" });
  const selector = element("input", {
    type: "search",
    placeholder: "labels, e.g. site=sh,env in (prod)",
    id: "selector",
    title: "a Kubernetes label selector: the adapter chooses the nodes",
  });
  const refusal = element("span", { id: "selector-refused", className: "refused" });
  const state = element("select", { id: "state" });
  state.append(new Option("any state", ""), new Option("online"), new Option("offline"));
  const frps = element("select", { id: "frps" });
  const count = element("span", { id: "count" });
  const counts = element("div", { id: "counts" });
  counts.setAttribute("role", "status");
  const header = element("div", { className: "row header" });
  const spacer = element("div", { className: "spacer" });
  const viewport = element("div", { className: "viewport", id: "nodes" }, spacer);
  viewport.setAttribute("role", "rowgroup");
  header.setAttribute("role", "row");
  if (access.may.exec) header.append(element("span", { className: "pick" }));
  const titles = COLUMNS.map((column, index) => {
    const title = element("button", {
      className: `cell c-${column.key}`,
      textContent: column.title,
      title: `sort by ${column.title.toLowerCase()}`,
    });
    title.setAttribute("role", "columnheader");
    title.onclick = () => {
      descending = sortBy === index ? !descending : false;
      sortBy = index;
      refresh();
    };
    return title;
  });
  header.append(...titles, element("span", { className: "cell actions" }));

  function refresh(): void {
    const text = search.value.trim().toLowerCase();
    const servers = new Set<string>();
    for (const node of nodes.values()) servers.add(COLUMNS[4].value(node));
    if (frps.options.length !== servers.size + 1) {
      const chosen = frps.value;
      frps.replaceChildren(
        new Option("any frps", ""),
        ...[...servers].sort().map((s) => new Option(s)),
      );
      frps.value = chosen;
    }
    shown = [...nodes.values()].filter(
      (node) =>
        (!text || node.metadata.name.toLowerCase().includes(text)) &&
        (!state.value || COLUMNS[1].value(node) === state.value) &&
        (!frps.value || COLUMNS[4].value(node) === frps.value),
    );
    const key = COLUMNS[sortBy].value;
    const order = descending ? -1 : 1;
    shown.sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      return x < y ? -order : x > y ? order : 0;
    });
    for (const [index, title] of titles.entries()) {
      const order = descending ? "descending" : "ascending";
      title.setAttribute("aria-sort", index === sortBy ? order : "none");
    }
    counts.replaceChildren(
      ...tally([...nodes.values()], (server) => {
        frps.value = frps.value === server ? "" : server;
        refresh();
      }),
    );
    count.textContent = `${shown.length} of ${nodes.size} shown`;
    viewport.setAttribute("aria-rowcount", String(shown.length));
    spacer.style.height = `${shown.length * ROW_HEIGHT}px`;
    draw();
  }

  // Only the rows in sight exist: ten thousand nodes cost a screenful of elements.
  function draw(): void {
    const first = Math.floor(viewport.scrollTop / ROW_HEIGHT);
    const last = Math.min(shown.length, first + Math.ceil(viewport.clientHeight / ROW_HEIGHT) + 2);
    const rows = shown.slice(first, last).map((node, offset) => row(node, first + offset));
    spacer.replaceChildren(...rows);
  }

  function row(node: Node, index: number): HTMLElement {
    const name = node.metadata.name;
    const line = element("div", { className: `row ${COLUMNS[1].value(node)}` });
    line.style.top = `${index * ROW_HEIGHT}px`;
    line.dataset.node = name;
    line.setAttribute("role", "row");
    line.setAttribute("aria-rowindex", String(index + 1));
    if (access.may.exec) {
      // a read-only caller has nothing to pick nodes for
      const pick = element("input", {
        type: "checkbox",
        className: "pick",
        checked: selected.has(name),
      });
      pick.setAttribute("aria-label", `pick ${name}`);
      pick.onchange = () => (pick.checked ? selected.add(name) : selected.delete(name));
      line.append(pick);
    }
    line.append(
      ...COLUMNS.map((c, i) => {
        if (i === LABELS) return chips(node);
        const { text, title } = c.shown?.(node) ?? { text: c.value(node), title: c.value(node) };
        const cell = element("span", { className: `cell c-${c.key}`, title });
        cell.setAttribute("role", "cell");
        if (c.badge)
          cell.append(element("span", { className: `badge ${text}`, textContent: text }));
        else if (c.key === "node")
          cell.append(element("a", { href: `/ui/nodes/${name}`, textContent: text }));
        else cell.textContent = text;
        return cell;
      }),
    );
    const actions = element("span", { className: "cell actions" });
    if (access.may.shell && COLUMNS[1].value(node) === "online") {
      actions.append(
        // In this tab, signed in as it is; a tab of its own (middle click) is handed the token.
        element("a", { className: "shell", href: `/ui/shell/${name}`, textContent: "Shell" }),
      );
    }
    line.append(actions);
    return line;
  }

  function chips(node: Node): HTMLElement {
    const cell = element("span", { className: "cell labels c-labels", title: labelText(node) });
    cell.setAttribute("role", "cell");
    for (const [key, value] of Object.entries(node.metadata.labels ?? {}).sort()) {
      const chip = element("button", { className: "chip", textContent: `${key}=${value}` });
      chip.title = `only nodes with ${key}=${value}`;
      chip.onclick = () => {
        selector.value = selector.value ? `${selector.value},${key}=${value}` : `${key}=${value}`;
        select();
      };
      cell.append(chip);
    }
    return cell;
  }

  let watching = new AbortController();
  function select(): void {
    refusal.textContent = "";
    watching.abort();
    watching = new AbortController();
  }

  let pending = false;
  function soon(): void {
    if (!pending) {
      pending = true;
      setTimeout(() => {
        pending = false;
        refresh();
      }, REDRAW_MS);
    }
  }

  search.oninput = refresh;
  state.onchange = refresh;
  frps.onchange = refresh;
  viewport.onscroll = draw;
  setInterval(draw, 30_000); // "3 min ago" ages without a change to redraw it
  window.addEventListener("resize", draw);
  selector.onchange = select;
  const filters = element(
    "div",
    { className: "filters" },
    search,
    selector,
    state,
    frps,
    count,
    refusal,
  );
  const table = element("div", { className: "table" }, header, viewport);
  table.setAttribute("role", "table");
  table.setAttribute("aria-label", "nodes");
  root.append(counts, filters, table);
  if (access.may.exec) root.append(batchPanel(nodes, selected, () => selector.value.trim()));
  // While the first list streams in, nothing is drawn: it is drawn whole, once.
  let listing = true;
  void watchNodes(
    (): Record<string, string> =>
      selector.value.trim() ? { labelSelector: selector.value.trim() } : {},
    () => watching.signal,
    () => {
      nodes.clear();
      listing = true;
    },
    (type, node) => {
      if (type === "DELETED") nodes.delete(node.metadata.name);
      else nodes.set(node.metadata.name, node);
      if (!listing) soon();
    },
    () => {
      if (listing) {
        listing = false;
        refresh();
      }
    },
    (why) => {
      refusal.textContent = why;
      nodes.clear();
      refresh();
    },
  );
}

type ExecLine = {
  node: string;
  exit_status?: number | null;
  duration_ms?: number;
  stdout?: string;
  stderr?: string;
  timed_out?: boolean;
  error?: string;
  details?: unknown;
};

const OUTCOMES = ["ok", "failed", "unreachable", "timed out"] as const;
type Outcome = (typeof OUTCOMES)[number];

function outcome(result: ExecLine): Outcome {
  if (result.error) return "unreachable";
  if (result.timed_out) return "timed out";
  return result.exit_status === 0 ? "ok" : "failed";
}

// A command on the nodes ticked, or on every online node (the selector's, when one is
// given), each result as it comes, and a count of each outcome. Enter runs it.
function batchPanel(
  nodes: Map<string, Node>,
  selected: Set<string>,
  selector: () => string,
): HTMLElement {
  const command = element("input", { id: "command", placeholder: "command to run" });
  const everyOnline = element("input", { type: "checkbox", id: "all-online" });
  const run = element("button", { id: "run", textContent: "Run" });
  const summary = element("div", { id: "summary", role: "status" });
  const results = element("div", { id: "results" });
  command.onkeydown = (event) => {
    if (event.key === "Enter") run.click();
  };
  run.onclick = async () => {
    const picked = [...selected].filter((name) => nodes.has(name));
    const chosen = selector();
    results.replaceChildren();
    if (!command.value.trim()) {
      summary.textContent = "Type a command to run.";
      return;
    }
    if (!everyOnline.checked && picked.length === 0) {
      summary.textContent = "Tick the nodes to run it on, or choose every online node.";
      return;
    }
    const body = !everyOnline.checked
      ? { cmd: command.value, nodes: picked }
      : chosen
        ? { cmd: command.value, labelSelector: chosen }
        : { cmd: command.value, status: "online" };
    summary.textContent = "running";
    const answer = await fetch("/api/v1/exec", {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!answer.ok) {
      const refusal = await answer.json();
      summary.textContent = `${refusal.error}: ${inWords(refusal.details)}`;
      return;
    }
    const counts = new Map<Outcome, number>(OUTCOMES.map((name) => [name, 0]));
    const count = () => OUTCOMES.map((name) => `${counts.get(name)} ${name}`).join(" · ");
    summary.textContent = count();
    for await (const line of lines(answer)) {
      const result = line as ExecLine;
      const kind = outcome(result);
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
      summary.textContent = count();
      const said = result.error
        ? `${result.error}: ${inWords(result.details)}`
        : result.timed_out
          ? `timed out after ${result.duration_ms} ms`
          : `exit ${result.exit_status} in ${result.duration_ms} ms`;
      const streams = (["stdout", "stderr"] as const)
        .filter((stream) => result[stream])
        .map((stream) => element("pre", { className: stream, textContent: result[stream] }));
      results.append(
        element(
          "div",
          { className: `result ${kind === "ok" ? "ok" : "failed"}` },
          element("b", { textContent: result.node }),
          ` ${said}`,
          ...streams,
        ),
      );
    }
  };
  const label = element("label", {}, everyOnline, " every online node matching the labels");
  return element("section", { className: "batch" }, command, label, run, summary, results);
}
