// The video-window list, live: when any session changes (a request arrives, is taken
// or ends), the page fetches itself again and swaps in the lists.

import { announce, follow, setStatus, typingIn } from "./live.js";

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

function connect() {
  follow("/video/live", {
    open() {
      setStatus("（实时更新中）");
    },
    async message(news) {
      if (version !== null && news.version !== version) {
        await refresh();
        announce(news.waiting ? `有 ${news.waiting} 个视频接入请求` : "视频会话列表已更新");
      }
      version = news.version;
    },
    close() {
      setStatus("（连接中断，正在重连）");
    },
  });
}

if (page) connect();
