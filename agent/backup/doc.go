// Package backup takes, ships and restores a droplet's n8n backups: a
// consistent dump of n8n's Postgres plus n8n's data directory, encrypted
// with age, moved through presigned S3 URLs the reconciler issues.
//
// # Taking a backup
//
// Take streams, in constant memory, the output of a pg_dump -Fc command
// and a tar of the data directory into a container (below), through
// age.Encrypt, into a temporary file, hashing and counting what it writes.
// The dump is never held in memory and never touches the disk in the clear.
// A dump command that exits non-zero or writes anything to stderr fails the
// backup and leaves no file. Upload PUTs the file with a Content-Length (S3
// refuses chunked presigned PUTs); network errors, 5xx and 429 are retried
// with capped, jittered backoff, any other 4xx is returned at once as
// ErrRefused (an expired or foreign URL: ask for a new one).
//
// # The container
//
// The age plaintext is versioned and strictly parsed:
//
//	file    = "GENESIS-BACKUP-1\n" binding section+ end
//	binding = u32 n, n bytes of Binding JSON (1 ≤ n ≤ 64 KiB)
//	section = 'S' u8 n, n bytes of name, chunk*, u32 0
//	chunk   = u32 n (1 ≤ n ≤ 1 MiB), n bytes
//	end     = "E" "GENESIS-BACKUP-END\n", then nothing
//
// Integers are big-endian. The sections are "postgres.dump" (pg_dump's
// custom format, whose size is not known up front, hence the chunks) and
// then, when the backup has a data directory, "data.tar". The Binding
// (workspace, droplet, backup id, time, n8n version) comes first, inside the
// encryption, so age authenticates it with everything else and a restore
// refuses a file for another workspace or backup before it reads further.
// The end marker makes a cut inside the plaintext an error even at a chunk
// boundary; age's STREAM already authenticates the end of the ciphertext, the
// marker says so again at the container's own level. A length is checked
// against its bound before anything is allocated or read for it, and
// section data is copied through fixed buffers, so a hostile length prefix
// costs nothing.
//
// # Restoring
//
// Fetch GETs a backup into a temporary file, refusing a body larger than
// announced and a size or SHA-256 other than the reconciler's record.
// Restore then works in two phases. First it decrypts and parses the whole
// file into a staging directory: the binding is checked first (workspace and
// backup id; not the droplet, a restore goes to a new one), the dump goes to
// a staging file, the data tar is extracted into a staging directory
// (regular files, directories and symlinks that stay inside it; no absolute
// path, no "..", nothing written through a link), and the end marker is
// checked last. Any failure there removes the staging directory and leaves
// the database and the data directory untouched. Only then does it run the
// restore command (pg_restore --single-transaction: it applies wholly or
// not at all) with the staged dump on stdin, and swap the data directory:
// rename the old one to DataDir+".genesis-old", rename the staged one in,
// remove the old one.
//
// A crash during the swap leaves one of: DataDir old and complete (before
// the first rename); no DataDir and the old one complete at
// DataDir+".genesis-old" (between the renames: the database is already
// restored, run the restore again); DataDir new and complete, maybe with a
// ".genesis-old" beside it (after). Never a mix of the two in DataDir.
// Restore removes a stale ".genesis-old" it finds beside an existing
// DataDir before it swaps.
//
// The package is part of the agent and must not link Postgres, DigitalOcean
// or git clients (a module-wide test enforces it): Postgres is reached only
// through the dump and restore commands, S3 only through net/http.
package backup
