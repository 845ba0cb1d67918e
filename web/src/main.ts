// The console: sign in with a bearer token, then the fleet or a node's shell.

import "@xterm/xterm/css/xterm.css";
import "./console.css";
import { access, token } from "./api";
import { showList } from "./list";

async function start(): Promise<void> {
  const root = document.createElement("main");
  document.body.append(root);
  const said = token.get() ? await access() : "";
  if (typeof said === "string") {
    signIn(root, said);
    return;
  }
  const bar = document.createElement("header");
  const out = Object.assign(document.createElement("button"), {
    textContent: "Sign out",
    id: "sign-out",
  });
  out.onclick = () => {
    token.clear();
    location.reload();
  };
  bar.append(
    Object.assign(document.createElement("span"), { textContent: `frp-adapter · ${said.user}` }),
    out,
  );
  root.append(bar);
  const shell = location.pathname.match(/^\/ui\/shell\/([^/]+)$/);
  if (shell) (await import("./shell")).showShell(root, said, decodeURIComponent(shell[1]));
  else showList(root, said);
}

function signIn(root: HTMLElement, refusal: string): void {
  const form = document.createElement("form");
  form.id = "sign-in";
  const input = Object.assign(document.createElement("input"), {
    type: "password",
    id: "token",
    placeholder: "bearer token",
    autocomplete: "off",
  });
  const why = Object.assign(document.createElement("p"), { textContent: refusal, id: "refusal" });
  form.append(
    input,
    Object.assign(document.createElement("button"), { textContent: "Sign in" }),
    why,
  );
  form.onsubmit = (event) => {
    event.preventDefault();
    token.set(input.value.trim());
    location.reload();
  };
  root.append(form);
}

void start();
