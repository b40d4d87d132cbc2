// 远程虚拟窗口: the two browsers' WebRTC call. Signaling goes over this page's socket
// to its node, and through NATS to the other node and the other browser; audio and
// video go browser to browser. The state line says where the call is: 等待对方接入,
// 正在连接, 已接通, 正在重新连接, 已结束.
//
// Negotiation: only the caller (the 通办专窗) offers. Each offer starts a generation
// ("gen", a random id) and everything of one generation carries it; the callee starts
// a fresh connection for a new generation, and either side drops what belongs to an
// old one, so offers that cross a reload or a restart cannot mix. The callee asks for
// an offer with "ready" when it comes to the page (first, or after a reload) and when
// its ICE fails; the caller offers when the session becomes active, on "ready", and
// restarts ICE in place when its connection drops.

import { announce, follow } from "./live.js";

const page = document.getElementById("video-page");
const caller = page.dataset.role === "caller";
const stateLine = document.getElementById("call-state");
const remoteVideo = document.getElementById("remote-video");
const localVideo = document.getElementById("local-video");

const LABELS = {
  waiting: "等待对方接入……",
  connecting: "正在建立音视频连接……",
  connected: "已接通",
  reconnecting: "网络中断，正在重新连接……",
  ended: "会话已结束",
  failed: "无法使用摄像头或麦克风",
};

let socket = null;
let pc = null;
let gen = "";
let local = null;
let session = null;
let pending = [];
let restartTimer = null;
let shown = "";

function show(state, extra) {
  const text = LABELS[state] + (extra ? `（${extra}）` : "");
  if (shown === text) return;
  shown = text;
  page.dataset.call = state;
  stateLine.textContent = text;
  announce(text);
  if (state === "connected" || state === "reconnecting") send({ type: "media", state });
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function allowed(candidate) {
  if (!session.loopback_only || !candidate || !candidate.candidate) return true;
  return / (127\.0\.0\.1|::1) /.test(candidate.candidate);
}

// A new peer connection for generation `id`; the old one, if any, is dropped.
async function fresh(id) {
  clearTimeout(restartTimer);
  if (pc) {
    pc.onicecandidate = pc.ontrack = pc.oniceconnectionstatechange = null;
    pc.close();
  }
  pc = null;
  pending = [];
  if (!local) {
    local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    localVideo.srcObject = local;
  }
  const conn = new RTCPeerConnection({ iceServers: session.ice_servers });
  for (const track of local.getTracks()) conn.addTrack(track, local);
  conn.onicecandidate = (event) => {
    if (event.candidate && allowed(event.candidate)) {
      send({ type: "ice", gen: id, candidate: event.candidate.toJSON() });
    }
  };
  conn.ontrack = (event) => { remoteVideo.srcObject = event.streams[0]; };
  conn.oniceconnectionstatechange = () => watch(conn);
  pc = conn;
  gen = id;
}

function watch(conn) {
  if (conn !== pc || !session || session.state !== "active") return;
  const ice = conn.iceConnectionState;
  if (ice === "connected" || ice === "completed") {
    clearTimeout(restartTimer);
    show("connected");
  } else if (ice === "disconnected" || ice === "failed") {
    show("reconnecting");
    clearTimeout(restartTimer);
    restartTimer = setTimeout(() => restart(conn), ice === "failed" ? 0 : 2000);
  }
}

async function restart(conn) {
  if (conn !== pc || !session || session.state !== "active") return;
  if (caller) await offer(true); // ICE restart on the same connection
  else send({ type: "ready" });
}

async function offer(iceRestart) {
  if (!iceRestart || !pc) await fresh(Math.random().toString(36).slice(2));
  const mine = pc;
  const description = await mine.createOffer({ iceRestart });
  if (mine !== pc) return; // a newer generation started meanwhile
  await mine.setLocalDescription(description);
  send({ type: "sdp", gen, description: mine.localDescription.toJSON() });
}

async function flush() {
  for (const candidate of pending.splice(0)) await pc.addIceCandidate(candidate).catch(() => {});
}

async function safely(step) {
  try {
    await step();
  } catch (error) {
    if (error && (error.name === "NotAllowedError" || error.name === "NotFoundError")) {
      show("failed", "请检查摄像头和麦克风是否连接，并允许浏览器使用后刷新本页");
    } else {
      console.error(error);
    }
  }
}

async function onSession(message) {
  const before = session ? session.state : null;
  session = message;
  page.dataset.state = message.state;
  if (message.state === "ended") {
    end(message.outcome_zh);
  } else if (message.state === "waiting") {
    show("waiting");
  } else if (before !== "active") { // active: at first, or on the page again
    show("connecting");
    if (caller) await offer(false);
    else send({ type: "ready" });
  }
}

async function onSignal(message) {
  if (message.type === "session") {
    await onSession(message);
  } else if (message.type === "ready" && caller) {
    await offer(false);
  } else if (message.type === "sdp" && message.description) {
    const description = message.description;
    if (description.type === "offer" && !caller) {
      if (message.gen !== gen || !pc || pc.signalingState === "closed") await fresh(message.gen);
      await pc.setRemoteDescription(description);
      await flush();
      await pc.setLocalDescription(await pc.createAnswer());
      send({ type: "sdp", gen, description: pc.localDescription.toJSON() });
    } else if (description.type === "answer" && caller && message.gen === gen
               && pc && pc.signalingState === "have-local-offer") {
      await pc.setRemoteDescription(description);
      await flush();
    }
  } else if (message.type === "ice" && message.gen === gen && allowed(message.candidate)) {
    if (pc && pc.remoteDescription) await pc.addIceCandidate(message.candidate).catch(() => {});
    else pending.push(message.candidate);
  }
}

function end(outcome) {
  clearTimeout(restartTimer);
  if (pc) pc.close();
  pc = null;
  if (local) for (const track of local.getTracks()) track.stop();
  local = null;
  localVideo.srcObject = null;
  remoteVideo.srcObject = null;
  show("ended", outcome);
  if (socket) socket.close();
}

function connect() {
  let queue = Promise.resolve(); // one signal at a time, in order
  follow(`/video/${page.dataset.session}/ws`, {
    open(opened) {
      socket = opened;
    },
    message(message) {
      queue = queue.then(() => safely(() => onSignal(message)));
    },
    close() {
      if (page.dataset.state === "ended") return false;
      if (session && session.state === "active") show("reconnecting", "与本节点的连接中断");
      return true;
    },
  });
}

if (page.dataset.state !== "ended") connect();
else show("ended", page.dataset.outcome || "");
