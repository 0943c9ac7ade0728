package cache

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// fileFormat is the version of the database's layout, kept in its meta
// table. A file of another version is refused at open, never read.
// Version 1 had a column a field; 2 keeps the head in one blob.
const fileFormat = 2

// applicationID marks the database as gptbatch's cache in its header
// ("gptc"), so that an SQLite file of another program is never taken for
// one, nor removed by RemoveFile.
const applicationID = 0x67707463

// busyTimeout is how long a statement waits for another process's write
// lock: writes are short, but a prune or a clear of a large cache can
// hold it for seconds.
const busyTimeout = 10 * time.Second

// getChunk is the most keys one SELECT asks for: well under SQLite's
// 32766 parameters, and the statement for it is prepared once.
const getChunk = 256

// getSizes are the numbers of keys a SELECT of GetMany is prepared for,
// once, the last getChunk: a block of keys is asked for by the smallest
// that holds it, the last key repeated to fill it, so that no lookup
// compiles a statement (a run's blocks are what its input has ready, a
// few keys as often as hundreds).
var getSizes = [...]int{1, 4, 16, 64, getChunk}

// readers is how many connections read at once.
const readers = 4

// schema is the database of a new cache. Each answer is a row of
// entries: its head (appendHead: the sum, cost, endpoint and model) and
// body as blobs, so that a lookup reads two columns; created and size
// beside them for the TTL, Prune and Stats, which read no body. Its rowid
// is the key's first 8 bytes (rowOf), so that a lookup is one search of
// one B-tree, with no index beside it; the whole key is in the head's
// sum, which tells the rare two keys that share a rowid apart (the later
// put replaces the earlier). counters holds the hits and what they saved.
const schema = `
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE entries (
	id      INTEGER PRIMARY KEY,
	created INTEGER NOT NULL,
	size    INTEGER NOT NULL,
	head    BLOB NOT NULL,
	body    BLOB NOT NULL
);
CREATE INDEX entries_created ON entries (created);
INSERT INTO counters (name, value) VALUES ('hits', 0), ('saved', 0);
`

// File is a Store in an SQLite database, in WAL mode: any number of
// gptbatch processes on the host read it at once, and one writes at a
// time, each waiting up to busyTimeout for the others. The file and its
// -wal and -shm are created with mode 0600: they hold prompts' answers.
// Safe for concurrent use.
type File struct {
	path string
	o    Options
	wr   *sql.DB                  // one connection: this process's writes queue here, not in SQLite's busy loop
	rd   *sql.DB                  // up to readers connections, reading at once
	gets [len(getSizes)]*sql.Stmt // a SELECT of getSizes[i] keys
}

// OpenFile opens the cache at path, creating it (and its directory, mode
// 0700) if it does not exist. A file that cannot be used as a cache (not
// an SQLite database or damaged, another format version, another
// program's database, not writable) is an error wrapping ErrUnusable that
// names the file and what to do about it.
func OpenFile(ctx context.Context, path string, o Options) (*File, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	f := &File{path: path, o: o}
	empty, err := create(path)
	if err != nil {
		return nil, f.unwritable(err)
	}
	// Every connection waits for locks, and in WAL mode syncs at
	// checkpoints only, which loses no more than the last answers on a
	// power cut and never damages the file.
	dsn := "file:" + uriPath(path) + fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=synchronous(normal)", busyTimeout.Milliseconds())
	if f.wr, err = sql.Open("sqlite", dsn+"&_txlock=immediate"); err != nil {
		return nil, err
	}
	f.wr.SetMaxOpenConns(1)
	if f.rd, err = sql.Open("sqlite", dsn); err != nil {
		f.wr.Close()
		return nil, err
	}
	f.rd.SetMaxOpenConns(readers)
	f.rd.SetMaxIdleConns(readers)
	if err := f.initWaiting(ctx, empty); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// initWaiting is init, tried again while it meets SQLITE_BUSY, for up to
// busyTimeout. Statements wait for locks (busy_timeout), but SQLite answers
// some at once, without waiting, where to wait could deadlock: a reader
// that must become a writer while another process holds a lock (the
// switch to WAL), a read that meets the WAL being made. Processes opening
// a new cache together meet these. init can be tried again: its one write
// is a transaction.
func (f *File) initWaiting(ctx context.Context, empty bool) error {
	deadline := time.Now().Add(busyTimeout)
	for pause := time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		err := f.init(ctx, empty)
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		for i, st := range f.gets {
			if st != nil {
				st.Close()
				f.gets[i] = nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// create makes path's directory and path, empty (an empty file is an
// empty database), mode 0600 whatever the umask, unless it exists; an
// existing file must be writable. It says whether the file is empty.
func create(path string) (empty bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		fh, err = os.OpenFile(path, os.O_RDWR, 0)
	} else if err == nil {
		err = fh.Chmod(0o600)
	}
	if err != nil {
		return false, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return false, err
	}
	return fi.Size() == 0, nil
}

// uriPath is path as the path of a file: URI, whose query and fragment
// begin at ? and #.
func uriPath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// init checks the database is a cache of this format, or makes it one if
// it is empty, and proves it writable, in one write transaction: every
// process opening a new file at once sees it made once.
func (f *File) init(ctx context.Context, empty bool) error {
	if empty {
		// Freed pages go back to the file system at incremental_vacuum
		// (after Clear and Prune). Only a database not yet written can be
		// made so, before its first transaction; if another process is
		// making it at the same moment, its setting is the file's.
		f.wr.ExecContext(ctx, "PRAGMA auto_vacuum = incremental")
	}
	tx, err := f.wr.BeginTx(ctx, nil)
	if err != nil {
		return f.classify(err)
	}
	defer tx.Rollback()
	var id, tables int64
	if err := tx.QueryRowContext(ctx, "PRAGMA application_id").Scan(&id); err != nil {
		return f.classify(err)
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return f.classify(err)
	}
	switch {
	case tables == 0:
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return f.classify(err)
		}
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return f.classify(err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO meta (name, value) VALUES ('format', ?)", fileFormat); err != nil {
			return f.classify(err)
		}
	case id != applicationID:
		return unusablef("%s is not a gptbatch cache but another program's database: name another file with --cache=PATH", f.path)
	default:
		var v int64
		err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE name = 'format'").Scan(&v)
		if err != nil {
			return f.corrupt(fmt.Errorf("no format version: %w", err))
		}
		if v != fileFormat {
			return unusablef("cache %s is format version %d, and this gptbatch reads version %d: clear it with `gptbatch cache clear` or delete the file", f.path, v, fileFormat)
		}
	}
	// A write, so that a file that cannot be written fails here and not
	// mid-run; it also says when the cache was last opened.
	if _, err := tx.ExecContext(ctx, "INSERT INTO meta (name, value) VALUES ('opened', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", f.o.now().UnixMilli()); err != nil {
		return f.classify(err)
	}
	if err := tx.Commit(); err != nil {
		return f.classify(err)
	}
	// WAL, so that readers never wait for the writer: set once the file
	// has its tables, since a new file's first page is fixed by it and
	// auto_vacuum must come before; it sticks to the file.
	if _, err := f.wr.ExecContext(ctx, "PRAGMA journal_mode = wal"); err != nil {
		return f.classify(err)
	}
	for i, n := range getSizes {
		if f.gets[i], err = f.rd.PrepareContext(ctx, getSQL(n)); err != nil {
			return f.classify(err)
		}
	}
	return nil
}

// classify turns an error met opening the cache into the error that says
// what is wrong with the file.
func (f *File) classify(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FORMAT:
			return f.corrupt(err)
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
			return f.unwritable(err)
		}
	}
	return fmt.Errorf("cache %s: %w", f.path, err)
}

func (f *File) corrupt(err error) error {
	return unusablef("cache %s is damaged or not an SQLite database (%v): clear it with `gptbatch cache clear` or delete the file", f.path, err)
}

func (f *File) unwritable(err error) error {
	return unusablef("cache %s cannot be written (%v): make the file and its directory writable, or name another file with --cache=PATH", f.path, err)
}

// fail says which cache failed mid-run.
func (f *File) fail(err error) error { return fmt.Errorf("cache %s: %w", f.path, err) }

func getSQL(n int) string {
	return "SELECT id, head, body FROM entries WHERE created >= ? AND id IN (?" + strings.Repeat(", ?", n-1) + ")"
}

// rowOf is the rowid of k's entry.
func rowOf(k Key) int64 { return int64(binary.BigEndian.Uint64(k[:])) }

// Get implements Store.
func (f *File) Get(ctx context.Context, k Key) (*Entry, error) {
	rows, err := f.gets[0].QueryContext(ctx, f.o.cutoff(), rowOf(k))
	if err != nil {
		return nil, f.fail(err)
	}
	var e *Entry
	err = f.scan(rows, func(int64) (Key, bool) { return k, true }, func(got *Entry) { e = got })
	return e, err
}

// GetMany implements Store: a SELECT prepared once (getSizes) for each
// getChunk keys, in one read transaction when there is more than one.
func (f *File) GetMany(ctx context.Context, keys []Key) ([]*Entry, error) {
	out := make([]*Entry, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	// One SELECT is a consistent read by itself: a transaction (BEGIN and
	// its end, each a statement of its own) is opened only when the keys
	// take more than one, and a run's blocks are mostly what one takes.
	stmt := func(st *sql.Stmt) *sql.Stmt { return st }
	if len(keys) > getChunk {
		tx, err := f.rd.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return nil, f.fail(err)
		}
		defer tx.Rollback()
		stmt = func(st *sql.Stmt) *sql.Stmt { return tx.StmtContext(ctx, st) }
	}
	cutoff := f.o.cutoff()
	at := make(map[int64]int, min(len(keys), getChunk)) // the first index asking for a rowid
	args := make([]any, 0, getChunk+1)
	for start := 0; start < len(keys); start += getChunk {
		part := keys[start:min(start+getChunk, len(keys))]
		clear(at)
		args = append(args[:0], cutoff)
		for i, k := range part {
			id := rowOf(k)
			if _, dup := at[id]; !dup {
				at[id] = start + i
			}
			args = append(args, id)
		}
		size := 0
		for getSizes[size] < len(part) {
			size++
		}
		for len(args) < 1+getSizes[size] {
			args = append(args, args[len(args)-1]) // a key asked twice is found once
		}
		rows, err := stmt(f.gets[size]).QueryContext(ctx, args...)
		if err != nil {
			return nil, f.fail(err)
		}
		var i int
		keyOf := func(id int64) (Key, bool) {
			var ok bool
			i, ok = at[id]
			return keys[i], ok
		}
		if err := f.scan(rows, keyOf, func(e *Entry) { out[i] = e }); err != nil {
			return nil, err
		}
		// A key asked twice gets the first one's entry, if it is its own;
		// another key with the same rowid misses.
		for j, k := range part {
			if first := at[rowOf(k)]; first != start+j && keys[first] == k {
				out[start+j] = out[first]
			}
		}
	}
	return out, nil
}

// scan reads the rows of a get: for each, keyOf says which key asked for
// its rowid, and got hears of the entry if it is that key's and intact.
func (f *File) scan(rows *sql.Rows, keyOf func(id int64) (Key, bool), got func(*Entry)) error {
	defer rows.Close()
	// Raw: the head is read in place and only the body copied out; an
	// endpoint or model is one string for every entry.
	var id int64
	var head, body sql.RawBytes
	names := names{}
	for rows.Next() {
		if err := rows.Scan(&id, &head, &body); err != nil {
			return f.fail(err)
		}
		k, ok := keyOf(id)
		if !ok {
			continue
		}
		e, sum, size, rest, ok := readHead(k, head, names.of)
		if !ok || len(rest) != 0 || size != uint64(len(body)) {
			f.o.mismatch(k)
			continue
		}
		e.Body = bytes.Clone(body)
		if e := f.o.check(&e, sum); e != nil {
			got(e)
		}
	}
	if err := rows.Err(); err != nil {
		return f.fail(err)
	}
	return nil
}

// Put implements Store: one write transaction.
func (f *File) Put(ctx context.Context, entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	tx, err := f.wr.BeginTx(ctx, nil)
	if err != nil {
		return f.fail(err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, "INSERT INTO entries (id, created, size, head, body) VALUES (?, ?, ?, ?, ?) "+
		"ON CONFLICT (id) DO UPDATE SET created = excluded.created, size = excluded.size, head = excluded.head, body = excluded.body")
	if err != nil {
		return f.fail(err)
	}
	defer st.Close()
	var head []byte
	for _, e := range entries {
		head = appendHead(head[:0], &e)
		if _, err := st.ExecContext(ctx, rowOf(e.Key), e.Created.UnixMilli(), len(e.Body), head, e.Body); err != nil {
			return f.fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return f.fail(err)
	}
	return nil
}

// RecordHits implements Store.
func (f *File) RecordHits(ctx context.Context, n, saved int64) error {
	if n == 0 && saved == 0 {
		return nil
	}
	tx, err := f.wr.BeginTx(ctx, nil)
	if err != nil {
		return f.fail(err)
	}
	defer tx.Rollback()
	for _, c := range []struct {
		name string
		add  int64
	}{{"hits", n}, {"saved", saved}} {
		if _, err := tx.ExecContext(ctx, "UPDATE counters SET value = value + ? WHERE name = ?", c.add, c.name); err != nil {
			return f.fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return f.fail(err)
	}
	return nil
}

// Stats implements Store.
func (f *File) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	tx, err := f.rd.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s, f.fail(err)
	}
	defer tx.Rollback()
	var oldest, newest sql.NullInt64
	err = tx.QueryRowContext(ctx, "SELECT count(*), coalesce(sum(size), 0), min(created), max(created) FROM entries").
		Scan(&s.Entries, &s.Bytes, &oldest, &newest)
	if err != nil {
		return s, f.fail(err)
	}
	if oldest.Valid {
		s.Oldest, s.Newest = time.UnixMilli(oldest.Int64), time.UnixMilli(newest.Int64)
	}
	err = tx.QueryRowContext(ctx, "SELECT (SELECT value FROM counters WHERE name = 'hits'), (SELECT value FROM counters WHERE name = 'saved')").
		Scan(&s.Hits, &s.Saved)
	if err != nil {
		return s, f.fail(err)
	}
	for _, p := range []string{f.path, f.path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			s.DiskBytes += fi.Size()
		}
	}
	return s, nil
}

// Clear implements Store. The file stays, so that processes using it go
// on; the space freed is given back to the file system.
func (f *File) Clear(ctx context.Context) (int64, error) {
	return f.remove(ctx, "DELETE FROM entries", "UPDATE counters SET value = 0")
}

// Prune implements Store.
func (f *File) Prune(ctx context.Context, t time.Time) (int64, error) {
	return f.remove(ctx, "DELETE FROM entries WHERE created < ?", "", t.UnixMilli())
}

func (f *File) remove(ctx context.Context, del, also string, args ...any) (int64, error) {
	tx, err := f.wr.BeginTx(ctx, nil)
	if err != nil {
		return 0, f.fail(err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, del, args...)
	if err != nil {
		return 0, f.fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, f.fail(err)
	}
	if also != "" {
		if _, err := tx.ExecContext(ctx, also); err != nil {
			return 0, f.fail(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, f.fail(err)
	}
	// The file was made with auto_vacuum incremental: give the freed pages
	// back, outside the transaction (it is one of its own).
	if _, err := f.wr.ExecContext(ctx, "PRAGMA incremental_vacuum"); err != nil {
		return n, f.fail(err)
	}
	return n, nil
}

// Close implements Store.
func (f *File) Close() error {
	var errs []error
	for _, st := range f.gets {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, db := range []*sql.DB{f.rd, f.wr} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// String implements Store: the file's path.
func (f *File) String() string { return f.path }

// sqliteHeader opens every SQLite database.
var sqliteHeader = []byte("SQLite format 3\x00")

// RemoveFile deletes the cache at path with its -wal, -shm and -journal:
// `gptbatch cache clear` for a file OpenFile refuses (damaged, another
// format version). It refuses to delete another program's SQLite
// database. A path that does not exist is no error.
func RemoveFile(path string) error {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	head := make([]byte, 72)
	n, _ := io.ReadFull(fh, head)
	fh.Close()
	head = head[:n]
	if n == len(head) && bytes.HasPrefix(head, sqliteHeader) {
		// The application id is the header's big-endian int at 68.
		if id := uint32(head[68])<<24 | uint32(head[69])<<16 | uint32(head[70])<<8 | uint32(head[71]); id != applicationID {
			return fmt.Errorf("%s is not a gptbatch cache but another program's database: not deleted", path)
		}
	}
	var errs []error
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
