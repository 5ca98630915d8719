// A logging HTTP proxy for diagnosing the SDK suite (run.sh with SDK_TRACE=1 puts it between
// the SDK and gridsocket): forwards every request unchanged and appends one JSON line per
// exchange to TRACE_FILE (method, path and query, whether a token was sent, the request body,
// the status and the start of the answer). reporter.js appends test and hook starts to the
// same file, so each exchange follows the test that made it.
//
//   node trace-proxy.mjs LISTEN_PORT TARGET_BASE_URL TRACE_FILE
import http from "node:http";
import { appendFileSync } from "node:fs";

const [port, target, traceFile] = process.argv.slice(2);
const upstream = new URL(target);
const MAX = 1200;

// A multipart body as its parts' headers and sizes (the bytes themselves are left out).
function showMultipart(buf, contentType) {
  const boundary = /boundary=("?)([^";]+)\1/.exec(contentType)?.[2];
  if (!boundary) return `<${buf.length} bytes of ${contentType}>`;
  const parts = buf.toString("latin1").split(`--${boundary}`).slice(1, -1);
  return parts
    .map((part) => {
      const split = part.indexOf("\r\n\r\n");
      const head = part.slice(2, split).split("\r\n").join("; ");
      return `[${head}] ${part.length - split - 6} bytes`;
    })
    .join(" + ");
}

function show(buf, contentType) {
  if (!buf.length) return undefined;
  if (contentType && contentType.startsWith("multipart/")) return showMultipart(buf, contentType);
  if (contentType && !/json|text|x-www-form-urlencoded|javascript/.test(contentType)) {
    return `<${buf.length} bytes of ${contentType}>`;
  }
  const s = buf.toString("utf8");
  return s.length > MAX ? s.slice(0, MAX) + "…" : s;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const reqBody = Buffer.concat(chunks);
    const headers = { ...req.headers, host: upstream.host };
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
      (up) => {
        const back = [];
        up.on("data", (c) => back.push(c));
        up.on("end", () => {
          const resBody = Buffer.concat(back);
          appendFileSync(
            traceFile,
            JSON.stringify({
              ev: "http",
              t: Date.now(),
              method: req.method,
              url: req.url,
              token: req.headers.authorization ? "bearer" : undefined,
              accept: req.headers.accept,
              reqType: req.headers["content-type"],
              req: show(reqBody, req.headers["content-type"]),
              status: up.statusCode,
              resType: up.headers["content-type"],
              res: show(resBody, up.headers["content-type"]),
            }) + "\n",
          );
          res.writeHead(up.statusCode, up.headers);
          res.end(resBody);
        });
      },
    );
    out.on("error", (e) => {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`trace-proxy: ${e.message}`);
    });
    out.end(reqBody);
  });
});
server.listen(Number(port), "127.0.0.1", () => console.log(`trace-proxy on ${port} → ${target}`));
