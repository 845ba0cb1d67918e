// asciinema-player, in a chunk of its own: only the playback page loads it (its styles
// are in console.css: esbuild does not load a lazy chunk's).

import { create } from "asciinema-player";

export function play(screen: HTMLElement, recording: string): void {
  const player = create({ data: recording }, screen, { fit: "width", autoPlay: true });
  (window as unknown as { player: unknown }).player = player;
}
