// express-rate-limit 8 in front of a slow echo, for bench/conformance.sh.
//
//   node server.js --limit N --window-ms MS [--port P] [--latency MS]
//
// POST /v1/echo is limited by express-rate-limit with its default MemoryStore
// (a fixed window per client that starts at the client's first request after
// the previous window ran out), sending both the IETF draft-7 fields
// (RateLimit, RateLimit-Policy) and the legacy X-RateLimit-* ones, and
// Retry-After on a 429. An accepted request is answered after --latency ms
// (default 50: a simulated API). The server's own truth, unlimited:
//   GET /stats  {"accepted", "rejected", "requests", "first_accept_ms",
//                "last_accept_ms"}  (epoch ms, fractional)
//   GET /log    one line per /v1 request, "ARRIVAL_EPOCH_MS STATUS", in
//               arrival order; ARRIVAL is when the request reached express,
//               before the limiter decided
// Prints "listening on 127.0.0.1:PORT" once bound (--port 0 picks a port).
'use strict';

const express = require('express');
const { rateLimit } = require('express-rate-limit');

function parseArgs(argv) {
  const opts = { limit: 0, windowMs: 0, port: 0, latency: 50, host: '127.0.0.1' };
  for (let i = 2; i < argv.length; i++) {
    const key = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usage(`${key} needs a value`);
    i++;
    switch (key) {
      case '--limit': opts.limit = Number(value); break;
      case '--window-ms': opts.windowMs = Number(value); break;
      case '--port': opts.port = Number(value); break;
      case '--latency': opts.latency = Number(value); break;
      case '--host': opts.host = value; break;
      default: usage(`unknown option ${key}`);
    }
  }
  if (!(opts.limit >= 1) || !(opts.windowMs >= 1)) usage('--limit and --window-ms are required');
  if (!(opts.port >= 0 && opts.port <= 65535) || !(opts.latency >= 0)) usage('bad --port or --latency');
  return opts;
}

function usage(message) {
  process.stderr.write(`server.js: ${message}\n` +
    'usage: node server.js --limit N --window-ms MS [--port P] [--latency MS]\n');
  process.exit(2);
}

const opts = parseArgs(process.argv);
// Epoch milliseconds with sub-millisecond resolution (Date.now() has whole ms).
const nowMs = () => performance.timeOrigin + performance.now();

const stats = { accepted: 0, rejected: 0, requests: 0, first_accept_ms: null, last_accept_ms: null };
const log = [];  // "arrival status" per /v1 request

const app = express();
app.disable('x-powered-by');
app.disable('etag');

app.get('/stats', (req, res) => res.json(stats));
app.get('/log', (req, res) => res.type('text/plain').send(log.join('\n') + (log.length ? '\n' : '')));

const limiter = rateLimit({
  windowMs: opts.windowMs,
  limit: opts.limit,
  standardHeaders: 'draft-7',
  legacyHeaders: true,
  // The default handler, counted.
  handler: (req, res, next, options) => {
    stats.rejected++;
    log.push(`${req.arrivalMs.toFixed(3)} ${options.statusCode}`);
    res.status(options.statusCode).send(options.message);
  },
});

app.use('/v1', (req, res, next) => {
  req.arrivalMs = nowMs();
  stats.requests++;
  next();
}, limiter);

app.post('/v1/echo', express.json({ strict: false }), (req, res) => {
  stats.accepted++;
  if (stats.first_accept_ms === null) stats.first_accept_ms = req.arrivalMs;
  stats.last_accept_ms = req.arrivalMs;
  log.push(`${req.arrivalMs.toFixed(3)} 200`);
  const n = stats.accepted;
  setTimeout(() => res.json({ echo: req.body ?? null, n }), opts.latency);
});

const server = app.listen(opts.port, opts.host, () => {
  const { address, port } = server.address();
  process.stdout.write(`listening on ${address}:${port}\n`);
});
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.closeAllConnections?.();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 500).unref();
  });
}
