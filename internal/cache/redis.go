package cache

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisFormat is the layout of the keys, kept in the counters hash: a
// cache of another format is refused at open. An entry's value is its
// head (appendHead) and its body.
const redisFormat = 1

// scanCount is how many keys a SCAN step asks for, and so how many keys
// Stats, Prune and Clear handle in one round trip.
const scanCount = 1000

// Redis is a Store in Redis, beside a budget kept there, for every host
// naming the same Redis and budget name. An entry is the string
// gptbatch:NAME:cache:KEY (KEY in hex) and expires TTL after it was
// created; the hits, what they saved and the format are the hash
// gptbatch:NAME:cache. The entries have no hash tag: on a Redis Cluster
// each hashes to a slot of its own, so that the cache spreads over the
// nodes instead of filling the budget's one. Safe for concurrent use.
type Redis struct {
	c        redis.UniversalClient
	name     string
	prefix   string // of every entry's key
	counters string
	o        Options
}

// OpenRedis opens the cache of the budget name in c, which the caller
// keeps and closes (Close leaves it open), checking that the cache there
// is of this format: one of another is an error wrapping ErrUnusable. A
// Redis that does not answer is an error.
func OpenRedis(ctx context.Context, c redis.UniversalClient, name string, o Options) (*Redis, error) {
	r := newRedis(c, name, o)
	if err := c.HSetNX(ctx, r.counters, "format", redisFormat).Err(); err != nil {
		return nil, r.fail(err)
	}
	v, err := c.HGet(ctx, r.counters, "format").Int()
	if err != nil {
		return nil, r.fail(err)
	}
	if v != redisFormat {
		return nil, unusablef("%s is format version %d, and this gptbatch reads version %d: clear it with `gptbatch cache clear`", r, v, redisFormat)
	}
	return r, nil
}

// newRedis is the cache of the budget name ("" is "default") in c.
func newRedis(c redis.UniversalClient, name string, o Options) *Redis {
	if name == "" {
		name = "default"
	}
	return &Redis{c: c, name: name, prefix: "gptbatch:" + name + ":cache:", counters: "gptbatch:" + name + ":cache", o: o}
}

// RemoveRedis removes the cache of the budget name in c, whatever its
// format, and its counters: `gptbatch cache clear` for a cache OpenRedis
// refuses. It returns the number of entries removed.
func RemoveRedis(ctx context.Context, c redis.UniversalClient, name string) (int64, error) {
	r := newRedis(c, name, Options{})
	n, err := r.unlink(ctx, nil)
	if err != nil {
		return n, err
	}
	if err := c.Unlink(ctx, r.counters).Err(); err != nil {
		return n, r.fail(err)
	}
	return n, nil
}

// String implements Store.
func (r *Redis) String() string { return "the cache of budget " + r.name + " in Redis" }

func (r *Redis) fail(err error) error { return fmt.Errorf("%s: %w", r, err) }

func (r *Redis) key(k Key) string {
	b := make([]byte, 0, len(r.prefix)+2*len(k))
	b = append(b, r.prefix...)
	return string(hex.AppendEncode(b, k[:]))
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, k Key) (*Entry, error) {
	es, err := r.GetMany(ctx, []Key{k})
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// GetMany implements Store: one pipeline of GETs, which go-redis sends as
// one round trip to each node (a Cluster's keys are on many).
func (r *Redis) GetMany(ctx context.Context, keys []Key) ([]*Entry, error) {
	out := make([]*Entry, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, r.key(k))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, r.fail(err)
	}
	cutoff := r.o.cutoff()
	names := names{}
	for i, cmd := range cmds {
		v, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, r.fail(err)
		}
		e, sum, size, body, ok := readHead(keys[i], v, names.of)
		if !ok || size != uint64(len(body)) {
			r.o.mismatch(keys[i])
			continue
		}
		e.Body = body
		if e.Created.UnixMilli() < cutoff {
			continue
		}
		out[i] = r.o.check(&e, sum)
	}
	return out, nil
}

// Put implements Store: one pipeline of SETs, each expiring TTL after the
// entry was created. An entry already past it is not stored.
func (r *Redis) Put(ctx context.Context, entries ...Entry) error {
	now := r.o.now()
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			e.Created = time.UnixMilli(e.Created.UnixMilli())
			var ttl time.Duration // none
			if r.o.ttl() > 0 {
				if ttl = e.Created.Add(r.o.ttl()).Sub(now); ttl < time.Millisecond {
					continue
				}
			}
			p.Set(ctx, r.key(e.Key), append(appendHead(make([]byte, 0, headSize(&e)+len(e.Body)), &e), e.Body...), ttl)
		}
		return nil
	})
	if err != nil {
		return r.fail(err)
	}
	return nil
}

// RecordHits implements Store.
func (r *Redis) RecordHits(ctx context.Context, n, saved int64) error {
	if n == 0 && saved == 0 {
		return nil
	}
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, r.counters, "hits", n)
		p.HIncrBy(ctx, r.counters, "saved", saved)
		return nil
	})
	if err != nil {
		return r.fail(err)
	}
	return nil
}

// Stats implements Store. It scans the entries, a step of scanCount at a
// time: a report, not something a run asks for.
func (r *Redis) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := r.scan(ctx, func(c redis.Cmdable, keys []string) error {
		heads, err := readHeads(ctx, c, keys)
		if err != nil {
			return err
		}
		for _, h := range heads {
			created, size, ok := headOf(h.Val())
			if !ok {
				continue // expired between the SCAN and now, or not an entry
			}
			s.Entries++
			s.Bytes += size
			if s.Oldest.IsZero() || created.Before(s.Oldest) {
				s.Oldest = created
			}
			if created.After(s.Newest) {
				s.Newest = created
			}
		}
		return nil
	})
	if err != nil {
		return s, r.fail(err)
	}
	vals, err := r.c.HMGet(ctx, r.counters, "hits", "saved").Result()
	if err != nil {
		return s, r.fail(err)
	}
	for i, p := range []*int64{&s.Hits, &s.Saved} {
		if v, ok := vals[i].(string); ok {
			if *p, err = strconv.ParseInt(v, 10, 64); err != nil {
				return s, r.fail(fmt.Errorf("counters: %w", err))
			}
		}
	}
	return s, nil
}

// readHeads reads the heads of the entries at keys, in one round trip.
func readHeads(ctx context.Context, c redis.Cmdable, keys []string) ([]*redis.StringCmd, error) {
	heads := make([]*redis.StringCmd, len(keys))
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			heads[i] = p.GetRange(ctx, k, 0, offRest-1)
		}
		return nil
	})
	return heads, err
}

// headOf reads created and the body's size from the head of an entry's
// value.
func headOf(head string) (created time.Time, size int64, ok bool) {
	if len(head) < offRest || head[0] != entryFormat {
		return time.Time{}, 0, false
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64([]byte(head[offCreated:])))),
		int64(binary.BigEndian.Uint64([]byte(head[offSize:]))), true
}

// Clear implements Store.
func (r *Redis) Clear(ctx context.Context) (int64, error) {
	n, err := r.unlink(ctx, nil)
	if err != nil {
		return n, err
	}
	if err := r.c.HSet(ctx, r.counters, "hits", 0, "saved", 0).Err(); err != nil {
		return n, r.fail(err)
	}
	return n, nil
}

// Prune implements Store.
func (r *Redis) Prune(ctx context.Context, t time.Time) (int64, error) {
	return r.unlink(ctx, func(created time.Time) bool { return created.Before(t) })
}

// unlink removes the entries whose created old says, every one if old is
// nil, and says how many it removed.
func (r *Redis) unlink(ctx context.Context, old func(created time.Time) bool) (int64, error) {
	var n int64
	err := r.scan(ctx, func(c redis.Cmdable, keys []string) error {
		if old != nil {
			heads, err := readHeads(ctx, c, keys)
			if err != nil {
				return err
			}
			var picked []string
			for i, k := range keys {
				if created, _, ok := headOf(heads[i].Val()); ok && old(created) {
					picked = append(picked, k)
				}
			}
			keys = picked
		}
		// One UNLINK a key: on a Cluster the keys of one step are on many
		// slots, which a single UNLINK refuses.
		dels := make([]*redis.IntCmd, len(keys))
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				dels[i] = p.Unlink(ctx, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, d := range dels {
			n += d.Val()
		}
		return nil
	})
	if err != nil {
		return n, r.fail(err)
	}
	return n, nil
}

// scan hands each step of a SCAN over the entries' keys to f, with the
// client of the node they are on: a Cluster's masters are scanned at once,
// f called for one step at a time.
func (r *Redis) scan(ctx context.Context, f func(c redis.Cmdable, keys []string) error) error {
	match := globEscape(r.prefix) + "*"
	var mu sync.Mutex
	one := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, scanCount).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				mu.Lock()
				err := f(c, keys)
				mu.Unlock()
				if err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	switch c := r.c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, one)
	case *redis.Client:
		return one(ctx, c)
	default:
		return fmt.Errorf("cannot scan a %T", r.c)
	}
}

// globEscape escapes the characters a SCAN MATCH pattern gives a meaning.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}

// Close implements Store: the client is the caller's, and stays open.
func (r *Redis) Close() error { return nil }
