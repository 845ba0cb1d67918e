// A node's page: what the adapter knows of it, live; its recent changes with their
// reasons; and what the token allows on it: a shell, a command, its files.

import { type Access, headers, inWords, type Node, watchNodes } from "./api";
import { ago, element, uniqueId } from "./dom";
import { showFiles } from "./files";

type Change = { time: string; status: string; reason: string };

export function showNode(root: HTMLElement, access: Access, name: string): void {
  const title = element("h1", {
    id: "node-name",
    textContent: uniqueId(name),
    title: name,
  });
  const badge = element("span", { className: "badge" });
  const facts = element("dl", { className: "facts", id: "facts" });
  const said = element("p", { id: "node-refused", className: "refused" });
  said.setAttribute("role", "alert");
  const history = element("ol", { id: "history" });
  const page = element(
    "div",
    { className: "node-page" },
    element("div", { className: "node-title" }, title, badge),
    said,
    facts,
    actions(access, name),
    element("section", {}, element("h2", { textContent: "Recent changes" }), history),
  );
  if (access.may.files) {
    const files = element("section", { id: "files" });
    page.append(files);
    showFiles(files, name);
  }
  root.append(page);

  async function refreshHistory(): Promise<void> {
    const answer = await fetch(`/api/v1/nodes/${name}/history`, { headers: headers() });
    if (!answer.ok) return;
    const changes = (await answer.json()).items as Change[];
    history.replaceChildren(
      ...changes.map((change) =>
        element(
          "li",
          {},
          element("span", { className: `badge ${change.status}`, textContent: change.status }),
          ` ${change.reason} · `,
          element("time", { textContent: ago(change.time), title: `${change.time} UTC` }),
        ),
      ),
    );
  }

  function show(node: Node): void {
    const state = node.status.services[0]?.status ?? "";
    badge.className = `badge ${state}`;
    badge.textContent = state;
    const service = node.spec.services[0];
    const rows: [string, string | HTMLElement][] = [
      ["State", `${state} since ${node.status.reason} · ${ago(node.status.lastTransitionTime)}`],
      ["Reached at", service ? `${service.frpServerIpAddress}:${service.proxyPort}` : ""],
      ["frpc", node.status.frpcVersion ?? ""],
      ["Host", service?.hostName ?? ""],
      ["frpc from", node.status.clientAddress ?? ""],
      ["Last heartbeat", node.status.lastHeartbeatTime ? ago(node.status.lastHeartbeatTime) : ""],
      ["Labels", labels(node)],
      ["Host key", element("code", { id: "host-key", textContent: "not pinned yet" })],
    ];
    facts.replaceChildren(
      ...rows.flatMap(([term, value]) => [
        element("dt", { textContent: term }),
        element("dd", {}, value || "—"),
      ]),
    );
    void fingerprint(node.status.sshHostKey).then((print) => {
      const key = facts.querySelector("#host-key");
      if (key && print) key.textContent = print;
    });
    // Each change of the node, however small, asks again: two in one second (offline and
    // back) share a transition time.
    void refreshHistory();
  }

  let found = false;
  void watchNodes(
    () => ({ fieldSelector: `metadata.name=${name}` }),
    () => new AbortController().signal,
    () => {
      found = false;
    },
    (type, node) => {
      if (type === "DELETED") {
        said.textContent = `${name} was deleted`;
        return;
      }
      found = true;
      said.textContent = "";
      show(node);
    },
    async () => {
      if (found) return;
      const answer = await fetch(`/api/v1/nodes/${name}`, { headers: headers() });
      const refusal = await answer.json();
      said.textContent = `${refusal.error}: ${inWords(refusal.details)}`;
    },
    (why) => {
      said.textContent = why;
    },
  );
}

function labels(node: Node): string {
  return Object.entries(node.metadata.labels ?? {})
    .map(([key, value]) => `${key}=${value}`)
    .sort()
    .join(", ");
}

// OpenSSH's form of a key's fingerprint: SHA256: and the digest of the key's blob in
// base64 without padding, as `ssh-keygen -lf` prints it.
async function fingerprint(key: string | undefined): Promise<string> {
  const blob = key?.split(" ")[1];
  if (!blob) return "";
  const bytes = Uint8Array.from(atob(blob), (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const encoded = btoa(String.fromCharCode(...digest)).replace(/=+$/, "");
  return `${key?.split(" ")[0]} SHA256:${encoded}`;
}

// A shell and a command, as the token allows.
function actions(access: Access, name: string): HTMLElement {
  const section = element("section", { className: "actions-bar" });
  if (access.may.shell) {
    section.append(
      element("a", { className: "shell", href: `/ui/shell/${name}`, textContent: "Shell" }),
    );
  }
  if (!access.may.exec) return section;
  const command = element("input", { id: "node-command", placeholder: "command to run" });
  command.setAttribute("aria-label", "command to run on this node");
  const run = element("button", { id: "node-run", textContent: "Run" });
  const result = element("div", { id: "node-result" });
  result.setAttribute("role", "status");
  command.onkeydown = (event) => {
    if (event.key === "Enter") run.click();
  };
  run.onclick = async () => {
    if (!command.value.trim()) {
      result.textContent = "Type a command to run.";
      return;
    }
    result.textContent = "running";
    const answer = await fetch(`/api/v1/nodes/${name}/exec`, {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify({ cmd: command.value }),
    });
    const body = await answer.json();
    if (!answer.ok) {
      result.textContent = `${body.error}: ${inWords(body.details)}`;
      return;
    }
    const ended = body.timed_out
      ? `timed out after ${body.duration_ms} ms`
      : `exit ${body.exit_status} in ${body.duration_ms} ms`;
    const streams = (["stdout", "stderr"] as const)
      .filter((stream) => body[stream])
      .map((stream) => element("pre", { className: stream, textContent: body[stream] }));
    result.replaceChildren(element("b", { textContent: ended }), ...streams);
  };
  section.append(command, run, result);
  return section;
}
