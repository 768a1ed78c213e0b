// The real-browser test: Debian's chromium, driven over the DevTools protocol
// (playwright-core), uses the demo page against handoff-front + a daemon + mock-llm
// over HTTP/2 + TLS, all started by handoff-demo.
//
//   node bench/browser/test.mjs --demo target/debug/handoff-demo --runtime tokio --artifacts DIR
//
// It checks, through both the GET (EventSource) and the POST (fetch + reader) path:
// the whole text, emoji, CJK and 4-byte characters included, arrives exactly; the end
// state shows; exactly one stream request reached the front (no reconnect); a backend
// 500 shows as the error state with its type and message; a page that navigates away
// cancels its upstream stream at mock-llm. Screenshots go to DIR. Exit 0 only if all pass.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Exactly the flags CI launches with, plus the DevTools port we connect to.
const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
// The whole run; every wait inside is bounded more tightly.
const RUN_BOUND_MS = 150_000;
const START_BOUND_MS = 30_000;
const STREAM_BOUND_MS = 20_000;
// Longer than EventSource's reconnection delay (3 s in Chromium), so a stream the page
// failed to close would show up as a second request.
const RECONNECT_WATCH_MS = 3_500;

// mock-llm's `unicode` table (bench/src/mockllm/tokens.rs), 2-, 3- and 4-byte
// characters, emoji sequences, a combining mark, right-to-left text, one token sent
// as a \u surrogate-pair escape; the demo streams TOKENS of them, cycling.
const UNICODE_TOKENS = ["Gr\u00fc\u00dfe", " \u65e5\u672c\u8a9e", " \ud83d\ude00", " \ud83d\ude00", " e\u0301",
  " \ud83d\udc4d\ud83c\udffd", " \ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67", " \ud55c\uad6d\uc5b4",
  " \ud834\udd1e", " \u05e9\u05dc\u05d5\u05dd", " \u00e9", " \u03a9\u2248\u00e7\u221a", " \u4e2d\u6587\u5b57\u7b26",
  " \ud83c\uddfa\ud83c\uddf3"];
const TOKENS = 20;
const EXPECTED = Array.from({ length: TOKENS }, (_, i) => UNICODE_TOKENS[i % UNICODE_TOKENS.length]).join("");

function args() {
  const out = { demo: "target/debug/handoff-demo", runtime: "tokio", artifacts: "target/ci-artifacts" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!(name in out) || argv[i + 1] === undefined) throw new Error(`unknown or incomplete flag ${argv[i]}`);
    out[name] = argv[i + 1];
  }
  return out;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves with the first match of `pattern` in the lines of `stream`, within `bound`.
function lineMatching(stream, pattern, what, bound, echo) {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: stream });
    const timer = setTimeout(() => reject(new Error(`${what} did not appear within ${bound} ms`)), bound);
    lines.on("line", (line) => {
      if (echo) console.log(`  | ${line}`);
      const match = pattern.exec(line);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    lines.on("close", () => { clearTimeout(timer); reject(new Error(`output ended before ${what}`)); });
  });
}

async function getJson(url) {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return response.json();
}

// Polls `probe` until it returns a truthy value, within `bound`.
async function until(what, bound, probe) {
  const deadline = Date.now() + bound;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${bound} ms`);
    await sleep(100);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
  console.log(`  ok: ${message}`);
}

// Stops a child we started, by its pid: SIGTERM, then SIGKILL after `bound`.
async function stop(child, bound) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), bound);
  await exited;
  clearTimeout(timer);
}

function spawnDemo(options) {
  return spawn(options.demo, [
    "--listen", "127.0.0.1:0", "--runtime", options.runtime, "--backend", "mock-llm", "--no-build",
    "--tokens", String(TOKENS), "--token-delay-ms", "20",
  ], { stdio: ["ignore", "pipe", "inherit"] });
}

// The page URL and mock-llm's counters URL, from handoff-demo's output.
function demoUrls(demo) {
  const lines = createInterface({ input: demo.stdout });
  return new Promise((resolve, reject) => {
    const seen = {};
    const timer = setTimeout(() => reject(new Error(`handoff-demo not ready within ${START_BOUND_MS} ms`)), START_BOUND_MS);
    demo.once("error", (error) => { clearTimeout(timer); reject(error); });
    lines.on("line", (line) => {
      console.log(`  | ${line}`);
      const page = /^Open (http:\S+) /.exec(line);
      const stats = /counters at (http:\S+)/.exec(line);
      if (page) seen.page = page[1];
      if (stats) seen.mockStats = stats[1];
      if (seen.page && seen.mockStats) { clearTimeout(timer); resolve(seen); }
    });
    lines.on("close", () => { clearTimeout(timer); reject(new Error("handoff-demo exited before it was ready")); });
  });
}

function spawnChromium(profile) {
  return spawn(CHROMIUM, [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"],
    { stdio: ["ignore", "ignore", "pipe"] });
}

async function devtoolsEndpoint(browser) {
  const failed = new Promise((_, reject) => browser.once("error", reject));
  const found = lineMatching(browser.stderr, /DevTools listening on (ws:\S+)/, "chromium's DevTools endpoint", START_BOUND_MS, false);
  const endpoint = await Promise.race([found, failed]);
  browser.stderr.resume();
  return endpoint;
}

// Submits the form and waits for the page to leave the streaming state.
async function submit(page, transport, pattern) {
  await page.fill("#prompt", "Say hello in many scripts");
  await page.selectOption("#transport", transport);
  await page.fill("#pattern", pattern);
  await page.click("#send");
}

async function finalState(page) {
  await page.waitForSelector("#state[data-state=done], #state[data-state=error]", { timeout: STREAM_BOUND_MS });
  return page.getAttribute("#state", "data-state");
}

async function frontStats(urls) {
  return getJson(new URL("/stats", urls.page).href);
}

async function completeStream(page, urls, transport, artifacts, runtime) {
  console.log(`${transport}: the unicode stream arrives exactly`);
  const before = await frontStats(urls);
  await submit(page, transport, "unicode");
  const state = await finalState(page);
  const text = await page.textContent("#output");
  check(state === "done", `${transport}: the end state shows (state ${state})`);
  check(text === EXPECTED, `${transport}: the text is exactly mock-llm's ${TOKENS} tokens` +
    (text === EXPECTED ? "" : `\n    got      ${JSON.stringify(text)}\n    expected ${JSON.stringify(EXPECTED)}`));
  check(await page.textContent("#tokens") === String(TOKENS), `${transport}: the page counted ${TOKENS} tokens`);
  check(/^\d+ ms$/.test(await page.textContent("#ttft")), `${transport}: time to first token shows`);
  check(/\/s$/.test(await page.textContent("#rate")), `${transport}: tokens per second shows`);
  if (transport === "get") await sleep(RECONNECT_WATCH_MS);
  const after = await frontStats(urls);
  check(after.stream_requests - before.stream_requests === 1,
    `${transport}: exactly one stream request reached the front (${after.stream_requests - before.stream_requests})`);
  const shot = join(artifacts, `browser-${runtime}-${transport}-done.png`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`  screenshot: ${shot}`);
}

async function backendError(page, urls, transport, artifacts, runtime) {
  console.log(`${transport}: a backend 500 shows as the error state`);
  const before = await frontStats(urls);
  await submit(page, transport, "status:500");
  const state = await finalState(page);
  check(state === "error", `${transport}: the error state shows (state ${state})`);
  check(await page.isVisible("#error"), `${transport}: the error box is visible`);
  const type = await page.textContent("#error-type");
  const message = await page.textContent("#error-message");
  check(type === "server_error", `${transport}: the error event's type shows (${type})`);
  check(message.includes("500"), `${transport}: the error event's message shows (${message})`);
  if (transport === "get") await sleep(RECONNECT_WATCH_MS);
  const after = await frontStats(urls);
  check(after.stream_requests - before.stream_requests === 1,
    `${transport}: the failed stream was asked for once, never retried (${after.stream_requests - before.stream_requests})`);
  if (transport === "get") {
    const shot = join(artifacts, `browser-${runtime}-error.png`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`  screenshot: ${shot}`);
  }
}

async function navigateAway(page, urls, transport) {
  console.log(`${transport}: leaving the page cancels the upstream stream`);
  const before = await getJson(urls.mockStats);
  // 20 tokens 400 ms apart: the stream is still running when the page goes.
  await submit(page, transport, "unicode,slow:400");
  await page.waitForFunction(() => Number(document.querySelector("#tokens").textContent) >= 1, null, { timeout: STREAM_BOUND_MS });
  await page.goto("about:blank");
  const after = await until(`${transport}: mock-llm counts the cancelled stream`, 10_000, async () => {
    const now = await getJson(urls.mockStats);
    return now.streams_cancelled > before.streams_cancelled ? now : null;
  });
  check(after.streams_cancelled - before.streams_cancelled === 1, `${transport}: mock-llm saw its stream cancelled`);
  check(after.streams_completed === before.streams_completed, `${transport}: the stream did not run to its end`);
}

async function main() {
  const options = args();
  mkdirSync(options.artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "handoff-chromium-"));
  let demo = null;
  let browserProcess = null;
  let browser = null;
  const bound = setTimeout(() => { console.error(`browser test: over ${RUN_BOUND_MS} ms`); process.exit(1); }, RUN_BOUND_MS);
  try {
    console.log(`browser test on handoff-${options.runtime}: starting handoff-demo (mock-llm over HTTP/2 + TLS)`);
    demo = spawnDemo(options);
    const urls = await demoUrls(demo);
    browserProcess = spawnChromium(profile);
    const endpoint = await devtoolsEndpoint(browserProcess);
    browser = await chromium.connectOverCDP(endpoint, { timeout: START_BOUND_MS });
    const context = browser.contexts()[0] || (await browser.newContext());
    const page = await context.newPage();
    page.setDefaultTimeout(STREAM_BOUND_MS);
    console.log(`  page ${urls.page}, mock-llm counters ${urls.mockStats}`);
    check(EXPECTED.includes("\u65e5\u672c\u8a9e") && EXPECTED.includes("\ud83d\ude00") && [...EXPECTED].some((c) => c.codePointAt(0) > 0xffff),
      "the expected text has CJK, emoji and 4-byte characters");
    for (const transport of ["get", "post"]) {
      await page.goto(urls.page);
      await completeStream(page, urls, transport, options.artifacts, options.runtime);
      await backendError(page, urls, transport, options.artifacts, options.runtime);
      await page.goto(urls.page);
      await navigateAway(page, urls, transport);
    }
    console.log(`browser test on handoff-${options.runtime}: all checks passed`);
  } finally {
    clearTimeout(bound);
    if (browser) {
      // Closing over CDP ends the browser process itself, not just our connection.
      await browser.newBrowserCDPSession().then((s) => s.send("Browser.close")).catch(() => {});
    }
    if (browserProcess) await stop(browserProcess, 5_000);
    if (demo) await stop(demo, 15_000);
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(`browser test failed: ${error.stack || error}`);
  process.exit(1);
});
