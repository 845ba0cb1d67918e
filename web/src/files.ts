// A node's files in the browser, through the files API: a directory's entries, a file
// downloaded, files uploaded (chosen or dropped) with their progress.

import { headers, inWords } from "./api";
import { ago, element } from "./dom";

type Entry = { name: string; type: string; size: number; mode: number; mtime: number };

export function showFiles(section: HTMLElement, name: string): void {
  const url = (path: string) => `/api/v1/nodes/${name}/files?${new URLSearchParams({ path })}`;
  let directory = "/";
  const path = element("input", { id: "path", value: directory });
  path.setAttribute("aria-label", "directory on the node");
  const open = element("button", { textContent: "Open", id: "open-path" });
  const up = element("button", { textContent: "Up", id: "up" });
  const chooser = element("input", { type: "file", multiple: true, id: "upload" });
  chooser.setAttribute("aria-label", "files to upload here");
  const said = element("p", { id: "files-said" });
  said.setAttribute("role", "status");
  const uploads = element("div", { id: "uploads" });
  uploads.setAttribute("role", "status");
  const entries = element("table", { id: "entries", className: "records" });
  const drop = element(
    "div",
    { className: "drop", id: "drop" },
    "Drop files here to upload them into this directory, or ",
    chooser,
  );
  section.append(
    element("h2", { textContent: "Files" }),
    element("div", { className: "files-bar" }, path, open, up),
    drop,
    uploads,
    said,
    entries,
  );

  async function list(to: string): Promise<void> {
    said.textContent = "listing";
    const answer = await fetch(url(to), { headers: headers() });
    const body = await answer.json().catch(() => null);
    if (!answer.ok || !body?.items) {
      said.textContent = body ? `${body.error}: ${inWords(body.details)}` : `${to} is a file`;
      return;
    }
    directory = body.path;
    path.value = directory;
    said.textContent = "";
    entries.replaceChildren(
      element(
        "tr",
        {},
        ...["Name", "Size", "Mode", "Modified"].map((t) => element("th", { textContent: t })),
      ),
      ...(body.items as Entry[]).map(row),
    );
  }

  function row(entry: Entry): HTMLElement {
    const target = `${directory.replace(/\/$/, "")}/${entry.name}`;
    const link = element("button", {
      className: `entry ${entry.type}`,
      textContent: entry.type === "directory" ? `${entry.name}/` : entry.name,
    });
    link.onclick = () => (entry.type === "directory" ? list(target) : download(target, entry));
    const when = new Date(entry.mtime * 1000).toISOString();
    return element(
      "tr",
      {},
      element("td", {}, link),
      element("td", { textContent: entry.type === "directory" ? "" : size(entry.size) }),
      element("td", { textContent: (entry.mode & 0o7777).toString(8).padStart(4, "0") }),
      element("td", { textContent: ago(when), title: when }),
    );
  }

  async function download(target: string, entry: Entry): Promise<void> {
    const progress = element("progress", { max: entry.size || 1, value: 0 });
    said.replaceChildren(`downloading ${entry.name} `, progress);
    const answer = await fetch(url(target), { headers: headers() });
    if (!answer.ok || !answer.body) {
      const refusal = await answer.json().catch(() => ({ error: answer.status, details: "" }));
      said.textContent = `${entry.name}: ${refusal.error}: ${inWords(refusal.details)}`;
      return;
    }
    const chunks: Uint8Array[] = [];
    const reader = answer.body.getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      chunks.push(read.value);
      progress.value += read.value.length;
    }
    const expected = Number(answer.headers.get("Content-Length"));
    const got = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    if (got !== expected) {
      said.textContent = `${entry.name}: the download broke off after ${got} of ${expected} bytes`;
      return;
    }
    const saving = element("a", {
      href: URL.createObjectURL(new Blob(chunks as BlobPart[])),
      download: entry.name,
    });
    saving.click();
    setTimeout(() => URL.revokeObjectURL(saving.href), 60_000); // once the browser has it
    said.textContent = `${entry.name}: ${size(got)} downloaded`;
  }

  async function upload(files: File[]): Promise<void> {
    const into = directory;
    const lines = files.map((file) => {
      const progress = element("progress", { max: file.size || 1, value: 0 });
      const state = element("span", { textContent: " waiting" });
      return { file, progress, state, line: element("div", {}, `${file.name} `, progress, state) };
    });
    uploads.replaceChildren(...lines.map(({ line }) => line));
    for (const { file, progress, state } of lines) {
      state.textContent = ` ${await put(`${into.replace(/\/$/, "")}/${file.name}`, file, progress)}`;
    }
    if (directory === into) await list(into);
  }

  // XMLHttpRequest: fetch cannot tell how much of a body has been sent.
  function put(target: string, file: File, progress: HTMLProgressElement): Promise<string> {
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      request.open("PUT", url(target));
      for (const [key, value] of Object.entries(headers())) request.setRequestHeader(key, value);
      request.upload.onprogress = (event) => {
        progress.value = event.loaded;
      };
      request.onload = () => {
        const body = JSON.parse(request.responseText || "{}");
        if (request.status !== 200) resolve(`${body.error}: ${inWords(body.details)}`);
        else if (body.size !== file.size)
          resolve(`the node holds ${body.size} bytes of ${file.size}`);
        else resolve(`${size(body.size)} stored, sha256 ${body.sha256}`);
      };
      request.onerror = () => resolve("the upload broke off");
      request.send(file);
    });
  }

  open.onclick = () => list(path.value.trim() || "/");
  path.onkeydown = (event) => {
    if (event.key === "Enter") open.click();
  };
  up.onclick = () => list(directory.replace(/\/[^/]*\/?$/, "") || "/");
  chooser.onchange = () => upload([...(chooser.files ?? [])]);
  drop.ondragover = (event) => {
    event.preventDefault();
    drop.classList.add("over");
  };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    void upload([...(event.dataTransfer?.files ?? [])]);
  };
  void list(directory);
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1 << 30) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${(bytes / (1 << 30)).toFixed(1)} GiB`;
}
