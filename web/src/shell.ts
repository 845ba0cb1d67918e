// A node's shell: xterm.js on the versioned shell route.

import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import { type Access, shellRefusal, shellSocket } from "./api";
import { uniqueId } from "./dom";

export function showShell(root: HTMLElement, access: Access, name: string): void {
  const status = document.createElement("div");
  status.id = "status";
  const reconnect = Object.assign(document.createElement("button"), {
    textContent: "Reconnect",
    id: "reconnect",
  });
  reconnect.hidden = true;
  const screen = document.createElement("div");
  screen.id = "terminal";
  const title = Object.assign(document.createElement("h1"), {
    textContent: uniqueId(name),
    title: name,
  });
  const bar = Object.assign(document.createElement("div"), { className: "shell-bar" });
  status.setAttribute("role", "status");
  bar.append(title, status, reconnect);
  root.append(bar, screen);
  if (!access.may.shell) {
    status.textContent = `${access.user} may not open shells`;
    return;
  }
  const terminal = new Terminal({ cursorBlink: true, fontFamily: "monospace", scrollback: 5000 });
  const fit = new FitAddon();
  terminal.loadAddon(fit);
  terminal.open(screen);
  fit.fit();
  (window as unknown as { terminal: Terminal }).terminal = terminal;
  let socket: WebSocket | null = null;

  function connect(): void {
    reconnect.hidden = true;
    status.textContent = "connecting";
    const ws = shellSocket(name, terminal.cols, terminal.rows);
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.onopen = () => {
      status.textContent = "connected";
      terminal.focus();
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== "string") {
        terminal.write(new Uint8Array(event.data as ArrayBuffer));
        return;
      }
      const control = JSON.parse(event.data);
      if (control.type === "exit") status.textContent = `exited with status ${control.exit_status}`;
      if (control.type === "error")
        status.textContent = `error: ${JSON.stringify(control.message)}`;
    };
    ws.onclose = async (event) => {
      if (status.textContent === "connecting") {
        status.textContent = `refused: ${await shellRefusal(name)}`;
      } else if (status.textContent === "connected") {
        status.textContent = `closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`;
      }
      reconnect.hidden = false;
    };
  }

  const encoder = new TextEncoder();
  // Binary frames: always keystrokes, even if what is pasted looks like a control frame.
  terminal.onData((data) => socket?.send(encoder.encode(data)));
  terminal.onResize(({ cols, rows }) =>
    socket?.send(JSON.stringify({ type: "resize", cols, rows })),
  );
  window.addEventListener("resize", () => fit.fit());
  reconnect.onclick = connect;
  connect();
}
