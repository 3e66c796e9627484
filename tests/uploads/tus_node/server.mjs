// The tus project's own server (@tus/server with @tus/file-store) on loopback,
// for tests/uploads/test_tus_node.py. Usage: node server.mjs <directory>
// It stores uploads in <directory>, listens on 127.0.0.1 on a free port, and
// prints "listening <port>" once it accepts connections.
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const directory = process.argv[2]
if (!directory) {
  console.error('usage: node server.mjs <directory>')
  process.exit(2)
}
const server = new Server({
  path: '/files',
  datastore: new FileStore({ directory }),
})
const listener = server.listen({ host: '127.0.0.1', port: 0 }, () => {
  console.log(`listening ${listener.address().port}`)
})
process.on('SIGTERM', () => listener.close(() => process.exit(0)))
