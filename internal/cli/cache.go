package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"
	"github.com/redis/go-redis/v9"

	"github.com/gptbatch/gptbatch/budget"
	"github.com/gptbatch/gptbatch/internal/cache"
	"github.com/gptbatch/gptbatch/pipeline"
)

// cacheSpec is --cache: off, on (the default place: beside the budget),
// or a file. It is a flag that takes a value only after "=", so that
// `--cache` alone turns the cache on where it belongs and
// `--cache=PATH` names a file; a flag that always took a value would read
// the next argument as the path, and a --cache bool with a --cache-file
// beside it would be two flags for one choice. The environment
// (GPTBATCH_CACHE) takes the same values: on, off or a path.
type cacheSpec struct {
	on   bool
	path string // a file; "" for the default place
}

// Decode implements kong.MapperValue.
func (c *cacheSpec) Decode(ctx *kong.DecodeContext) error {
	if ctx.Scan.Peek().Type != kong.FlagValueToken {
		*c = cacheSpec{on: true} // --cache alone
		return nil
	}
	tok := ctx.Scan.Pop()
	switch v := tok.Value.(type) {
	case bool: // --no-cache
		*c = cacheSpec{on: v}
		return nil
	case string:
		return c.set(v)
	default:
		return fmt.Errorf("--cache: want on, off or a path, not %v", tok.Value)
	}
}

func (c *cacheSpec) set(v string) error {
	switch strings.ToLower(v) {
	case "on", "true", "yes", "1":
		*c = cacheSpec{on: true}
	case "off", "false", "no", "0":
		*c = cacheSpec{}
	default:
		*c = cacheSpec{on: true, path: v}
	}
	return nil
}

// IsBool implements kong.BoolMapper: --cache needs no value.
func (c *cacheSpec) IsBool() bool { return true }

// span is a length of time as people write one for a cache: 30d, 2w, 12h,
// 90m, or anything time.ParseDuration reads.
type span time.Duration

// Decode implements kong.MapperValue.
func (a *span) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("span", &s); err != nil {
		return err
	}
	d, err := parseSpan(s)
	if err != nil {
		return err
	}
	*a = span(d)
	return nil
}

// parseSpan reads 30d, 2w, 1.5d or a time.ParseDuration span; a day is 24
// hours.
func parseSpan(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			if err != nil || f < 0 || f*float64(unit) > float64(1<<62) {
				return 0, fmt.Errorf("%q: want a span like 30d, 2w, 12h or 90m", s)
			}
			return time.Duration(f * float64(unit)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a span like 30d, 2w, 12h or 90m", s)
	}
	return d, nil
}

// String writes a as parseSpan reads it: whole days as "30d".
func (a span) String() string {
	d := time.Duration(a)
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// cacheCmd reports on, clears and prunes the response cache.
type cacheCmd struct {
	JSON  bool          `name:"json" help:"Write JSON instead of a table."`
	Show  struct{}      `cmd:"" default:"1" hidden:"" help:"Show the cache's entries, size, hits and the dollars they saved (the default)."`
	Clear struct{}      `cmd:"" help:"Remove every answer and zero the counters; a cache that cannot be opened (damaged, another format version) is deleted."`
	Prune cachePruneCmd `cmd:"" help:"Remove the answers older than --older-than (default --cache-ttl)."`
}

// cachePruneCmd removes old answers.
type cachePruneCmd struct {
	OlderThan *span `name:"older-than" placeholder:"AGE" help:"Remove answers older than this: 30d, 2w, 12h (default --cache-ttl)."`
}

// cacheOptions are the cache's options from the flags.
func (r *runCmd) cacheOptions() cache.Options {
	ttl := time.Duration(r.CacheTTL)
	if ttl == 0 {
		ttl = -1 // --cache-ttl 0: answers never expire
	}
	return cache.Options{TTL: ttl, Now: r.seams.now}
}

// cacheTarget is a cache as the commands find it: the file --cache=PATH
// names, else the cache beside the budget: in its Redis (--store), or
// the default file.
type cacheTarget struct {
	file  string                // the file; "" when the cache is in Redis
	redis redis.UniversalClient // the budget's Redis client, when it is there
	name  string                // the budget's name (--store-name)
	where string                // the cache, for messages
}

// cacheTarget is the cache beside st, the budget, unless --cache names a
// file: the file --cache names, or (when --cache is off too: `gptbatch
// cache` reports on the cache runs would use) the default one.
func (r *runCmd) cacheTarget(st budget.Store) (*cacheTarget, error) {
	if c := budget.RedisClient(st); c != nil && r.Cache.path == "" {
		name := cmp.Or(r.StoreName, "default")
		return &cacheTarget{redis: c, name: name, where: fmt.Sprintf("the cache of budget %s in %s", name, st)}, nil
	}
	path, err := r.cacheFile()
	if err != nil {
		return nil, err
	}
	return &cacheTarget{file: path, where: path}, nil
}

// cacheFile is the file --cache names, ~/ the home directory and a
// relative path in the working directory; else the host's cache,
// $XDG_CACHE_HOME/gptbatch/cache.db, else ~/.cache/gptbatch/cache.db.
func (r *runCmd) cacheFile() (string, error) {
	p := r.Cache.path
	if p == "" {
		return r.seams.xdgPath("XDG_CACHE_HOME", ".cache", filepath.Join("gptbatch", "cache.db"))
	}
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		home, err := r.seams.home()
		if err != nil {
			return "", fmt.Errorf("--cache=%s: %w", p, err)
		}
		return filepath.Join(home, rest), nil
	}
	return r.seams.path(p), nil
}

// exists reports whether the cache has been made: a file may not be yet;
// the cache in Redis always is.
func (t *cacheTarget) exists() (bool, error) {
	if t.file == "" {
		return true, nil
	}
	_, err := os.Stat(t.file)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cache %s: %w", t.file, err)
	}
	return true, nil
}

// open opens the cache, making a file that does not exist. One that
// cannot be used is an error wrapping cache.ErrUnusable that names it and
// says what to do.
func (t *cacheTarget) open(ctx context.Context, o cache.Options) (cache.Store, error) {
	if t.redis != nil {
		return cache.OpenRedis(ctx, t.redis, t.name, o)
	}
	return cache.OpenFile(ctx, t.file, o)
}

// remove deletes a cache that cannot be opened as one.
func (t *cacheTarget) remove(ctx context.Context) error {
	if t.redis != nil {
		_, err := cache.RemoveRedis(ctx, t.redis, t.name)
		return err
	}
	return cache.RemoveFile(t.file)
}

// openRunCache opens the cache of a run beside st, its budget (see
// cacheTarget), or returns nil when --cache is off. warn hears of each
// answer not served because it does not match its key. A dry run only
// looks: a file not made yet is no cache, and is not made. A cache that
// cannot be used is an error naming it and what to do.
func (r *runCmd) openRunCache(ctx context.Context, st budget.Store, warn func(string), dry bool) (cache.Store, error) {
	if !r.Cache.on {
		return nil, nil
	}
	t, err := r.cacheTarget(st)
	if err != nil {
		return nil, err
	}
	if dry {
		if ok, err := t.exists(); !ok || err != nil {
			return nil, err
		}
	}
	o := r.cacheOptions()
	var mismatched atomic.Int64
	o.OnMismatch = func(k cache.Key) {
		if n := mismatched.Add(1); n <= maxMismatchReports {
			warn(fmt.Sprintf("a cached answer in %s does not match its key (edited, damaged or copied from another key): not served; the request is sent and its answer replaces it", t.where))
		}
	}
	return t.open(ctx, o)
}

// maxMismatchReports is how many answers that do not match their keys a
// run warns of.
const maxMismatchReports = 10

// commandCache is the cache `gptbatch cache` works on, and what closes
// what it opened to find it.
func (r *runCmd) commandCache(ctx context.Context) (*cacheTarget, func(), error) {
	var st budget.Store = new(budget.MemStore)
	if r.Cache.path == "" && r.Store != "" {
		var err error
		if st, err = r.openStore(ctx, true, nil); err != nil {
			return nil, nil, usageError(err)
		}
	}
	t, err := r.cacheTarget(st)
	if err != nil {
		st.Close()
		return nil, nil, usageError(err)
	}
	return t, func() { st.Close() }, nil
}

// cacheReport is what `gptbatch cache` says, in JSON.
type cacheReport struct {
	Cache     string  `json:"cache"`
	Exists    bool    `json:"exists"`
	Entries   int64   `json:"entries"`
	Bytes     int64   `json:"bytes"`
	DiskBytes int64   `json:"disk_bytes"`
	Oldest    *string `json:"oldest"`
	Newest    *string `json:"newest"`
	Hits      int64   `json:"hits"`
	SavedUSD  any     `json:"saved_usd"`
	TTL       string  `json:"ttl"`
}

// show writes what the cache holds and has saved. A cache that does not
// exist yet is reported empty, and not made.
func (c *cacheCmd) show(ctx context.Context, r *runCmd, stdout io.Writer) error {
	t, done, err := r.commandCache(ctx)
	if err != nil {
		return err
	}
	defer done()
	path := t.where
	rep := cacheReport{Cache: path, TTL: "none"}
	if r.CacheTTL > 0 {
		rep.TTL = r.CacheTTL.String()
	}
	var st cache.Stats
	if rep.Exists, err = t.exists(); err != nil {
		return usageError(err)
	}
	if rep.Exists {
		f, err := t.open(ctx, r.cacheOptions())
		if err != nil {
			return usageError(err)
		}
		defer f.Close()
		if st, err = f.Stats(ctx); err != nil {
			return err
		}
	}
	rep.Entries, rep.Bytes, rep.DiskBytes, rep.Hits = st.Entries, st.Bytes, st.DiskBytes, st.Hits
	saved := budget.Cost(st.Saved)
	rep.SavedUSD = json.Number(saved.String())
	day := func(t time.Time) *string {
		if t.IsZero() {
			return nil
		}
		s := t.In(time.Local).Format(time.DateOnly)
		return &s
	}
	rep.Oldest, rep.Newest = day(st.Oldest), day(st.Newest)
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if !rep.Exists {
		_, err := fmt.Fprintf(stdout, "no cache at %s yet\n", path)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "cache\t%s\n", path)
	entries := pipeline.Count(st.Entries, "answer", "answers")
	if rep.Oldest != nil {
		entries += fmt.Sprintf(", from %s to %s", *rep.Oldest, *rep.Newest)
	}
	fmt.Fprintf(tw, "entries\t%s\n", entries)
	if t.file != "" {
		fmt.Fprintf(tw, "size\t%s of answers, %s on disk\n", size(st.Bytes), size(st.DiskBytes))
	} else {
		fmt.Fprintf(tw, "size\t%s of answers\n", size(st.Bytes))
	}
	fmt.Fprintf(tw, "hits\t%d\n", st.Hits)
	fmt.Fprintf(tw, "saved\t%s\n", dollars(saved))
	fmt.Fprintf(tw, "ttl\t%s\n", rep.TTL)
	return tw.Flush()
}

// size writes n bytes for people: 512 B, 1.5 KB, 12.3 MB.
func size(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1f KB", float64(n)/1e3)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	default:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	}
}

// clear removes every answer; a cache that cannot be opened as one
// (damaged, another format) is deleted instead.
func (c *cacheCmd) clear(ctx context.Context, r *runCmd, stdout io.Writer) error {
	return r.existingCache(ctx, stdout, "clear", func(t *cacheTarget, path string) error {
		return c.clearIn(ctx, r, stdout, t, path)
	})
}

// clearIn is clear on the cache t, which exists.
func (c *cacheCmd) clearIn(ctx context.Context, r *runCmd, stdout io.Writer, t *cacheTarget, path string) error {
	f, err := t.open(ctx, r.cacheOptions())
	if errors.Is(err, cache.ErrUnusable) {
		if rerr := t.remove(ctx); rerr != nil {
			return usageError(fmt.Errorf("%w; deleting it: %w", err, rerr))
		}
		_, err := fmt.Fprintf(stdout, "deleted %s, which could not be used as a cache: the next run with --cache makes a new one\n", path)
		return err
	}
	if err != nil {
		return usageError(err)
	}
	defer f.Close()
	n, err := f.Clear(ctx)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "removed %s from %s\n", pipeline.Count(n, "answer", "answers"), path)
	return err
}

// prune removes the answers older than --older-than, else --cache-ttl.
func (c *cacheCmd) prune(ctx context.Context, r *runCmd, stdout io.Writer) error {
	older := r.CacheTTL
	if c.Prune.OlderThan != nil {
		older = *c.Prune.OlderThan
	}
	if older <= 0 {
		return usageError(errors.New("cache prune: give --older-than AGE (answers never expire with --cache-ttl 0)"))
	}
	return r.existingCache(ctx, stdout, "prune", func(t *cacheTarget, path string) error {
		f, err := t.open(ctx, r.cacheOptions())
		if err != nil {
			return usageError(err)
		}
		defer f.Close()
		n, err := f.Prune(ctx, r.seams.now().Add(-time.Duration(older)))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "removed %s older than %s from %s\n", pipeline.Count(n, "answer", "answers"), older, path)
		return err
	})
}

// existingCache runs fn on the command's cache when it exists, and says
// there is nothing to verb when it does not.
func (r *runCmd) existingCache(ctx context.Context, stdout io.Writer, verb string, fn func(t *cacheTarget, path string) error) error {
	t, done, err := r.commandCache(ctx)
	if err != nil {
		return err
	}
	defer done()
	if ok, err := t.exists(); err != nil {
		return usageError(err)
	} else if !ok {
		_, err := fmt.Fprintf(stdout, "no cache at %s: nothing to %s\n", t.where, verb)
		return err
	}
	return fn(t, t.where)
}
