// The video-window list, live: when any session changes (a request arrives, is taken
// or ends), the page fetches itself again and swaps in the lists.

import { announce, setStatus, typingIn } from "./live.js";

const page = document.getElementById("video-list-page");
let version = null;

async function refresh() {
  const response = await fetch(window.location.pathname, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const part of document.querySelectorAll("[data-live-part]")) {
    if (typingIn(part)) continue;
    const next = fresh.getElementById(part.id);
    if (next) part.replaceWith(document.adoptNode(next));
  }
}

function connect(delay) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${window.location.host}/video/live`);
  socket.addEventListener("open", () => { delay = 1000; setStatus("（实时更新中）"); });
  socket.addEventListener("message", async (event) => {
    const news = JSON.parse(event.data);
    if (version !== null && news.version !== version) {
      await refresh();
      announce(news.waiting ? `有 ${news.waiting} 个视频接入请求` : "视频会话列表已更新");
    }
    version = news.version;
  });
  socket.addEventListener("close", () => {
    setStatus("（连接中断，正在重连）");
    setTimeout(() => connect(Math.min(delay * 2, 15000)), delay);
  });
}

if (page) connect(1000);
