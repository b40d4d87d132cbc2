// A reviewer sees, on every page, how many virtual-window requests wait to be taken:
// a badge on the 视频窗口 link, kept current over the /video/live socket.

const badge = document.getElementById("video-badge");

function connect(delay) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${window.location.host}/video/live`);
  socket.addEventListener("open", () => { delay = 1000; });
  socket.addEventListener("message", (event) => {
    const { waiting } = JSON.parse(event.data);
    badge.textContent = waiting ? `${waiting} 个请求` : "";
    badge.hidden = !waiting;
  });
  socket.addEventListener("close", () => {
    setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
  });
}

if (badge && !document.getElementById("video-list-page")) connect(1000);
