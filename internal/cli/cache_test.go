package cli

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gptbatch/gptbatch/internal/cache"
)

// --cache alone turns the cache on in its default place, --cache=PATH
// names a file (~/ the home directory, a relative path in the working
// directory), and GPTBATCH_CACHE takes the same values.
func TestCacheFlag(t *testing.T) {
	t.Parallel()
	const home, def = "/home/me", "/home/me/.cache/gptbatch/cache.db"
	for _, tc := range []struct {
		name string
		env  string
		args []string
		on   bool
		file string
	}{
		{"off by default", "", nil, false, def},
		{"--cache alone: the default place", "", []string{"--cache"}, true, def},
		{"--cache takes no argument after it", "", []string{"--cache", "--dry-run"}, true, def},
		{"--cache=PATH", "", []string{"--cache=/data/answers.db"}, true, "/data/answers.db"},
		{"--cache=~/PATH", "", []string{"--cache=~/answers.db"}, true, "/home/me/answers.db"},
		{"--cache=relative PATH", "", []string{"--cache=answers.db"}, true, "/work/answers.db"},
		{"--cache=off", "", []string{"--cache=off"}, false, def},
		{"GPTBATCH_CACHE=on", "on", nil, true, def},
		{"GPTBATCH_CACHE=PATH", "/data/answers.db", nil, true, "/data/answers.db"},
		{"GPTBATCH_CACHE=off", "off", nil, false, def},
		{"--no-cache over GPTBATCH_CACHE", "on", []string{"--no-cache"}, false, def},
		{"--cache=PATH over GPTBATCH_CACHE", "/a.db", []string{"--cache=/b.db"}, true, "/b.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"HOME": home, "GPTBATCH_CACHE": tc.env}
			c := cli{runCmd: runCmd{seams: Seams{Dir: "/work", Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}}}
			p, err := newParser(&c, io.Discard, io.Discard, func(int) {})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Parse(tc.args); err != nil {
				t.Fatalf("Parse(%q): %v", tc.args, err)
			}
			file, err := c.cacheFile()
			if c.Cache.on != tc.on || file != tc.file || err != nil {
				t.Errorf("Parse(%q) with GPTBATCH_CACHE=%q: cache on %v in %q (%v), want on %v in %q", tc.args, tc.env, c.Cache.on, file, err, tc.on, tc.file)
			}
		})
	}
}

// The host's cache is in $XDG_CACHE_HOME, else in ~/.cache: a relative
// XDG_CACHE_HOME is invalid, says the XDG spec, and is ignored.
func TestCacheDefaultFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ xdg, want string }{
		{"/var/cache/me", "/var/cache/me/gptbatch/cache.db"},
		{"", "/home/me/.cache/gptbatch/cache.db"},
		{"relative/cache", "/home/me/.cache/gptbatch/cache.db"},
	} {
		env := map[string]string{"HOME": "/home/me", "XDG_CACHE_HOME": tc.xdg}
		r := runCmd{seams: Seams{Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}}
		if got, err := r.cacheFile(); got != tc.want || err != nil {
			t.Errorf("cacheFile() with XDG_CACHE_HOME=%q = %q, %v, want %q", tc.xdg, got, err, tc.want)
		}
	}
}

func TestParseSpan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"30d", 30 * 24 * time.Hour}, {"2w", 14 * 24 * time.Hour}, {"1.5d", 36 * time.Hour},
		{"12h", 12 * time.Hour}, {"90m", 90 * time.Minute}, {"0", 0},
	} {
		if got, err := parseSpan(tc.in); got != tc.want || err != nil {
			t.Errorf("parseSpan(%q) = %v, %v, want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "30 days", "1y", "-5m"} {
		if got, err := parseSpan(in); err == nil {
			t.Errorf("parseSpan(%q) = %v, want an error", in, got)
		}
	}
}

// cacheGB is gptbatch with its default cache under a temporary
// XDG_CACHE_HOME, and that cache's path.
func cacheGB(t *testing.T) (*gb, string) {
	t.Helper()
	g := newGB(t, "http://127.0.0.1:1/v1")
	xdg := filepath.Join(g.dir, "xdg-cache")
	g.setenv("XDG_CACHE_HOME", xdg)
	return g, filepath.Join(xdg, "gptbatch", "cache.db")
}

// fillCache stores three answers at path, two of them two days old, and
// five hits that saved $0.0000375.
func fillCache(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	f, err := cache.OpenFile(ctx, path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now := time.Now()
	for i, created := range []time.Time{now.Add(-48 * time.Hour), now.Add(-47 * time.Hour), now} {
		k, err := cache.KeyOf("/v1/chat/completions", "https://api.openai.com/v1", []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say `+string(rune('0'+i))+`"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		e := cache.Entry{Key: k, Endpoint: "/v1/chat/completions", Model: "gpt-4o-mini-2024-07-18", Created: created, Cost: 7500000, Body: []byte(`{"choices":[]}`)}
		if err := f.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.RecordHits(ctx, 5, 37500000); err != nil {
		t.Fatal(err)
	}
}

func cacheJSON(t *testing.T, g *gb, args ...string) cacheReport {
	t.Helper()
	out, stderr, code := g.run(context.Background(), "", append([]string{"cache", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("gptbatch cache --json: exit %d: %s", code, stderr)
	}
	var rep cacheReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("gptbatch cache --json: %v: %s", err, out)
	}
	return rep
}

// gptbatch cache reports what the cache holds and saved; prune and clear
// remove answers.
func TestCacheCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, path := cacheGB(t)
	fillCache(t, path)

	out, stderr, code := g.run(ctx, "", "cache")
	if code != 0 {
		t.Fatalf("gptbatch cache: exit %d: %s", code, stderr)
	}
	for _, want := range []string{path, "3 answers, from ", "hits     5", "saved    $0.0000375", "ttl      30d"} {
		if !strings.Contains(out, want) {
			t.Errorf("gptbatch cache = %q, want it to say %q", out, want)
		}
	}
	rep := cacheJSON(t, g)
	if !rep.Exists || rep.Entries != 3 || rep.Bytes != 3*int64(len(`{"choices":[]}`)) || rep.Hits != 5 || rep.Cache != path || rep.Oldest == nil {
		t.Errorf("gptbatch cache --json = %+v", rep)
	}
	if saved, _ := json.Marshal(rep.SavedUSD); string(saved) != "0.0000375" {
		t.Errorf("saved_usd = %s, want 0.0000375", saved)
	}

	out, stderr, code = g.run(ctx, "", "cache", "prune", "--older-than", "1d")
	if code != 0 || !strings.Contains(out, "removed 2 answers older than 1d") {
		t.Errorf("gptbatch cache prune --older-than 1d = %q, %q, exit %d", out, stderr, code)
	}
	if rep := cacheJSON(t, g); rep.Entries != 1 || rep.Hits != 5 {
		t.Errorf("after prune: %+v, want 1 answer and the 5 hits", rep)
	}

	out, stderr, code = g.run(ctx, "", "cache", "clear")
	if code != 0 || !strings.Contains(out, "removed 1 answer from "+path) {
		t.Errorf("gptbatch cache clear = %q, %q, exit %d", out, stderr, code)
	}
	if rep := cacheJSON(t, g); rep.Entries != 0 || rep.Hits != 0 || !rep.Exists {
		t.Errorf("after clear: %+v, want nothing", rep)
	}
}

// A cache that does not exist is reported empty, and not made.
func TestCacheCommandNoCache(t *testing.T) {
	t.Parallel()
	g, _ := cacheGB(t)
	path := filepath.Join(g.dir, "none", "cache.db")
	for _, args := range [][]string{{"cache"}, {"cache", "clear"}, {"cache", "prune", "--older-than", "2w"}} {
		out, stderr, code := g.run(context.Background(), "", append(args, "--cache="+path)...)
		if code != 0 || !strings.Contains(out, "no cache at "+path) {
			t.Errorf("gptbatch %s = %q, %q, exit %d, want: no cache at %s", strings.Join(args, " "), out, stderr, code, path)
		}
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("gptbatch cache made %s", filepath.Dir(path))
	}
}

// A damaged cache is a usage error that says how to clear it, and
// gptbatch cache clear does.
func TestCacheCommandDamaged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, path := cacheGB(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(path), "cache.db", strings.Repeat("garbage ", 1000))
	_, stderr, code := g.run(ctx, "", "cache")
	if code != exitUsage || !strings.Contains(stderr, path) || !strings.Contains(stderr, "gptbatch cache clear") {
		t.Errorf("gptbatch cache on a damaged file: exit %d, %q; want 2, naming it and how to clear it", code, stderr)
	}
	out, stderr, code := g.run(ctx, "", "cache", "clear")
	if code != 0 || !strings.Contains(out, "deleted "+path) {
		t.Errorf("gptbatch cache clear on a damaged file = %q, %q, exit %d", out, stderr, code)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the damaged file is still there: %v", err)
	}
}
