package cache

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The cache holds prompts' answers: its file, -wal and -shm are the
// user's alone, whatever the umask.
func TestFileModeIsPrivate(t *testing.T) {
	for _, umask := range []int{0, 0o022, 0o077} {
		t.Run("umask "+strconv.FormatInt(int64(umask), 8), func(t *testing.T) {
			old := syscall.Umask(umask)
			defer syscall.Umask(old)
			dir := filepath.Join(t.TempDir(), "gptbatch")
			path := filepath.Join(dir, "cache.db")
			f := openFile(t, path, Options{})
			if err := f.Put(context.Background(), testEntry(1, t0)); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != 0o600 {
					t.Errorf("%s: mode %o, want 600", filepath.Base(p), got)
				}
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("the directory made for it: %v, %v, want mode 700", fi.Mode(), err)
			}
		})
	}
}

// A path with the characters a file: URI gives a meaning is the file it
// names.
func TestFileAnyPath(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a dir?x=1#y%20", "cache.db")
	f := openFile(t, path, Options{})
	if err := f.Put(context.Background(), testEntry(1, t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the cache is not at %s: %v", path, err)
	}
}

// A file that cannot be a cache is refused at open with an error that
// names it and says what to do; `gptbatch cache clear` (RemoveFile)
// then clears it, unless it is another program's database.
func TestFileRefusedAtOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		make  func(t *testing.T, path string)
		want  []string
		clear bool // RemoveFile clears it
	}{
		{"another format version", func(t *testing.T, path string) {
			openFile(t, path, Options{}).Close()
			execSQL(t, path, "UPDATE meta SET value = 1 WHERE name = 'format'")
		}, []string{"format version 1", "reads version 2", "`gptbatch cache clear` or delete the file"}, true},
		{"not a database", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 500)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"damaged or not an SQLite database", "`gptbatch cache clear` or delete the file"}, true},
		{"a damaged database", func(t *testing.T, path string) {
			openFile(t, path, Options{}).Close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Page 1's b-tree header, after the 100-byte file header: the
			// schema the open reads.
			copy(b[100:], strings.Repeat("\xff", 100))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"damaged or not an SQLite database", "`gptbatch cache clear` or delete the file"}, true},
		{"another program's database", func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec("CREATE TABLE notes (text TEXT)"); err != nil {
				t.Fatal(err)
			}
		}, []string{"not a gptbatch cache", "--cache=PATH"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cache.db")
			tc.make(t, path)
			f, err := OpenFile(ctx, path, Options{})
			if err == nil {
				f.Close()
				t.Fatalf("OpenFile(%s) opened it", tc.name)
			}
			if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), path) {
				t.Errorf("OpenFile = %v, want ErrUnusable naming %s", err, path)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("OpenFile = %v, want it to say %q", err, w)
				}
			}
			err = RemoveFile(path)
			if !tc.clear {
				if _, serr := os.Stat(path); err == nil || serr != nil {
					t.Errorf("RemoveFile(%s) = %v, and the file: %v; want it refused and kept", tc.name, err, serr)
				}
				return
			}
			if err != nil {
				t.Fatalf("RemoveFile = %v", err)
			}
			openFile(t, path, Options{}) // a new cache
		})
	}
}

// A cache that cannot be written is refused at open, not mid-run: a new
// file in a read-only directory, a cache in one (WAL needs its -wal and
// -shm beside it), a read-only file. Root writes anywhere, so as root
// the open runs in a process of user nobody.
func TestFileNotWritableRefusedAtOpen(t *testing.T) {
	t.Parallel()
	root, err := os.MkdirTemp("", "cachetest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error { os.Chmod(p, 0o700); return nil })
		os.RemoveAll(root)
	})
	uid, gid := os.Getuid(), os.Getgid()
	var cred *syscall.Credential
	if uid == 0 {
		uid, gid = 65534, 65534
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// The test binary where nobody can run it.
	exe := filepath.Join(root, "cache.test")
	copyFile(t, exe)
	for _, p := range []string{root, exe} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mine := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		make func(dir string) string // the cache's path
	}{
		{"a new cache in a read-only directory", func(dir string) string {
			mine(dir, 0o555)
			return filepath.Join(dir, "cache.db")
		}},
		{"a cache in a read-only directory", func(dir string) string {
			path := filepath.Join(dir, "cache.db")
			f := openFile(t, path, Options{})
			if err := f.Put(context.Background(), testEntry(1, t0)); err != nil {
				t.Fatal(err)
			}
			f.Close() // the last connection removes -wal and -shm
			mine(path, 0o600)
			mine(dir, 0o555)
			return path
		}},
		{"a read-only cache", func(dir string) string {
			path := filepath.Join(dir, "cache.db")
			openFile(t, path, Options{}).Close()
			mine(path, 0o400)
			mine(dir, 0o755)
			return path
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := os.MkdirTemp(root, "dir-")
			if err != nil {
				t.Fatal(err)
			}
			path := tc.make(dir)
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), envOpen+"="+path)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v: %s", exe, err, out)
			}
			if got := string(out); !strings.HasPrefix(got, "ErrUnusable true: ") || !strings.Contains(got, path) ||
				!strings.Contains(got, "cannot be written") || !strings.Contains(got, "--cache=PATH") {
				t.Errorf("OpenFile(%s) = %s, want ErrUnusable: cannot be written, naming the file and --cache=PATH", path, got)
			}
		})
	}
}

// copyFile copies the running test binary to dst.
func copyFile(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// Four processes open one new cache at the same moment and read and write
// overlapping keys: none fails, every answer served is its key's, and
// every key ends up stored.
func TestFileSharedByProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cache.db")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmds := make([]*exec.Cmd, workers)
	outs := make([]strings.Builder, workers)
	for i := range cmds {
		cmds[i] = exec.Command(self)
		cmds[i].Env = append(os.Environ(), envWorker+"="+path+","+strconv.Itoa(i))
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("worker %d: %v: %s", i, err, outs[i].String())
		}
	}
	f := openFile(t, path, Options{})
	var keys []Key
	for i := range allKeys {
		keys = append(keys, testKey(i))
	}
	got, err := f.GetMany(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e == nil {
			t.Errorf("key %d is not stored", i)
			continue
		}
		if want := testEntry(i, t0); string(e.Body) != string(want.Body) || e.Cost != want.Cost {
			t.Errorf("key %d = %s, want %s", i, e.Body, want.Body)
		}
	}
	st, err := f.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Each worker's second pass hits on all but the tenth it puts again.
	if st.Entries != allKeys || st.Hits < workers*workerKeys*8/10 {
		t.Errorf("Stats = %+v, want %d entries and at least %d hits", st, allKeys, workers*workerKeys*8/10)
	}
}
