// A real S3-protocol server process for tests: `node s3rver-main.js <port> <dir>`. Prints
// `ready <port>` once it listens; creates the buckets named in S3RVER_BUCKETS (comma-separated);
// S3RVER_CONDITIONAL_WRITES=1 adds S3's conditional PUT (below).
const S3rver = require('s3rver');

const [port, directory] = process.argv.slice(2);
const buckets = (process.env.S3RVER_BUCKETS || '').split(',').filter(Boolean).map((name) => ({ name }));
const server = new S3rver({ port: Number(port), address: '127.0.0.1', silent: true, directory, configureBuckets: buckets });

// AWS S3 honours `If-None-Match: *` on PutObject (conditional writes, since 2024-08: 412
// PreconditionFailed when the key exists), as GCS, MinIO and R2 do; s3rver 3.7.1 ignores the
// header. With S3RVER_CONDITIONAL_WRITES=1 this process adds exactly that, ahead of s3rver's own
// routes: conditional PUTs of one key run one at a time, and one whose key exists is answered 412
// without being stored. Everything else is s3rver's.
if (process.env.S3RVER_CONDITIONAL_WRITES === '1') {
  const tails = new Map();
  server.middleware.unshift(async (ctx, next) => {
    if (ctx.method !== 'PUT' || ctx.get('if-none-match') !== '*' || ctx.query.uploadId !== undefined) return next();
    const [bucket, ...rest] = ctx.path.slice(1).split('/');
    const key = decodeURIComponent(rest.join('/'));
    const id = `${bucket}/${key}`;
    const before = tails.get(id) ?? Promise.resolve();
    let release;
    const mine = new Promise((resolve) => (release = resolve));
    tails.set(id, mine);
    await before;
    try {
      if (await server.store.existsObject(bucket, key)) {
        ctx.status = 412;
        ctx.type = 'application/xml';
        ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>';
        return;
      }
      await next();
    } finally {
      if (tails.get(id) === mine) tails.delete(id);
      release();
    }
  });
}
server.run().then(
  ({ port: actual }) => process.stdout.write(`ready ${actual}\n`),
  (err) => {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  },
);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close().finally(() => process.exit(0)));
