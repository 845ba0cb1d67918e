// The console: the fleet or a node's shell; anonymous when the adapter lets anyone read,
// signed in with a bearer token for more.

import "@xterm/xterm/css/xterm.css";
import "./console.css";
import { type Access, access, token, tokenFromAnotherTab } from "./api";
import { showList } from "./list";

async function start(): Promise<void> {
  const root = document.createElement("main");
  document.body.append(root);
  if (!token.get()) {
    const handed = await tokenFromAnotherTab();
    if (handed) token.set(handed);
  }
  const said = await access();
  if (typeof said === "string") {
    signIn(root, token.get() ? said : "");
    return;
  }
  root.append(bar(root, said));
  const [, page, name] =
    location.pathname.match(/^\/ui\/(shell|nodes|sessions|audit)(?:\/([^/]+))?$/) ?? [];
  const named = decodeURIComponent(name ?? "");
  if (page === "shell") (await import("./shell")).showShell(root, said, named);
  else if (page === "nodes") (await import("./node")).showNode(root, said, named);
  else if (page === "sessions" && name) await (await import("./records")).showPlayback(root, named);
  else if (page === "sessions") (await import("./records")).showSessions(root);
  else if (page === "audit") (await import("./records")).showAudit(root);
  else showList(root, said);
}

function bar(root: HTMLElement, said: Access): HTMLElement {
  const header = document.createElement("header");
  const home = Object.assign(document.createElement("a"), {
    href: "/ui/",
    textContent: "frp-adapter",
    className: "product",
  });
  const who = Object.assign(document.createElement("span"), { textContent: said.user, id: "user" });
  const button = document.createElement("button");
  if (token.get()) {
    Object.assign(button, { textContent: "Sign out", id: "sign-out" });
    button.onclick = () => {
      token.clear();
      location.reload();
    };
  } else {
    // Anonymous reads: the list is shown at once, and a token offers more.
    Object.assign(button, { textContent: "Sign in", id: "open-sign-in" });
    button.onclick = () => {
      root.replaceChildren();
      signIn(root, "");
    };
  }
  const pages = [
    ["Nodes", "/ui/", true],
    ["Sessions", "/ui/sessions", said.may.sessions],
    ["Audit", "/ui/audit", said.may.audit],
  ] as const;
  const nav = document.createElement("nav");
  for (const [text, href, shown] of pages) {
    if (shown) nav.append(Object.assign(document.createElement("a"), { textContent: text, href }));
  }
  header.append(home, nav, who, button);
  return header;
}

function signIn(root: HTMLElement, refusal: string): void {
  const form = document.createElement("form");
  form.id = "sign-in";
  const title = Object.assign(document.createElement("h1"), { textContent: "frp-adapter" });
  const about = Object.assign(document.createElement("p"), {
    textContent: "The edge nodes behind frps: their state, a shell, a command on many.",
  });
  const where = document.createElement("p");
  where.className = "hint";
  where.append(
    "A token comes from whoever runs the adapter: a line of its ",
    Object.assign(document.createElement("code"), { textContent: "FRPA_API_TOKENS_FILE" }),
    " (token, name, role), or, with Kubernetes authentication, ",
    Object.assign(document.createElement("code"), {
      textContent: "kubectl create token <service account>",
    }),
    ".",
  );
  const label = Object.assign(document.createElement("label"), {
    textContent: "Bearer token",
    htmlFor: "token",
  });
  const input = Object.assign(document.createElement("input"), {
    type: "password",
    id: "token",
    autocomplete: "off",
    required: true,
  });
  const why = Object.assign(document.createElement("p"), {
    textContent: refusal,
    id: "refusal",
    className: "refused",
  });
  why.setAttribute("role", "alert");
  form.append(
    title,
    about,
    label,
    input,
    Object.assign(document.createElement("button"), { textContent: "Sign in" }),
    why,
    where,
  );
  form.onsubmit = (event) => {
    event.preventDefault();
    token.set(input.value.trim());
    location.reload();
  };
  root.append(form);
  input.focus();
}

void start();
