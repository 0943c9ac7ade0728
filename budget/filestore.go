package budget

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// FileStore is a Store over usage.md, shared by every process that names
// the same file: flock(2) on usage.md.lock guards it, as each write
// replaces usage.md by rename. Read-only, it takes no lock.
type FileStore struct {
	path, ledger, prices string      // usage.md, and the ledger and stored price table beside it
	perm                 os.FileMode // for the lock and ledger when gptbatch creates them
	// sem is our goroutines' turn at the flock, a channel to wait with ctx.
	sem      chan struct{}
	lock     *flock.Flock
	readOnly bool

	notify      func(msg string) // says that the lock is slow to come
	noticeAfter time.Duration
	after       func(time.Duration) <-chan time.Time // the clock, for tests
}

// OpenFile opens the usage file at path, as o says (Name is not used). A
// symbolic link is resolved once: the lock file (path+".lock") and ledger
// (usage.ledger.jsonl) live beside its target, created with usage.md's
// mode, else 0600. Refused: a usage file, lock file or ledger that is not
// a regular file, and a directory others can write to unless it is sticky
// and the files are the user's. A usage.md that does not parse is an
// error naming it, never reset. Read-only, nothing is checked or created,
// and a usage file that is missing or not a regular file reads as fresh.
func OpenFile(path string, o Options) (*FileStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	f := &FileStore{sem: make(chan struct{}, 1), noticeAfter: time.Second, after: time.After, perm: 0o600,
		notify: o.OnLockWait, readOnly: o.ReadOnly}
	target, err := resolve(abs)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(target, ".md")
	f.path, f.ledger, f.prices = target, base+".ledger.jsonl", base+".prices.json"
	if f.readOnly {
		return f, nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return nil, fmt.Errorf("usage file: %w", err)
	}
	if err := f.check(path); err != nil {
		return nil, err
	}
	f.lock = flock.New(target+".lock", flock.SetPermissions(f.perm), flock.SetFlag(os.O_CREATE|os.O_RDONLY|openSafe))
	if _, err := f.read(); err != nil {
		return nil, err
	}
	return f, nil
}

// Beside is usagePath's target with ".md" replaced by suffix, as OpenFile
// places the ledger; ok is false for /dev/null by any name.
func Beside(usagePath, suffix string) (path string, ok bool) {
	if isDevNull(usagePath) {
		return "", false
	}
	if abs, err := filepath.Abs(usagePath); err == nil {
		if target, err := resolve(abs); err == nil {
			usagePath = target
		}
	}
	return strings.TrimSuffix(usagePath, ".md") + suffix, true
}

// OpenOwn is os.OpenFile (making the directory to create) of a file beside
// usage.md, opened as gptbatch opens its own, refused unless regular and
// the user's.
func OpenOwn(path string, flag int, perm os.FileMode) (*os.File, error) {
	if flag&os.O_CREATE != 0 {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, flag|openSafe, perm)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is %s, not a regular file; gptbatch will not use it", path, kindOf(fi))
	default:
		if uid, _, ok := owner(fi); ok && uid != os.Geteuid() {
			err = fmt.Errorf("%s belongs to another user; gptbatch will not use it", path)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// isDevNull reports whether path is the null device, by any name.
func isDevNull(path string) bool {
	if path == os.DevNull {
		return true
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().IsRegular() {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err == nil && os.SameFile(fi, null)
}

// resolve follows a usage file that is a symbolic link to its target, once.
func resolve(abs string) (string, error) {
	fi, err := os.Lstat(abs)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return abs, nil // a missing file is created; other errors come back on reading it
	}
	target, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("usage file %s is a symbolic link gptbatch cannot follow: %w", abs, err)
	}
	return target, nil
}

// check refuses what OpenFile refuses.
func (f *FileStore) check(given string) error {
	name := f.path
	if abs, _ := filepath.Abs(given); abs != f.path {
		name = fmt.Sprintf("%s (%s)", given, f.path)
	}
	others := "" // the first of the files another user owns
	for i, p := range []string{f.path, f.path + ".lock", f.ledger} {
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("usage file %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			if i == 0 {
				return fmt.Errorf("usage file %s is %s, not a regular file: name a file for gptbatch to keep its counters in, or /dev/null for none", name, kindOf(fi))
			}
			return fmt.Errorf("%s is %s, not a regular file; gptbatch will not use it", p, kindOf(fi))
		}
		if i == 0 {
			f.perm = fi.Mode().Perm()
		}
		if uid, _, ok := owner(fi); ok && uid != os.Geteuid() && others == "" {
			others = p
		}
	}
	dir := filepath.Dir(f.path)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("usage file %s: %w", name, err)
	}
	if di.Mode().Perm()&0o002 == 0 {
		return nil
	}
	if di.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("usage file %s: its directory %s can be written by any user, who could replace gptbatch's files; use a directory only you (or your group) can write to", name, dir)
	}
	if others != "" {
		return fmt.Errorf("usage file %s: %s belongs to another user, in %s, which any user can write to; gptbatch will not use it", name, others, dir)
	}
	return nil
}

// kindOf says what a file that is not a regular file is.
func kindOf(fi os.FileInfo) string {
	switch m := fi.Mode(); {
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// String is the usage file: the target of a symbolic link.
func (f *FileStore) String() string { return f.path }

// Close implements Store; the lock is only held during an Update.
func (f *FileStore) Close() error { return nil }

// read parses usage.md; missing (read-only, or not regular) is fresh.
func (f *FileStore) read() (State, error) {
	b, err := readRegular(f.path)
	if errors.Is(err, os.ErrNotExist) || (f.readOnly && errors.Is(err, errNotRegular)) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("usage file %s: %w", f.path, err)
	}
	s, err := ParseState(b)
	if err != nil {
		return State{}, fmt.Errorf("usage file %s is corrupt; gptbatch will not reset it, fix or remove it: %w", f.path, err)
	}
	return s, nil
}

// readRegular reads a regular file, opened as openSafe says.
func readRegular(path string) ([]byte, error) {
	r, err := os.OpenFile(path, os.O_RDONLY|openSafe, 0)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	fi, err := r.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", kindOf(fi), errNotRegular)
	}
	return io.ReadAll(r)
}

var errNotRegular = errors.New("not a regular file")

// locked runs fn holding the lock, telling it how long it waited for it.
func (f *FileStore) locked(ctx context.Context, fn func(waited time.Duration) error) error {
	if f.readOnly {
		return fmt.Errorf("usage file %s is open read-only", f.path)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	start, turn := time.Now(), true
	select {
	case f.sem <- struct{}{}:
	default:
		turn = false
		select {
		case f.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	free, err := f.acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		f.lock.Unlock()
		<-f.sem
	}()
	var waited time.Duration
	if !turn || !free {
		waited = time.Since(start)
	}
	return fn(waited)
}

// acquire takes the flock in our turn (sem) and says whether it was free;
// on failure, the turn goes back, or to the goroutine still waiting.
func (f *FileStore) acquire(ctx context.Context) (free bool, err error) {
	ok, err := f.lock.TryLock()
	if err != nil {
		<-f.sem
		return false, fmt.Errorf("lock %s: %w", f.lock.Path(), err)
	}
	if ok {
		return true, nil
	}
	got := make(chan error, 1)
	go func() { got <- f.lock.Lock() }()
	notice := f.after(f.noticeAfter)
	for {
		select {
		case err := <-got:
			if err != nil {
				<-f.sem
				return false, fmt.Errorf("lock %s: %w", f.lock.Path(), err)
			}
			return false, nil
		case <-notice:
			notice = nil
			if f.notify != nil {
				f.notify(fmt.Sprintf("waiting for the lock on %s (held by another gptbatch?)", f.lock.Path()))
			}
		case <-ctx.Done():
			// A blocked flock(2) cannot be called off: the goroutine in
			// it lets the lock go as soon as it has it, and only then our
			// turn, so that no Update of ours takes the lock for its own.
			go func() {
				if <-got == nil {
					f.lock.Unlock()
				}
				<-f.sem
			}()
			return false, ctx.Err()
		}
	}
}

// Load reads the state under the lock (read-only, without).
func (f *FileStore) Load(ctx context.Context) (s State, err error) {
	if f.readOnly {
		if err := ctx.Err(); err != nil {
			return State{}, err
		}
		return f.read()
	}
	err = f.locked(ctx, func(time.Duration) error {
		s, err = f.read()
		return err
	})
	return s, err
}

// Update implements Store: under the lock, fn's entries are appended to
// the ledger, then usage.md is replaced if the state changed; a failed
// write leaves both as they were, so that no call counts twice. The time
// is now plus the wait for the lock, or a now from before a long wait
// would clamp the file's updated (maxFuture).
func (f *FileStore) Update(ctx context.Context, now time.Time, fn func(*State, time.Time) ([]LedgerEntry, error)) error {
	return f.locked(ctx, func(waited time.Duration) error {
		old, err := f.read()
		if err != nil {
			return err
		}
		s := old
		s.extra = append([][2]string(nil), old.extra...)
		entries, err := fn(&s, now.Add(waited))
		if err != nil {
			return err
		}
		undo, err := f.append(entries)
		if b := s.Format(); err == nil && !bytes.Equal(b, old.Format()) {
			if err = writeAtomic(f.path, b, f.path); err != nil {
				undo()
			}
		}
		return err
	})
}

// writeAtomic replaces the regular file at path with b, a synced file
// renamed over it, so that a reader or a crash sees the old or the new
// one; it gets the mode, owner and group of like where it can.
func writeAtomic(path string, b []byte, like string) (err error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is now %s; gptbatch will not replace it", path, kindOf(fi))
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if old, err := os.Lstat(like); err == nil && old.Mode().IsRegular() {
		if err := tmp.Chmod(old.Mode().Perm()); err != nil {
			return err
		}
		chownLike(tmp, old)
	}
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// append adds entries to the ledger in one write and returns its undo.
func (f *FileStore) append(entries []LedgerEntry) (undo func(), err error) {
	if len(entries) == 0 {
		return func() {}, nil
	}
	b := make([]byte, 0, 320*len(entries)) // about a line's size each
	for i := range entries {
		if b, err = entries[i].appendJSON(b); err != nil {
			return nil, fmt.Errorf("ledger %s: %w", f.ledger, err)
		}
	}
	lf, err := os.OpenFile(f.ledger, os.O_RDWR|os.O_APPEND|os.O_CREATE|openSafe, f.perm)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer func() {
		if cerr := lf.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("ledger %s: %w", f.ledger, cerr)
		}
	}()
	if fi, err := lf.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ledger %s is not a regular file; gptbatch will not write to it", f.ledger)
	}
	if err := repairTorn(lf); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", f.ledger, err)
	}
	size, err := lf.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = lf.Write(b)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", f.ledger, err)
	}
	return func() {
		if lf, err := os.OpenFile(f.ledger, os.O_WRONLY|openSafe, 0); err == nil {
			lf.Truncate(size) //nolint:errcheck // at worst the entries stay, counted in reports only
			lf.Close()
		}
	}, nil
}

// repairTorn ends a ledger torn mid-append with a whole line, as ReadLedger
// reads it: its last line is finished when it parses, else cut off.
func repairTorn(lf *os.File) error {
	st, err := lf.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	// Find the start of the last line, reading back a block at a time.
	end := st.Size()
	buf := make([]byte, 64<<10)
	start := end
	for start > 0 {
		n := min(int64(len(buf)), start)
		if _, err := lf.ReadAt(buf[:n], start-n); err != nil {
			return err
		}
		if start == end && buf[n-1] == '\n' {
			return nil // whole
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			start = start - n + int64(i) + 1
			break
		}
		start -= n
	}
	tail := make([]byte, end-start)
	if _, err := lf.ReadAt(tail, start); err != nil {
		return err
	}
	var e LedgerEntry
	if json.Unmarshal(tail, &e) == nil {
		_, err = lf.Write([]byte("\n"))
		return err
	}
	return lf.Truncate(start)
}

// Report implements Store, without the lock: a line being appended is a
// torn last line, skipped.
func (f *FileStore) Report(ctx context.Context, opt ReportOptions, loc *time.Location) (Report, error) {
	return buildReport(opt, loc, f.scan(ctx, nil))
}

// BatchEntries implements Store as Report reads, decoding batches' lines.
func (f *FileStore) BatchEntries(ctx context.Context, since time.Time, ids map[string]bool) (map[string]int, error) {
	return countBatches(ids, f.scan(ctx, func(line []byte) bool { return bytes.Contains(line, []byte(`"batch_id":`)) }))
}

// scan reads the ledger leniently, only the lines want keeps (if set),
// unless ctx is done.
func (f *FileStore) scan(ctx context.Context, want func(line []byte) bool) ledgerRead {
	return func(fn func(LedgerEntry) error) (int, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		lf, err := os.OpenFile(f.ledger, os.O_RDONLY|openSafe, 0)
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("ledger: %w", err)
		}
		defer lf.Close()
		skipped, err := readLedger(lf, fn, true, want)
		if err != nil {
			return 0, fmt.Errorf("ledger %s: %w", f.ledger, err)
		}
		return skipped, nil
	}
}
