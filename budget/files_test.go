//go:build unix

package budget

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// /dev/null, by name or through a link, is no shared state: a store in
// memory for this run, and nothing written anywhere.
func TestOpenDevNull(t *testing.T) {
	link := filepath.Join(t.TempDir(), "usage.md")
	if err := os.Symlink(os.DevNull, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{os.DevNull, link} {
		t.Run(path, func(t *testing.T) {
			ctx := context.Background()
			f, err := Open(ctx, path, Options{})
			if err != nil {
				t.Fatalf("Open(%s) = %v", path, err)
			}
			if _, ok := f.(*MemStore); !ok || f.String() != os.DevNull {
				t.Errorf("Open(%s) = %T named %s, want a MemStore named %s", path, f, f, os.DevNull)
			}
			for i := range 2 {
				if err := bump(ctx, f, "x"); err != nil {
					t.Fatalf("Update %d = %v", i, err)
				}
			}
			if st, err := f.Load(ctx); err != nil || st.TokensWithinDay != 2 {
				t.Errorf("Load = %+v, %v; want tokens_within_day 2 (kept in memory)", st, err)
			}
			for _, p := range []string{os.DevNull + ".lock", "/dev/null.ledger.jsonl", "/dev/usage.ledger.jsonl"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("Open(%s) created %s", path, p)
				}
			}
			if fi, err := os.Lstat(os.DevNull); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
				t.Errorf("%s is no longer a character device: %v, %v", os.DevNull, fi.Mode(), err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(link)); len(ents) != 1 {
				t.Errorf("the link's directory holds %v, want only the link", ents)
			}
		})
	}
}

// Any other path that is not a regular file is refused with an error
// naming it, and nothing is created beside it.
func TestOpenFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.md")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, kind string }{
		{sub, "a directory"},
		{fifo, "a named pipe"},
		{"/dev/zero", "a device"},
	} {
		_, err := OpenFile(tt.path, Options{})
		if err == nil || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.kind) {
			t.Errorf("OpenFile(%s) = %v, want an error naming it as %s", tt.path, err, tt.kind)
		}
		if _, err := os.Lstat(tt.path + ".lock"); err == nil {
			t.Errorf("OpenFile(%s) created its lock file", tt.path)
			os.Remove(tt.path + ".lock")
		}
	}
	// A usage.md swapped for something else after OpenFile is not replaced.
	path := filepath.Join(dir, "usage.md")
	f, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bump(context.Background(), f, "x"); err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("Update over a named pipe = %v, want an error saying so", err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the named pipe was replaced: %v, %v", fi.Mode(), err)
	}
}

// A symlinked usage.md stays a link: the state is written to its target,
// and the lock and ledger live beside the target, shared with every
// process naming either.
func TestOpenFileSymlink(t *testing.T) {
	shared, home := t.TempDir(), t.TempDir()
	target := filepath.Join(shared, "usage.md")
	link := filepath.Join(home, "usage.md")
	if err := os.Symlink(target, link); err == nil {
		_, err = OpenFile(link, Options{})
		if err == nil || !strings.Contains(err.Error(), link) {
			t.Errorf("OpenFile(dangling link) = %v, want an error naming %s", err, link)
		}
	}
	ctx := context.Background()
	direct, err := OpenFile(target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bump(ctx, direct, "direct"); err != nil {
		t.Fatal(err)
	}
	viaLink, err := OpenFile(link, Options{})
	if err != nil {
		t.Fatalf("OpenFile(link) = %v", err)
	}
	if viaLink.path != target || viaLink.ledger != filepath.Join(shared, "usage.ledger.jsonl") {
		t.Errorf("OpenFile(link): Path %s, LedgerPath %s; want the target %s and the ledger beside it", viaLink.path, viaLink.ledger, target)
	}
	if err := bump(ctx, viaLink, "link"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s after a write: %v, %v; want it still a link", link, fi.Mode(), err)
	}
	if st, err := direct.Load(ctx); err != nil || st.TokensWithinDay != 2 {
		t.Errorf("Load through the target = %+v, %v; want tokens_within_day 2 (one budget)", st, err)
	}
	if ents, _ := os.ReadDir(home); len(ents) != 1 {
		t.Errorf("the link's directory holds %v, want only the link", ents)
	}
	if ids := ledgerIDs(t, direct.ledger); strings.Join(ids, ",") != "direct,link" {
		t.Errorf("ledger ids = %v, want direct,link", ids)
	}
}

// A replaced usage.md keeps the mode, owner and group it had; only files
// gptbatch creates are 0600.
func TestReplaceKeepsModeAndGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.md")
	if err := os.WriteFile(path, []byte("tokens_within_day = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		t.Fatal(err)
	}
	const gid = 4242 // a group the test user (root) is not in
	root := os.Geteuid() == 0
	if root {
		if err := os.Chown(path, -1, gid); err != nil {
			t.Fatal(err)
		}
	}
	f, err := OpenFile(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bump(context.Background(), f, "x"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("usage.md after a write: mode %v, want 0660 as it was", fi.Mode().Perm())
	}
	if _, g, ok := owner(fi); root && ok && g != gid {
		t.Errorf("usage.md after a write: group %d, want %d as it was", g, gid)
	}
}

// The lock and ledger are never opened through a link, and a directory
// any user can write to is refused unless it is sticky and the files are
// the user's.
func TestOpenFileNoFollow(t *testing.T) {
	t.Run("links", func(t *testing.T) {
		for _, name := range []string{"usage.md.lock", "usage.ledger.jsonl"} {
			dir := t.TempDir()
			victim := filepath.Join(t.TempDir(), "victim")
			if err := os.WriteFile(victim, []byte("keep\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			_, err := OpenFile(filepath.Join(dir, "usage.md"), Options{})
			if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("OpenFile with %s a link = %v, want an error naming it a symbolic link", name, err)
			}
		}
		// A ledger link made after OpenFile is not followed either.
		dir := t.TempDir()
		victim := filepath.Join(t.TempDir(), "victim")
		if err := os.WriteFile(victim, []byte("keep\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := OpenFile(filepath.Join(dir, "usage.md"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, f.ledger); err != nil {
			t.Fatal(err)
		}
		if err := bump(context.Background(), f, "x"); err == nil {
			t.Error("Update appended to a ledger that is a link, want an error")
		}
		if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
			t.Errorf("the link's target became %q", b)
		}
	})
	t.Run("directory", func(t *testing.T) {
		for _, tt := range []struct {
			name    string
			mode    os.FileMode
			foreign bool // usage.md belongs to another user
			want    string
		}{
			{"world-writable", 0o777, false, "can be written by any user"},
			{"sticky, own files", 0o777 | os.ModeSticky, false, ""},
			{"sticky, another's file", 0o777 | os.ModeSticky, true, "belongs to another user"},
			{"group-writable", 0o770, false, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "shared")
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(dir, "usage.md")
				if err := os.WriteFile(path, []byte("tokens_within_day = 0\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if tt.foreign {
					if os.Geteuid() != 0 {
						t.Skip("needs root to give a file to another user")
					}
					if err := os.Chown(path, 4242, 4242); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.Chmod(dir, tt.mode); err != nil {
					t.Fatal(err)
				}
				_, err := OpenFile(path, Options{})
				if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), dir)) {
					t.Errorf("OpenFile in a %v directory = %v, want %q", tt.mode, err, tt.want)
				}
			})
		}
	})
}

// A lock held by someone else is said once, through the hook, after about
// a second; cancelling the context ends the wait at once with its error,
// and the store is usable again when the lock is free.
func TestLockWait(t *testing.T) {
	msgs := make(chan string, 4)
	f, err := OpenFile(filepath.Join(t.TempDir(), "usage.md"), Options{OnLockWait: func(m string) { msgs <- m }})
	if err != nil {
		t.Fatal(err)
	}
	var asked []time.Duration
	f.after = func(d time.Duration) <-chan time.Time {
		// The test's clock: the second has passed at once.
		asked = append(asked, d)
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	held := flock.New(f.path + ".lock")
	if err := held.Lock(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bump(ctx, f, "waited") }()
	want := "waiting for the lock on " + f.path + ".lock (held by another gptbatch?)"
	if m := <-msgs; m != want {
		t.Errorf("lock wait message = %q, want %q", m, want)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Update cancelled while waiting for the lock = %v, want %v", err, context.Canceled)
	}
	if len(asked) != 1 || asked[0] != time.Second {
		t.Errorf("the wait asked the clock for %v, want one 1s", asked)
	}
	select {
	case m := <-msgs:
		t.Errorf("a second message %q, want the message once", m)
	default:
	}
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	// The abandoned wait let the lock go: the store works again.
	if err := bump(context.Background(), f, "after"); err != nil {
		t.Fatalf("Update after the lock was freed = %v", err)
	}
	if st, err := f.Load(context.Background()); err != nil || st.TokensWithinDay != 1 {
		t.Errorf("Load = %+v, %v; want tokens_within_day 1 (the cancelled update did nothing)", st, err)
	}
}

// A usage file opened read-only never blocks on a named pipe nor creates
// anything; one that is missing or not a regular file reads as fresh, and
// one that does not parse is an error. It cannot be updated.
func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "usage.md")
	if err := os.WriteFile(good, []byte("tokens_within_day = 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.md")
	if err := os.WriteFile(bad, []byte("nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		path   string
		tokens int64
		err    bool
	}{
		{good, 7, false},
		{fifo, 0, false},
		{os.DevNull, 0, false},
		{dir, 0, false},
		{filepath.Join(dir, "missing.md"), 0, false},
		{filepath.Join(dir, "missing", "usage.md"), 0, false},
		{bad, 0, true},
	} {
		f, err := Open(ctx, tt.path, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("Open(%s, read-only) = %v", tt.path, err)
		}
		st, err := f.Load(ctx)
		if st.TokensWithinDay != tt.tokens || (err != nil) != tt.err {
			t.Errorf("Open(%s, read-only).Load() = tokens_within_day %d, %v; want %d, error %v", tt.path, st.TokensWithinDay, err, tt.tokens, tt.err)
		}
		if rep, err := f.Report(ctx, ReportOptions{}, time.UTC); err != nil || rep.Total.Requests != 0 {
			t.Errorf("Open(%s, read-only).Report() = %+v, %v; want an empty report", tt.path, rep.Total, err)
		}
	}
	f, _ := Open(ctx, good, Options{ReadOnly: true})
	if err := bump(ctx, f, "x"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("Update on a read-only usage file = %v, want an error saying it is read-only", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Errorf("reading left %v, want the three files it was given", ents)
	}
}

// A clock read before a long wait for the lock is that much behind once
// the update runs: the update's time is it plus the wait, so that it
// neither drains the buckets as of then nor, more than maxFuture behind
// the file's updated, clamps updated back and hands out its refill twice.
func TestFileStoreTimeAfterLockWait(t *testing.T) {
	msgs := make(chan string, 1)
	f, err := OpenFile(filepath.Join(t.TempDir(), "usage.md"), Options{OnLockWait: func(m string) { msgs <- m }})
	if err != nil {
		t.Fatal(err)
	}
	f.noticeAfter = 1500 * time.Millisecond
	ctx := context.Background()
	g := exactGate(f, Limits{RPM: 60})
	// Another process, its clock read later than ours, filled the bucket.
	reserve(t, g, t0.Add(1200*time.Millisecond), ones(60, 1)...)
	held := flock.New(f.path + ".lock")
	if err := held.Lock(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, _, _, err := g.Reserve(ctx, t0, ones(1, 1)) // read at t0, before the wait
		done <- result{n, err}
	}()
	<-msgs // it has waited 1.5 s for the lock
	if err := held.Unlock(); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.n != 0 {
		t.Errorf("Reserve after 1.5 s behind the lock = %d, %v; want 0 (the bucket has drained 0.3 s since it was full)", r.n, r.err)
	}
	// At 1.5 s, by a fresh clock, the bucket has drained 0.3 s since it
	// was full: no room yet. With updated clamped back to the stale
	// clock, it would have drained 1.5 s and admitted one.
	if n, wait, _ := reserve(t, g, t0.Add(1500*time.Millisecond), ones(1, 1)...); n != 0 || wait.Round(time.Millisecond) != 700*time.Millisecond {
		t.Errorf("Reserve at 1.5 s = %d, wait %v; want 0, 700ms", n, wait)
	}
}
